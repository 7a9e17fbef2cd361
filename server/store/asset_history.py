"""The asset tables: every item the agents counted, with when it was first, last and no
longer seen; the log of what changed; and the change counts /metrics serves. What counts as
a change is `wardready.server.assets`'s to say."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from wardready.checks.base import InventoryItem
from wardready.server import assets


def record_assets(db: sqlite3.Connection, ward: str, host: str, source: str, at: float,
                  found: Mapping[str, Iterable[InventoryItem]]) -> None:
    """Compare what check `source` counted at `at` with what it counted before, and log the
    changes (inside the caller's transaction)."""
    current = {(kind, key): json.loads(facts) for kind, key, facts in db.execute(
        "SELECT kind, key, facts FROM assets WHERE ward = ? AND host = ? AND source = ?"
        " AND removed_at IS NULL", (ward, host, source))}
    for c in assets.diff(current, found):
        after = json.dumps(c.after, sort_keys=True) if c.after is not None else None
        before = json.dumps(c.before, sort_keys=True) if c.before is not None else None
        if c.change == "removed":
            db.execute("UPDATE assets SET removed_at = ?, changed_at = ? WHERE ward = ?"
                       " AND host = ? AND kind = ? AND key = ?",
                       (at, at, ward, host, c.kind, c.key))
        else:
            db.execute(
                "INSERT INTO assets (ward, host, kind, key, source, facts, first_seen,"
                " changed_at, last_seen) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (ward, host, kind, key) DO UPDATE SET source = excluded.source,"
                " facts = excluded.facts, changed_at = excluded.changed_at,"
                " removed_at = NULL", (ward, host, c.kind, c.key, source, after, at, at, at))
        db.execute(
            "INSERT INTO asset_changes (ward, host, at, change, kind, key, before, after)"
            " VALUES (?,?,?,?,?,?,?,?)", (ward, host, at, c.change, c.kind, c.key, before,
                                          after))
        db.execute(
            "INSERT INTO asset_change_counts (ward, host, kind, change, total, last_at)"
            " VALUES (?,?,?,?,1,?) ON CONFLICT (ward, host, kind, change) DO UPDATE"
            " SET total = total + 1, last_at = max(last_at, excluded.last_at)",
            (ward, host, c.kind, c.change, at))
    db.execute("UPDATE assets SET last_seen = ? WHERE ward = ? AND host = ?"
               " AND source = ? AND removed_at IS NULL", (at, ward, host, source))


class AssetStore:
    """The `Store`'s asset history, as read back."""

    db: sqlite3.Connection

    def assets(self, ward: str | None, host: str | None, kind: str | None,
               include_removed: bool, limit: int) -> list[dict[str, Any]]:
        """Items the agents counted (by default only those still present)."""
        where, params = self._filters(ward, host, kind)
        if not include_removed:
            where.append("removed_at IS NULL")
        rows = self.db.execute(
            "SELECT ward, host, kind, key, source, facts, first_seen, changed_at, last_seen,"
            f" removed_at FROM assets WHERE {' AND '.join(where) or '1'}"
            " ORDER BY ward, host, kind, key LIMIT ?", (*params, limit))
        names = ("ward", "host", "kind", "key", "source", "facts", "first_seen", "changed_at",
                 "last_seen", "removed_at")
        return [{**dict(zip(names, row, strict=True)), "facts": json.loads(row[5])}
                for row in rows]

    def asset_changes(self, ward: str | None, host: str | None, kind: str | None,
                      since: float, until: float, limit: int) -> list[dict[str, Any]]:
        """The change log between `since` and `until` (agent clock), oldest first."""
        where, params = self._filters(ward, host, kind)
        rows = self.db.execute(
            "SELECT ward, host, at, change, kind, key, before, after FROM asset_changes"
            f" WHERE {' AND '.join([*where, 'at >= ?', 'at < ?'])} ORDER BY at, id LIMIT ?",
            (*params, since, until, limit))
        names = ("ward", "host", "at", "change", "kind", "key", "before", "after")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def asset_change_counts(self) -> list[tuple[str, str, str, str, int, float]]:
        """(ward, host, kind, change, total, last change time) for every agent's assets."""
        return list(self.db.execute("SELECT ward, host, kind, change, total, last_at"
                                    " FROM asset_change_counts"))

    @staticmethod
    def _filters(ward: str | None, host: str | None, kind: str | None
                 ) -> tuple[list[str], list[str]]:
        pairs = [(column, value) for column, value in
                 (("ward", ward), ("host", host), ("kind", kind)) if value is not None]
        return [f"{column} = ?" for column, _ in pairs], [value for _, value in pairs]
