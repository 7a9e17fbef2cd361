"""Reports as received, and each agent's state: its counters and every check's latest
outcome."""

from __future__ import annotations

import gc
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wardready.checks import REGISTRY
from wardready.core.metrics import Totals
from wardready.model.report import CLOCK_AHEAD_SECONDS, Outcome, Report
from wardready.server import assets
from wardready.server.store.asset_history import record_assets
from wardready.server.store.port_errors import record_port_errors
from wardready.server.store.ward_link import record_ward_link

FRESH_SECONDS = 30.0
log = logging.getLogger(__name__)


@dataclass
class AgentState:
    """What the server knows of one agent: its counters and each check's latest outcome."""

    last_report_at: float = 0.0
    reports_total: int = 0
    dropped_reports_total: int = 0
    clock_offset_seconds: float | None = None
    role: str | None = None
    """The PC's role, as its latest report gave it."""
    agent_version: str | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    totals: dict[str, Totals] = field(default_factory=dict)
    """Per continuous check (`CheckSpec.counts`), its runs' counts added up over every report
    stored since the server started. In memory only: a restart resets them, which
    Prometheus's `rate()` and `increase()` take as a counter reset."""

    def newer_outcomes(self, report: Report) -> dict[str, Outcome]:
        """Each check's latest outcome once `report` is applied (a late replay of an older
        run does not replace a newer one)."""
        outcomes = dict(self.outcomes)
        for outcome in report.outcomes:
            current = outcomes.get(outcome.check)
            if current is None or outcome.started_at >= current.started_at:
                outcomes[outcome.check] = outcome
        return outcomes

    def apply(self, report: Report, received_at: float) -> None:
        """Account for a newly stored report, as `Store.add_report` does on disk."""
        self.reports_total += 1
        self.role = report.role
        self.agent_version = report.agent_version
        self.last_report_at = max(self.last_report_at, received_at)
        self.dropped_reports_total = max(self.dropped_reports_total,
                                         report.dropped_reports_total)
        if received_at - report.generated_at < FRESH_SECONDS:
            # Only a report sent as soon as it was made tells how far the agent's clock is off.
            self.clock_offset_seconds = report.generated_at - received_at
        self.outcomes = self.newer_outcomes(report)
        for outcome in report.outcomes:
            spec = REGISTRY.get(outcome.check)
            if spec is not None and spec.counts is not None and outcome.result is not None:
                self.totals.setdefault(outcome.check, Totals()).add(spec.counts(outcome.result))


class ReportStore:
    """The `Store`'s reports and agent states."""

    db: sqlite3.Connection

    def add_report(self, report: Report, received_at: float,
                   ward_link: Mapping[str, float | None] | None = None) -> bool:
        """Commit a report (and the agent's latest state) durably; False if its id was stored.

        `ward_link`: the ward's best link figures as they changed with this report (None for a
        figure no PC has any more), kept for the window the shortfall rules judge over.
        """
        return self.add_reports([(report, received_at, ward_link or {})])[0]

    def add_reports(self, batch: Sequence[tuple[Report, float, Mapping[str, float | None]]]
                    ) -> list[bool]:
        """Commit several reports in one transaction (one fsync: group commit); for each,
        False if its id was already stored. All or none are stored."""
        with self.db:  # one transaction, committed before the callers reply
            self.db.execute("BEGIN IMMEDIATE")
            return [self._insert_report(*item) for item in batch]

    def _insert_report(self, report: Report, received_at: float,
                       ward_link: Mapping[str, float | None]) -> bool:
        ward, host = report.ward, report.host
        cur = self.db.execute(
            "INSERT OR IGNORE INTO reports (id, ward, host, generated_at, received_at, body)"
            " VALUES (?,?,?,?,?,?)",
            (str(report.id), ward, host, report.generated_at, received_at,
             report.model_dump_json()))
        if cur.rowcount == 0:
            return False
        record_ward_link(self.db, ward, received_at, ward_link)
        for outcome in report.outcomes:
            cur = self.db.execute(
                "INSERT INTO latest (ward, host, check_name, started_at, outcome)"
                " VALUES (?,?,?,?,?) ON CONFLICT (ward, host, check_name) DO UPDATE"
                " SET started_at = excluded.started_at, outcome = excluded.outcome"
                " WHERE excluded.started_at >= latest.started_at",
                (ward, host, outcome.check, outcome.started_at, outcome.model_dump_json()))
            record_port_errors(self.db, ward, outcome)  # late ones too: history is by time
            found = assets.items_of(outcome)
            if found is not None and cur.rowcount == 1:
                # Only the newest count is compared: a late replay is history already.
                record_assets(self.db, ward, host, outcome.check, outcome.started_at, found)
        state = AgentState()
        state.apply(report, received_at)
        self.db.execute(
            "INSERT INTO agents (ward, host, last_report_at, reports_total,"
            " dropped_reports_total, clock_offset_seconds, role, agent_version)"
            " VALUES (?,?,?,1,?,?,?,?)"
            " ON CONFLICT (ward, host) DO UPDATE SET reports_total = reports_total + 1,"
            " last_report_at = max(last_report_at, excluded.last_report_at),"
            " dropped_reports_total = max(dropped_reports_total,"
            " excluded.dropped_reports_total),"
            " clock_offset_seconds = coalesce(excluded.clock_offset_seconds,"
            " clock_offset_seconds), role = excluded.role,"
            " agent_version = excluded.agent_version",
            (ward, host, received_at, state.dropped_reports_total,
             state.clock_offset_seconds, report.role, report.agent_version))
        return True

    def forget_future(self, now: float) -> int:
        """Drop what a server that did not yet bound agents' clocks stored dated beyond
        `CLOCK_AHEAD_SECONDS` from `now`: such a latest result would hide every newer one
        until its date, and such a date cannot be shown. Returns the rows dropped."""
        horizon = now + CLOCK_AHEAD_SECONDS
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            dropped = self.db.execute("DELETE FROM latest WHERE started_at > ?",
                                      (horizon,)).rowcount
            dropped += self.db.execute("DELETE FROM asset_changes WHERE at > ?",
                                       (horizon,)).rowcount
            dropped += self.db.execute("DELETE FROM asset_change_counts WHERE last_at > ?",
                                       (horizon,)).rowcount
            dropped += self.db.execute(
                "DELETE FROM assets WHERE max(first_seen, changed_at, last_seen,"
                " coalesce(removed_at, 0)) > ?", (horizon,)).rowcount
        return dropped

    def report_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM reports").fetchone()[0])

    def agent_states(self) -> dict[tuple[str, str], AgentState]:
        """Every agent's counters and latest outcomes, to rebuild the server's view at start."""
        states = {
            (w, h): AgentState(last, total, dropped, offset, role, version)
            for w, h, last, total, dropped, offset, role, version in self.db.execute(
                "SELECT ward, host, last_report_at, reports_total, dropped_reports_total,"
                " clock_offset_seconds, role, agent_version FROM agents")
        }
        # Tens of thousands of freshly built models would make the cyclic collector rescan
        # them all, again and again, while nothing here is garbage; once loaded they live
        # long, so they are frozen out of its scans (they are still freed when replaced).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for ward, host, check, outcome in self.db.execute(
                    "SELECT ward, host, check_name, outcome FROM latest"):
                state = states.get((ward, host))
                if state is None:
                    continue
                try:
                    state.outcomes[check] = _stored_outcome(check, outcome)
                except (ValueError, KeyError) as exc:  # a check or field this version lacks
                    log.warning("ignoring stored %s outcome of %s/%s: %s", check, ward, host,
                                exc)
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        return states


def _stored_outcome(check: str, text: str) -> Outcome:
    """An outcome this server validated before storing it: only its result is validated
    again, against this version's model of that check's result."""
    raw = json.loads(text)
    result = raw.pop("result", None)
    typed = None if result is None else REGISTRY[check].result_model.model_validate(result)
    return Outcome.model_construct(**raw, result=typed)
