"""The fleet's own metric catalogue: each ward and the requirements its inventory profile
sets (so Prometheus can compare measured with required; the requirements are the criteria
table's), and what the server knows of each agent. The checks' metrics are theirs
(`CheckSpec.metrics`)."""

from __future__ import annotations

from collections.abc import Iterator

from wardready.core.inventory import Inventory, Ward
from wardready.core.metrics import (
    AGENT_INFO,
    CLOCK_OFFSET,
    DROPPED_REPORTS,
    OUTCOME_METRICS,
    MetricSpec,
    Sample,
    outcome_samples,
)
from wardready.model.criteria import REQUIREMENTS
from wardready.server.store import AgentState

WARD_INFO = MetricSpec(
    "wardready_ward_info", "A ward, commune or special zone in the inventory.",
    ("ward", "name", "kind", "former_district", "former_province", "working_group", "profile"))

LAST_REPORT = MetricSpec("wardready_agent_last_report_timestamp_seconds",
                         "When the server last received a report from this agent.")
REPORTS = MetricSpec("wardready_agent_reports_total", "Reports received from this agent.",
                     kind="counter")
AGENT_METRICS = (LAST_REPORT, REPORTS, DROPPED_REPORTS, CLOCK_OFFSET, AGENT_INFO,
                 *OUTCOME_METRICS)


def ward_samples(inventory: Inventory, ward: Ward) -> list[Sample]:
    """The ward's info and the requirements of its profile (those it sets)."""
    profile_id = ward.profile or inventory.defaults.profile
    profile = inventory.profiles[profile_id]
    samples = [Sample(WARD_INFO, (ward.id, ward.name, ward.kind, ward.former_district,
                                  ward.former_province, ward.working_group, profile_id), 1)]
    call = inventory.call_of(profile)
    for requirement in REQUIREMENTS:
        required = requirement.value(profile, call)
        if required is not None:
            samples.append(Sample(requirement.spec, (ward.id,), required))
    return samples


def agent_samples(state: AgentState) -> Iterator[Sample]:
    """One agent's AGENT_METRICS (without its ward and host labels)."""
    yield Sample(LAST_REPORT, (), state.last_report_at)
    yield Sample(REPORTS, (), state.reports_total)
    yield Sample(DROPPED_REPORTS, (), state.dropped_reports_total)
    if state.clock_offset_seconds is not None:
        yield Sample(CLOCK_OFFSET, (), state.clock_offset_seconds)
    if state.agent_version is not None:
        yield Sample(AGENT_INFO, (state.agent_version,), 1)
    for name, o in sorted(state.outcomes.items()):
        yield from outcome_samples(name, o.ok, o.duration_seconds, o.started_at)
