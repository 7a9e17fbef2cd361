"""Each ward's readiness on the server: its PCs' latest results rolled up into one verdict
per ward and per criterion (`wardready.model.readiness.rollup`; rules in docs/readiness.md), for
/metrics, `GET /api/v1/readiness` and `wardready-server readiness`.

Only PCs whose token is active and that reported within the configured age count: a PC
switched off for good must not keep its ward ready on old evidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping

from wardready.core.inventory import Inventory
from wardready.core.metrics import MetricSpec, Sample
from wardready.model import segments
from wardready.model.readiness import STATE_VALUE, VERDICT_VALUE, HostResults, WardReadiness, rollup
from wardready.server.store import AgentState

_CODES = "0 ready, 1 ready with warnings, 2 not ready, -1 unknown"
WARD_STATE = MetricSpec("wardready_ward_readiness",
                        f"The ward's video-conferencing readiness: {_CODES}.", ("ward",))
CRITERION = MetricSpec("wardready_ward_criterion_verdict",
                       "The ward's verdict on one criterion: 0 pass, 1 warn, 2 fail, -1 unknown.",
                       ("ward", "criterion"))
HOST_STATE = MetricSpec("wardready_host_readiness",
                        f"One PC's own readiness for its role: {_CODES}.", ("ward", "host"))
ROLE = MetricSpec("wardready_host_role_info", "What the PC is for, from its agent's config "
                  "(role \"\" when not set).", ("ward", "host", "role"))
HOLDS_CALLS = MetricSpec("wardready_host_holds_calls",
                         "1 if the ward's profile counts this PC for its video calls (by role).",
                         ("ward", "host"))
SEGMENT_FAULTS = MetricSpec(
    "wardready_ward_segment_faults",
    "Findings that a segment of the ward's path (pc, lan, router, uplink) is at fault, by "
    "reason; 0 when none (docs/segments.md). CRC errors of the ward's ports are counted by the "
    "rules from the devices' own counters.", ("ward", "segment", "reason"))
METRICS = (WARD_STATE, CRITERION, HOST_STATE, ROLE, HOLDS_CALLS, SEGMENT_FAULTS)
COUNTED_BY_RULES = frozenset({"port-errors"})
"""Reasons the rules find themselves, from counters over a window (`increase()`), which the
server's latest results cannot give."""


def counted(agents: Mapping[tuple[str, str], AgentState], active: set[tuple[str, str]],
            now: float, max_age: float) -> dict[str, dict[str, HostResults]]:
    """The PCs that count, by ward and host, with their latest results."""
    wards: dict[str, dict[str, HostResults]] = defaultdict(dict)
    for (ward, host), state in agents.items():
        if (ward, host) in active and now - state.last_report_at <= max_age:
            wards[ward][host] = HostResults.of(state.role, state.outcomes)
    return wards


def wards(inventory: Inventory, hosts: Mapping[str, Mapping[str, HostResults]],
          only: Iterable[str] | None = None) -> dict[str, WardReadiness]:
    """Every inventory ward's verdict, or those of the wards `only` names (a ward with no
    PC counted is unknown)."""
    verdicts = {}
    for ward in inventory.wards if only is None else (inventory.ward(w) for w in only):
        if ward is None:
            continue
        profile = inventory.profile_of(ward)
        verdicts[ward.id] = rollup(profile, hosts.get(ward.id, {}), inventory.call_of(profile))
    return verdicts


def segment_findings(inventory: Inventory, ward_id: str, pcs: Mapping[str, HostResults],
                     crc_per_day: Mapping[tuple[str, str], float] | None = None
                     ) -> list[segments.Finding]:
    """The segments at fault in a ward, from its counted PCs' latest results (and its ports'
    CRC errors over 24 h, when the caller has their history)."""
    ward = inventory.ward(ward_id)
    if ward is None:
        return []
    profile = inventory.profile_of(ward)
    return segments.ward_findings(profile, {h: (pc.role, pc.results) for h, pc in pcs.items()},
                                  inventory.call_of(profile), crc_per_day)


def samples(inventory: Inventory, hosts: Mapping[str, Mapping[str, HostResults]],
            verdicts: Mapping[str, WardReadiness]) -> Iterator[Sample]:
    for ward_id, pcs in sorted(hosts.items()):
        known = inventory.ward(ward_id)
        if known is None:
            continue
        video = inventory.profile_of(known).video
        for host, pc in sorted(pcs.items()):
            yield Sample(ROLE, (ward_id, host, pc.role or ""), 1)
            yield Sample(HOLDS_CALLS, (ward_id, host), 1 if video.holds_calls(pc.role) else 0)
    for ward, verdict in sorted(verdicts.items()):
        yield Sample(WARD_STATE, (ward,), STATE_VALUE[verdict.state])
        for c in verdict.criteria:
            yield Sample(CRITERION, (ward, c.id), VERDICT_VALUE[c.verdict])
        for host, own in sorted(verdict.hosts.items()):
            yield Sample(HOST_STATE, (ward, host), STATE_VALUE[own.state])
        if hosts.get(ward):
            found = segment_findings(inventory, ward, hosts[ward])
            for segment, reason, n in segments.counts(found):
                if reason not in COUNTED_BY_RULES:
                    yield Sample(SEGMENT_FAULTS, (ward, segment, reason), n)
