"""The agent's on-disk spool: every report is committed here before it is sent.

SQLite in WAL mode with synchronous=FULL: a report that `put` returned for survives the
agent being killed and the machine losing power. The spool is bounded in bytes and in age;
when it must shrink, the oldest reports go first and are counted, never silently.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('dropped', 0);
"""


@dataclass(frozen=True)
class Spooled:
    seq: int
    id: str
    body: bytes


@dataclass(frozen=True)
class SpoolStats:
    reports: int
    bytes: int
    oldest_created_at: float | None
    dropped_total: int


class Spool:
    """Reports waiting for the server's acknowledgement, oldest first."""

    def __init__(self, path: Path, max_bytes: int, max_age_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.max_bytes, self.max_age = path, max_bytes, max_age_seconds
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            ok = False
        if not ok:  # never expected with WAL + FULL; keep the evidence, start afresh
            db.close()
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            self.path.rename(aside)
            log.error("spool %s failed its integrity check; moved to %s", self.path, aside)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return db

    def close(self) -> None:
        self.db.close()

    def put(self, report_id: str, body: bytes) -> int:
        """Commit a report durably; returns how many old reports were dropped to make room."""
        now = self.clock()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR IGNORE INTO reports (id, created_at, body) VALUES (?,?,?)",
                            (report_id, now, body))
            dropped = self.db.execute("DELETE FROM reports WHERE created_at < ?",
                                      (now - self.max_age,)).rowcount
            total = self._bytes()
            while total > self.max_bytes:
                row = self.db.execute(
                    "SELECT seq, length(body) FROM reports WHERE id != ? ORDER BY seq LIMIT 1",
                    (report_id,)).fetchone()
                if row is None:
                    break  # only the new report is left: keep it even if it alone is too big
                self.db.execute("DELETE FROM reports WHERE seq = ?", (row[0],))
                total -= row[1]
                dropped += 1
            if dropped:
                self.db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'",
                                (dropped,))
        if dropped:
            log.warning("spool full: dropped the %d oldest reports", dropped)
        return dropped

    def oldest(self, after: int = 0) -> Spooled | None:
        """The oldest waiting report (with seq greater than `after`)."""
        row = self.db.execute("SELECT seq, id, body FROM reports WHERE seq > ? ORDER BY seq"
                              " LIMIT 1", (after,)).fetchone()
        return Spooled(row[0], row[1], bytes(row[2])) if row else None

    def remove(self, seq: int) -> None:
        """Forget a report the server has acknowledged."""
        self.db.execute("DELETE FROM reports WHERE seq = ?", (seq,))

    def ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM reports ORDER BY seq")]

    def stats(self) -> SpoolStats:
        count, oldest = self.db.execute("SELECT count(*), min(created_at) FROM reports").fetchone()
        dropped = self.db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return SpoolStats(count, self._bytes(), oldest, dropped[0])

    def _bytes(self) -> int:
        return int(self.db.execute("SELECT coalesce(sum(length(body)), 0) FROM reports")
                   .fetchone()[0])
