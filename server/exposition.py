"""The server's /metrics: every agent's latest values with ward/host labels, and the
requirements from the inventory, so Prometheus can compare measured with required.

Only wards still in the inventory and agents whose token is still active are served. Each
agent's lines are rendered once per report (`server.textformat`) and reused by every scrape
until its next report, so a scrape costs about a join of bytes, not formatting every sample
of the fleet again; a shard's joined body is kept likewise (`server.scrape_body`) until one
of its agents changes. Shards: `server.sharding`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence

from wardready.checks import REGISTRY, devices
from wardready.core.inventory import Inventory
from wardready.core.metrics import AGENT_LABELS, MetricSpec, Sample
from wardready.model.readiness import HostResults
from wardready.model.report import Outcome
from wardready.server import assets, readiness, shortfalls
from wardready.server.catalogue import (
    AGENT_METRICS,
    REQUIREMENTS,
    WARD_INFO,
    agent_samples,
    ward_samples,
)
from wardready.server.scrape_body import Body
from wardready.server.sharding import WHOLE, Shard, shard_of
from wardready.server.store import AgentState
from wardready.server.textformat import Lines, header, render_samples

AgentKey = tuple[str, str]
AssetRow = tuple[str, str, str, str, int, float]


def outcome_measurements(inventory: Inventory, key: AgentKey, outcome: Outcome
                         ) -> Iterator[Sample]:
    """What one outcome measured: its check's samples, and for the devices check, the
    devices below the ward's profile."""
    check = REGISTRY.get(outcome.check)
    if check is None or outcome.result is None:
        return
    yield from check.samples(outcome.result)
    ward = inventory.ward(key[0])
    if ward and isinstance(outcome.result, devices.Result):
        yield from shortfalls.device_samples(outcome.result, inventory.profile_of(ward),
                                             inventory.end_of_support)


class FleetExposition:
    """Renders the fleet's /metrics, whole or one shard of it."""

    def __init__(self, inventory: Inventory,
                 agents: Callable[[], dict[AgentKey, AgentState]],
                 active: Callable[[], set[AgentKey]],
                 asset_changes: Callable[[], list[AssetRow]] = list,
                 readiness_max_age: float = 86400.0,
                 components: Sequence[tuple[Sequence[MetricSpec],
                                            Callable[[], Iterable[Sample]]]] = (),
                 measurements: bool = True) -> None:
        self.inventory = inventory
        self.agents = agents
        self.active = active
        self.asset_changes = asset_changes
        self.readiness_max_age = readiness_max_age
        self.components = components
        self.measurements = measurements
        """Serve what the agents measured; False when it goes by remote write."""
        """The server's own metrics (speed-test slots, UDP echo), served with shard 0."""
        self._check_specs = [spec for check in REGISTRY.values()
                             for spec in (*check.metrics, *check.totals)]
        self._measured_specs = (*self._check_specs, shortfalls.DEVICE_BELOW_SPEC)
        self._wards = {ward.id: render_samples(((), s) for s in ward_samples(inventory, ward))
                       for ward in inventory.wards}
        self._shard_wards: dict[Shard, list[str]] = {}
        self._agent_lines: dict[AgentKey, tuple[int, float, Lines, Lines]] = {}
        """Per agent: (reports_total, last_report_at) it was rendered at, its own lines
        (AGENT_METRICS), its measurements' lines (checks, devices)."""
        self._verdicts: dict[str, tuple[tuple[tuple[str, int, float], ...], Lines]] = {}
        """Per ward: the (host, reports_total, last_report_at) of the PCs counted when its
        readiness was last worked out, and its readiness lines."""
        self._assets: tuple[object, dict[AgentKey, tuple[AssetRow, ...]]] = (None, {})
        """The asset change counts last read (`asset_changes()`), by agent."""
        self._asset_lines: dict[AgentKey, tuple[tuple[AssetRow, ...], Lines]] = {}
        self._bodies: dict[Shard, Body] = {}
        """The bodies of the shards of the split last scraped (whole, or n ways)."""
        self.renders = 0
        """Agents rendered so far: a scrape renders only those that reported since the last."""
        self.joins = 0
        """Shard bodies put together so far: a scrape of a shard none of whose agents changed
        reuses the last."""
        self.compressions = 0
        """Shard bodies gzip-compressed so far, likewise."""

    def render(self, now: float, shard: Shard = WHOLE) -> bytes:
        """The exposition text of `shard` as of `now`."""
        body = self.body(now, shard)
        return body.text(self._own_lines(shard))

    async def render_gzip(self, now: float, shard: Shard = WHOLE) -> bytes:
        """`render` as a gzip stream; the compression runs in a worker thread, once per
        change of the shard."""
        body = self.body(now, shard)
        if not body.gzip_ready():
            await asyncio.get_running_loop().run_in_executor(None, body.compress)
            self.compressions += 1
        return body.gzipped(self._own_lines(shard))

    def body(self, now: float, shard: Shard = WHOLE) -> Body:
        """The shard's fleet part as of `now`: the last one if nothing it shows changed."""
        wards = self._wards_of(shard)
        served = self._served_agents(set(wards))
        assets_by_agent = self._assets_by_agent()
        fresh = [(key, state) for key, state in served
                 if now - state.last_report_at <= self.readiness_max_age]
        fresh_keys = {key for key, _ in fresh}
        stamp = (tuple((key, state.reports_total, state.last_report_at, key in fresh_keys)
                       for key, state in served),
                 tuple(assets_by_agent.get(key, ()) for key, _ in fresh))
        if any(count != shard[1] for _, count in self._bodies):
            self._bodies.clear()  # another split now: the old one's bodies go
        cached = self._bodies.get(shard)
        if cached is not None and cached.stamp == stamp:
            return cached
        self.joins += 1
        blocks = [self._lines_of(key, state) for key, state in served]
        fresh_blocks = [block[3] for (key, _), block in zip(served, blocks, strict=True)
                        if key in fresh_keys]
        out: list[str] = []
        for spec in (WARD_INFO, *(r.spec for r in REQUIREMENTS)):
            out.append(header(spec))
            out.extend(self._wards[w].get(spec.name, "") for w in wards)
        for spec in AGENT_METRICS:
            out.append(header(spec))
            out.extend(block[2].get(spec.name, "") for block in blocks)
        for spec in self._measured_specs:
            out.append(header(spec))
            out.extend(block.get(spec.name, "") for block in fresh_blocks)
        asset_blocks = [self._asset_lines_of(key, assets_by_agent.get(key, ()))
                        for key, _ in fresh]
        for spec in assets.METRICS:
            out.append(header(spec))
            out.extend(block.get(spec.name, "") for block in asset_blocks)
        by_ward: dict[str, list[tuple[AgentKey, AgentState]]] = {}
        for key, state in fresh:
            by_ward.setdefault(key[0], []).append((key, state))
        verdicts = [self._verdict_lines(w, by_ward.get(w, [])) for w in wards]
        for spec in readiness.METRICS:
            out.append(header(spec))
            out.extend(lines.get(spec.name, "") for lines in verdicts)
        body = self._bodies[shard] = Body(stamp, "".join(out).encode())
        return body

    def out_of_date(self) -> list[tuple[AgentKey, AgentState]]:
        """The served agents whose lines are out of date (they reported since they were
        rendered), for `render_agents` ahead of the scrape that would otherwise."""
        active = self.active()
        stale = []
        for key, state in list(self.agents().items()):
            if key[0] in self._wards and key in active:
                cached = self._agent_lines.get(key)
                if cached is None or cached[:2] != (state.reports_total, state.last_report_at):
                    stale.append((key, state))
        return stale

    def render_agents(self, agents: Iterable[tuple[AgentKey, AgentState]]) -> None:
        for key, state in agents:
            self._lines_of(key, state)

    def _own_lines(self, shard: Shard) -> bytes:
        if shard[0] != 0:
            return b""
        out: list[str] = []
        for specs, samples in self.components:
            own = render_samples(((), s) for s in samples())
            out.extend(header(spec) + own.get(spec.name, "") for spec in specs)
        return "".join(out).encode()

    def _wards_of(self, shard: Shard) -> list[str]:
        wards = self._shard_wards.get(shard)
        if wards is None:
            index, count = shard
            wards = self._shard_wards[shard] = [
                w for w in self._wards if count == 1 or shard_of(w, count) == index]
        return wards

    def _assets_by_agent(self) -> dict[AgentKey, tuple[AssetRow, ...]]:
        rows = self.asset_changes()
        if self._assets[0] is not rows:
            grouped: dict[AgentKey, list[AssetRow]] = {}
            for row in rows:
                grouped.setdefault((row[0], row[1]), []).append(row)
            self._assets = (rows, {key: tuple(found) for key, found in grouped.items()})
        return self._assets[1]

    def _asset_lines_of(self, key: AgentKey, rows: tuple[AssetRow, ...]) -> Lines:
        if not rows:
            return {}
        cached = self._asset_lines.get(key)
        if cached is None or cached[0] != rows:
            cached = self._asset_lines[key] = (
                rows, render_samples(self._asset_samples(rows), AGENT_LABELS))
        return cached[1]

    def _verdict_lines(self, ward: str, hosts: list[tuple[AgentKey, AgentState]]) -> Lines:
        """The ward's readiness lines, worked out again only when one of its counted PCs
        reported or stopped counting."""
        stamp = tuple((key[1], state.reports_total, state.last_report_at)
                      for key, state in hosts)
        cached = self._verdicts.get(ward)
        if cached is None or cached[0] != stamp:
            counted = {ward: {key[1]: HostResults.of(state.role, state.outcomes)
                              for key, state in hosts}} if hosts else {}
            verdicts = readiness.wards(self.inventory, counted, [ward])
            cached = self._verdicts[ward] = (stamp, render_samples(
                ((), s) for s in readiness.samples(self.inventory, counted, verdicts)))
        return cached[1]

    def _lines_of(self, key: AgentKey, state: AgentState) -> tuple[int, float, Lines, Lines]:
        cached = self._agent_lines.get(key)
        if cached is None or cached[:2] != (state.reports_total, state.last_report_at):
            self.renders += 1
            cached = self._agent_lines[key] = (
                state.reports_total, state.last_report_at,
                render_samples(((key, s) for s in agent_samples(state)), AGENT_LABELS),
                render_samples(self._measured_samples(key, state), AGENT_LABELS))
        return cached

    def _measured_samples(self, key: AgentKey, state: AgentState
                          ) -> Iterator[tuple[tuple[str, ...], Sample]]:
        if not self.measurements:
            return
        for outcome in state.outcomes.values():
            for sample in outcome_measurements(self.inventory, key, outcome):
                yield key, sample
        for totals in state.totals.values():  # continuous checks' running totals
            for sample in totals.samples():
                yield key, sample

    @staticmethod
    def _asset_samples(rows: tuple[AssetRow, ...]
                       ) -> Iterator[tuple[tuple[str, ...], Sample]]:
        """One agent's asset change counts, and when its assets last changed."""
        for ward, host, kind, change, total, _ in rows:
            yield (ward, host), Sample(assets.CHANGES, (kind, change), total)
        ward, host = rows[0][:2]
        yield (ward, host), Sample(assets.LAST_CHANGE, (), max(row[5] for row in rows))

    def _served_agents(self, wards: set[str]) -> list[tuple[AgentKey, AgentState]]:
        active = self.active()
        return sorted(((key, state) for key, state in self.agents().items()
                       if key in active and key[0] in wards), key=lambda item: item[0])
