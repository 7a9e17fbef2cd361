"""What the server's handlers share, as typed application keys."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping

from aiohttp import web

from wardready.core.inventory import Inventory
from wardready.core.serial import SerialThread
from wardready.model.criteria import LINK_BY_ID, LINK_CHECKS, LinkId
from wardready.model.report import Outcome, Report
from wardready.server import shortfalls
from wardready.server.config import ServerConfig
from wardready.server.exposition import FleetExposition
from wardready.server.store import AgentState, Store, TokenReader
from wardready.server.writer import ReportWriter


class Fleet:
    """The server's in-memory view of every agent, rebuilt from the store at start."""

    def __init__(self, agents: dict[tuple[str, str], AgentState],
                 active: set[tuple[str, str]], max_age: float = 86400.0,
                 ward_link: Mapping[str, Mapping[str, float | None]] | None = None) -> None:
        self.agents = agents
        self.active = active
        self.max_age = max_age
        """PCs silent for longer count for nothing (ServerConfig.readiness_max_age_seconds)."""
        self.asset_changes: list[tuple[str, str, str, str, int, float]] = []
        """Asset change counts per agent, as `Store.asset_change_counts` last read them."""
        self.hosts: dict[str, set[str]] = defaultdict(set)
        for ward, host in agents:
            self.hosts[ward].add(host)
        self._check_figures: dict[tuple[str, str, str], tuple[Outcome, dict[LinkId,
                                                                          float]]] = {}
        """Each PC's figures per link check, for the outcome they came from, worked out when
        a PC of its ward next reports a link check (not at start): a report is judged by
        working out only the checks it brings."""
        self._host_figures: dict[tuple[str, str], dict[LinkId, float]] = {}
        """Each PC's figures as `shortfalls.host_figures` combines them, until it reports
        again: a report is compared with the other PCs of its ward without combining theirs
        anew."""
        self.ward_link: dict[str, dict[str, float | None]] = {
            w: dict(f) for w, f in (ward_link or {}).items()}
        """Each ward's best link figures as last recorded (`Store.ward_link_points`)."""
        self.applied = 0
        """Reports applied since start."""
        self._ward_locks: dict[str, asyncio.Lock] = {}

    def ward_lock(self, ward: str) -> asyncio.Lock:
        """Held from working out a report's change to the ward's best link until the fleet
        has applied it: two PCs of a ward reporting at once would each be compared with a
        ward that lacks the other, and the later write would undo the better figure. One per
        ward with a token (the report's ward is the token's)."""
        lock = self._ward_locks.get(ward)
        if lock is None:
            lock = self._ward_locks[ward] = asyncio.Lock()
        return lock

    def ward_link_change(self, report: Report, now: float) -> dict[str, float | None]:
        """The ward's best link figures that `report` changes (None: no PC has it now)."""
        if not any(o.check in LINK_CHECKS for o in report.outcomes):
            return {}
        ward, key = report.ward, (report.ward, report.host)
        state = self.agents.get(key, AgentState())
        mine = shortfalls.host_figures(state.newer_outcomes(report),
                                       lambda check, outcome: self._of_check(key, check, outcome))
        others = (self._figures_of((ward, h)) for h in self.hosts[ward]
                  if (ward, h) != key and (ward, h) in self.active
                  and now - self.agents[ward, h].last_report_at <= self.max_age)
        best = shortfalls.ward_figures([mine, *others])
        last = self.ward_link.get(ward, {})
        return {c: best.get(c) for c in LINK_BY_ID
                if best.get(c) != last.get(c) and (c in best or last.get(c) is not None)}

    def apply(self, report: Report, received_at: float,
              ward_link: Mapping[str, float | None]) -> None:
        """Account for a report the store has just committed."""
        self.applied += 1
        key = (report.ward, report.host)
        state = self.agents.setdefault(key, AgentState())
        state.apply(report, received_at)
        self._host_figures.pop(key, None)
        self.active.add(key)
        self.hosts[report.ward].add(report.host)
        self.ward_link.setdefault(report.ward, {}).update(ward_link)

    def _figures_of(self, key: tuple[str, str]) -> dict[LinkId, float]:
        figures = self._host_figures.get(key)
        if figures is None:
            figures = self._host_figures[key] = shortfalls.host_figures(
                self.agents[key].outcomes, lambda check, o: self._of_check(key, check, o))
        return figures

    def _of_check(self, key: tuple[str, str], check: str, outcome: Outcome
                  ) -> dict[LinkId, float]:
        cached = self._check_figures.get((*key, check))
        if cached is not None and cached[0] is outcome:
            return cached[1]
        assert outcome.result is not None
        figures = shortfalls.check_figures(check, outcome.result)
        self._check_figures[(*key, check)] = (outcome, figures)
        return figures


CONFIG = web.AppKey("config", ServerConfig)
INVENTORY = web.AppKey("inventory", Inventory)
STORE = web.AppKey("store", Store)
IO = web.AppKey("io", SerialThread)
"""The one thread every Store call runs on."""
TOKENS = web.AppKey("tokens", TokenReader)
"""Bearer tokens, looked up on the event loop's thread."""
FLEET = web.AppKey("fleet", Fleet)
WRITER = web.AppKey("writer", ReportWriter)
"""Stores reports, committing those that arrive together in one transaction."""
EXPOSITION = web.AppKey("exposition", FleetExposition)
