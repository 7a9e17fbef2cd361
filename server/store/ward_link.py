"""The history of each ward's best link figures, kept for the window the shortfall rules
judge over (`wardready.server.shortfalls`)."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping


def record_ward_link(db: sqlite3.Connection, ward: str, at: float,
                     changed: Mapping[str, float | None]) -> None:
    """Add the ward's figures that changed at `at` (inside the caller's transaction)."""
    db.executemany("INSERT INTO ward_link (ward, criterion, at, value)"
                   " VALUES (?,?,?,?)",
                   [(ward, c, at, v) for c, v in changed.items()])


class WardLinkStore:
    """The `Store`'s ward link history."""

    db: sqlite3.Connection

    def ward_link_points(self, since: float
                         ) -> dict[tuple[str, str], list[tuple[float, float | None]]]:
        """(ward, criterion) -> the ward's best link figure over time from `since`, starting
        with the value it had then."""
        points: dict[tuple[str, str], list[tuple[float, float | None]]] = defaultdict(list)
        for ward, criterion, at, value in self.db.execute(
                f"SELECT ward, criterion, at, value FROM ({_LAST} WHERE at < ?) WHERE n = 1",
                (since,)):
            points[ward, criterion].append((at, value))
        # Figures measured at the same instant (two PCs' reports replayed from one outage)
        # follow in the order they were recorded, the last being what the ward had then.
        for ward, criterion, at, value in self.db.execute(
                "SELECT ward, criterion, at, value FROM ward_link WHERE at >= ?"
                " ORDER BY at, rowid", (since,)):
            points[ward, criterion].append((at, value))
        return points

    def ward_link_latest(self) -> dict[str, dict[str, float | None]]:
        """Each ward's latest recorded link figures."""
        latest: dict[str, dict[str, float | None]] = defaultdict(dict)
        for ward, criterion, value in self.db.execute(
                f"SELECT ward, criterion, value FROM ({_LAST}) WHERE n = 1"):
            latest[ward][criterion] = value
        return latest

    def prune_ward_link(self, before: float) -> int:
        """Forget link figures older than `before`, but for the one each ward had then."""
        with self.db:
            cur = self.db.execute(
                "DELETE FROM ward_link WHERE at < ? AND rowid NOT IN"
                f" (SELECT id FROM ({_LAST} WHERE at < ?) WHERE n = 1)", (before, before))
        return cur.rowcount


_LAST = ("SELECT rowid AS id, ward, criterion, at, value, row_number() OVER (PARTITION BY ward,"
         " criterion ORDER BY at DESC, rowid DESC) AS n FROM ward_link")
"""Each row ranked within its ward and criterion, the latest (then the last recorded) 1."""
