"""The remote-write queue: the reports table in the order reports were stored, and the last
one the receiver acknowledged (`server.remote_write`)."""

from __future__ import annotations

import sqlite3

Row = tuple[int, str, str, str, str | None]
"""(rowid, ward, host, report id, body; None when too old to send)."""


class RemoteQueueStore:
    """The `Store`'s remote-write cursor."""

    db: sqlite3.Connection

    def remote_write_cursor(self) -> int:
        """The rowid of the last report sent (or given up), 0 before the first."""
        row = self.db.execute("SELECT sent_rowid FROM remote_write WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def remote_write_done(self, rowid: int) -> None:
        """Every report up to `rowid` is sent or counted as dropped: durably."""
        with self.db:
            self.db.execute("INSERT INTO remote_write (id, sent_rowid) VALUES (1, ?)"
                            " ON CONFLICT (id) DO UPDATE SET sent_rowid = excluded.sent_rowid",
                            (rowid,))

    def remote_write_batch(self, limit: int, max_backlog: int, older_than: float
                           ) -> tuple[int, int, list[Row]]:
        """(reports pending, reports skipped, the next `limit` reports). Skipped, and passed
        by the cursor at once: the oldest past `max_backlog` pending. A report generated
        before `older_than` comes without its body: too old for the receiver."""
        cursor = self.remote_write_cursor()
        pending = self._pending(cursor)
        skipped = 0
        if pending > max_backlog:
            skipped = pending - max_backlog
            (cursor,) = self.db.execute(
                "SELECT rowid FROM reports WHERE rowid > ? ORDER BY rowid LIMIT 1 OFFSET ?",
                (cursor, skipped - 1)).fetchone()
            self.remote_write_done(cursor)
            pending = max_backlog
        rows = [(rowid, ward, host, report_id, body if generated_at >= older_than else None)
                for rowid, ward, host, report_id, generated_at, body in self.db.execute(
                    "SELECT rowid, ward, host, id, generated_at, body FROM reports"
                    " WHERE rowid > ? ORDER BY rowid LIMIT ?", (cursor, limit))]
        return pending, skipped, rows

    def _pending(self, cursor: int) -> int:
        # Reports are never deleted, so their rowids follow one another: the count is a
        # subtraction, not a scan of a backlog that may be millions long.
        (last,) = self.db.execute("SELECT max(rowid) FROM reports").fetchone()
        return max(0, (last or 0) - cursor)
