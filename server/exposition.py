"""The server's /metrics: every agent's latest values with ward/host labels, and the
requirements from the inventory, so Prometheus can compare measured with required.

Families are built at scrape time from the server's current view; only wards still in
the inventory and agents whose token is still active are served.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from checks import REGISTRY, devices
from server import assets, readiness, shortfalls
from server.store import AgentState
from wardready.inventory import Inventory, Profile
from wardready.metrics import (
    DROPPED_REPORTS,
    OUTCOME_METRICS,
    MetricSpec,
    Sample,
    families,
    outcome_samples,
)

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


class FleetCollector(Collector):
    """Builds the fleet's metric families at scrape time."""

    def __init__(self, inventory: Inventory,
                 agents: Callable[[], dict[tuple[str, str], AgentState]],
                 active: Callable[[], set[tuple[str, str]]],
                 asset_changes: Callable[[], list[tuple[str, str, str, str, int, float]]]
                 = list, readiness_max_age: float = 86400.0) -> None:
        self.inventory = inventory
        self.agents = agents
        self.active = active
        self.asset_changes = asset_changes
        self.readiness_max_age = readiness_max_age

    def collect(self) -> Iterator[Metric]:
        yield from families((WARD_INFO, *(spec for spec, _ in REQUIREMENTS)),
                            self._inventory_samples())
        served = self._served_agents()
        yield from families(AGENT_METRICS, self._agent_samples(served), ("ward", "host"))
        # A PC silent for too long is still listed (AgentSilent) but its old measurements no
        # longer stand for its ward.
        now = time.time()
        fresh = [(key, state) for key, state in served
                 if now - state.last_report_at <= self.readiness_max_age]
        for check in REGISTRY.values():
            yield from families(check.metrics, self._check_samples(fresh, check.name),
                                ("ward", "host"))
        yield from families((shortfalls.DEVICE_BELOW_SPEC,), self._device_samples(fresh),
                            ("ward", "host"))
        yield from families(assets.METRICS, self._asset_samples({key for key, _ in fresh}),
                            ("ward", "host"))
        counted = readiness.counted(dict(fresh), {key for key, _ in fresh}, now,
                                    self.readiness_max_age)
        verdicts = readiness.wards(self.inventory, counted)
        yield from families(readiness.METRICS, (
            ((), s) for s in readiness.samples(self.inventory, counted, verdicts)))

    def _device_samples(self, fresh: list[tuple[tuple[str, str], AgentState]]
                        ) -> Iterator[tuple[tuple[str, ...], Sample]]:
        inv = self.inventory
        for key, state in fresh:
            outcome = state.outcomes.get("devices")
            ward = inv.ward(key[0])
            if ward and outcome and isinstance(outcome.result, devices.Result):
                for sample in shortfalls.device_samples(outcome.result, inv.profile_of(ward),
                                                        inv.end_of_support):
                    yield key, sample

    def _asset_samples(self, served: set[tuple[str, str]]
                       ) -> Iterator[tuple[tuple[str, ...], Sample]]:
        last: dict[tuple[str, str], float] = {}
        for ward, host, kind, change, total, at in self.asset_changes():
            if (ward, host) in served:
                yield (ward, host), Sample(assets.CHANGES, (kind, change), total)
                last[ward, host] = max(at, last.get((ward, host), at))
        for key, at in sorted(last.items()):
            yield key, Sample(assets.LAST_CHANGE, (), at)

    def _inventory_samples(self) -> Iterator[tuple[tuple[str, ...], Sample]]:
        inv = self.inventory
        for ward in inv.wards:
            profile_id = ward.profile or inv.defaults.profile
            yield (), Sample(WARD_INFO, (ward.id, ward.name, ward.kind, ward.former_district,
                                         ward.province, ward.working_group, profile_id), 1)
            profile = inv.profiles[profile_id]
            for spec, value in REQUIREMENTS:
                required = value(profile)
                if required is not None:
                    yield (), Sample(spec, (ward.id,), required)

    def _served_agents(self) -> list[tuple[tuple[str, str], AgentState]]:
        active = self.active()
        return sorted(((key, state) for key, state in self.agents().items()
                       if key in active and self.inventory.ward(key[0]) is not None),
                      key=lambda item: item[0])

    @staticmethod
    def _agent_samples(served: list[tuple[tuple[str, str], AgentState]]
                       ) -> Iterator[tuple[tuple[str, ...], Sample]]:
        for key, state in served:
            yield key, Sample(LAST_REPORT, (), state.last_report_at)
            yield key, Sample(REPORTS, (), state.reports_total)
            yield key, Sample(DROPPED_REPORTS, (), state.dropped_reports_total)
            if state.clock_offset_seconds is not None:
                yield key, Sample(CLOCK_OFFSET, (), state.clock_offset_seconds)
            if state.agent_version is not None:
                yield key, Sample(AGENT_INFO, (state.agent_version,), 1)
            for name, o in sorted(state.outcomes.items()):
                for sample in outcome_samples(name, o.ok, o.duration_seconds, o.started_at):
                    yield key, sample

    @staticmethod
    def _check_samples(served: list[tuple[tuple[str, str], AgentState]], check: str
                       ) -> Iterator[tuple[tuple[str, ...], Sample]]:
        samples = REGISTRY[check].samples
        for key, state in served:
            outcome = state.outcomes.get(check)
            if outcome is not None and outcome.result is not None:
                for sample in samples(outcome.result):
                    yield key, sample
