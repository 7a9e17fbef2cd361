"""The fleet's own metric catalogue: each ward and the requirements its inventory profile
sets (so Prometheus can compare measured with required), and what the server knows of each
agent. The checks' metrics are theirs (`CheckSpec.metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from wardready.core.inventory import Inventory, Profile, Ward
from wardready.core.metrics import (
    DROPPED_REPORTS,
    OUTCOME_METRICS,
    MetricSpec,
    Sample,
    outcome_samples,
)
from wardready.server.store import AgentState

WARD_INFO = MetricSpec(
    "wardready_ward_info", "A ward, commune or special zone in the inventory.",
    ("ward", "name", "kind", "former_district", "province", "working_group", "profile"))

def _required(name: str, help: str) -> MetricSpec:
    return MetricSpec(name, help + " (inventory profile)", ("ward",))


REQUIREMENTS: tuple[tuple[MetricSpec, Callable[[Profile], float | None]], ...] = (
    (_required("wardready_requirement_download_bytes_per_second",
                "Required download throughput of the ward's link."),
     lambda p: p.link.min_download_mbps * 1e6 / 8),
    (_required("wardready_requirement_upload_bytes_per_second",
                "Required upload throughput of the ward's link."),
     lambda p: p.link.min_upload_mbps * 1e6 / 8),
    (_required("wardready_requirement_rtt_seconds", "Highest acceptable round-trip time."),
     lambda p: p.link.max_rtt_ms / 1e3),
    (_required("wardready_requirement_jitter_seconds", "Highest acceptable jitter."),
     lambda p: p.link.max_jitter_ms / 1e3),
    (_required("wardready_requirement_loss_ratio", "Highest acceptable packet loss (0-1)."),
     lambda p: p.link.max_loss_percent / 100),
    (_required("wardready_requirement_hosts", "Working PCs the ward needs."),
     lambda p: p.hosts.min_count),
    (_required("wardready_requirement_host_cpu_cores", "CPU cores each PC needs."),
     lambda p: p.hosts.min_cpu_cores),
    (_required("wardready_requirement_host_memory_bytes", "Memory each PC needs."),
     lambda p: p.hosts.min_memory_gib * 2**30),
    (_required("wardready_requirement_host_disk_free_bytes", "Free disk space each PC needs."),
     lambda p: p.hosts.min_disk_free_gib * 2**30),
    (_required("wardready_requirement_cameras", "Conference cameras the ward needs."),
     lambda p: p.video.cameras),
    (_required("wardready_requirement_microphones", "Conference microphones the ward needs."),
     lambda p: p.video.microphones),
    (_required("wardready_requirement_speakers", "Conference speakers the ward needs."),
     lambda p: p.video.speakers),
    (_required("wardready_requirement_printers", "Printers the ward needs."),
     lambda p: p.peripherals.printers),
    (_required("wardready_requirement_scanners", "Scanners the ward needs."),
     lambda p: p.peripherals.scanners),
    (_required("wardready_requirement_ups", "UPS units the ward needs."),
     lambda p: p.peripherals.ups),
    (_required("wardready_requirement_port_speed_bytes_per_second",
               "Speed every connected Ethernet port of the ward's routers and switches needs."),
     lambda p: p.network.min_port_speed_mbps * 1e6 / 8
     if p.network and p.network.min_port_speed_mbps else None),
)

LAST_REPORT = MetricSpec("wardready_agent_last_report_timestamp_seconds",
                         "When the server last received a report from this agent.")
REPORTS = MetricSpec("wardready_agent_reports_total", "Reports received from this agent.",
                     kind="counter")
CLOCK_OFFSET = MetricSpec("wardready_agent_clock_offset_seconds",
                          "Agent clock minus server clock, from the latest fresh report.")
AGENT_INFO = MetricSpec("wardready_agent_info", "The agent's version, from its latest report.",
                        ("version",))
AGENT_METRICS = (LAST_REPORT, REPORTS, DROPPED_REPORTS, CLOCK_OFFSET, AGENT_INFO,
                 *OUTCOME_METRICS)


def ward_samples(inventory: Inventory, ward: Ward) -> list[Sample]:
    """The ward's info and the requirements of its profile (those it sets)."""
    profile_id = ward.profile or inventory.defaults.profile
    profile = inventory.profiles[profile_id]
    samples = [Sample(WARD_INFO, (ward.id, ward.name, ward.kind, ward.former_district,
                                  ward.province, ward.working_group, profile_id), 1)]
    for spec, value in REQUIREMENTS:
        required = value(profile)
        if required is not None:
            samples.append(Sample(spec, (ward.id,), required))
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
