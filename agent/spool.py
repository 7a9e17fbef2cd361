"""The agent's on-disk spool: every report is committed here before it is sent.

A directory with one file per report. A report is written to a temporary file, fsync'd,
renamed into place and the directory fsync'd before `put` returns, so a report that `put`
returned for survives the agent being killed and the machine losing power; a write cut
short leaves only a temporary file, removed on the next open. The spool is bounded in bytes
and in age; when it must shrink, the oldest reports go first and are counted (in a file of
their own, written the same way), never silently.

Files rather than SQLite: the agent holds no database engine (~1.5 MiB resident), and the
spool needs nothing one gives: it is append, read the oldest, delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPORT = re.compile(r"^(\d{12})_(\d+\.\d{3})_([A-Za-z0-9._-]{1,64})\.json$")
"""A spooled report's file name: sequence, creation time, report id."""
DROPPED_FILE = "dropped"
TEMPORARY = ".tmp-"
SQLITE_MAGIC = b"SQLite format 3\x00"


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


@dataclass(frozen=True)
class _Entry:
    id: str
    created_at: float
    size: int
    name: str


def _write_durably(directory: Path, name: str, data: bytes) -> None:
    """Write `directory/name` so that it is either absent or complete after a crash."""
    temporary = directory / f"{TEMPORARY}{name}"
    try:
        with temporary.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX); NTFS journals it, and Windows cannot
    open a folder to fsync it."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Reports waiting for the server's acknowledgement, oldest first."""

    def __init__(self, path: Path, max_bytes: int, max_age_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.max_bytes, self.max_age = path, max_bytes, max_age_seconds
        self.clock = clock
        _take_over(path)
        path.mkdir(parents=True, exist_ok=True)
        self._entries: dict[int, _Entry] = {}  # in sequence order
        self._ids: set[str] = set()
        self._bytes = 0
        self._dropped = 0
        self._next_seq = 1
        self._open()

    def _open(self) -> None:
        found: list[tuple[int, _Entry]] = []
        for item in self.path.iterdir():
            name = item.name
            if name.startswith(TEMPORARY):  # a put that never returned
                item.unlink()
            elif name == DROPPED_FILE:
                self._dropped = self._read_dropped(item)
            elif (match := REPORT.match(name)) and item.is_file():
                found.append((int(match[1]), _Entry(match[3], float(match[2]),
                                                    item.stat().st_size, name)))
            else:
                log.warning("spool %s: %s is not a spooled report; left alone", self.path, name)
        for seq, entry in sorted(found):
            self._entries[seq] = entry
            self._ids.add(entry.id)
            self._bytes += entry.size
        self._next_seq = max(self._entries, default=0) + 1

    def _read_dropped(self, item: Path) -> int:
        try:
            return int(item.read_text().strip() or 0)
        except (OSError, ValueError) as exc:
            log.error("spool %s: cannot read the dropped-reports count (%s); counting from 0",
                      self.path, exc)
            return 0

    def close(self) -> None:
        """Nothing to release: every put is on disk when it returns."""

    def put(self, report_id: str, body: bytes) -> int:
        """Commit a report durably; returns how many old reports were dropped to make room.
        A report id already spooled is kept once. Raises OSError if the disk cannot take it
        (nothing is changed then)."""
        if not REPORT.match(f"{0:012d}_0.000_{report_id}.json"):
            raise ValueError(f"report id {report_id!r}: expected 1-64 letters, digits, '.', "
                             "'_' or '-'")
        now = self.clock()
        if report_id not in self._ids:
            seq = self._next_seq
            entry = _Entry(report_id, now, len(body), f"{seq:012d}_{now:.3f}_{report_id}.json")
            _write_durably(self.path, entry.name, body)
            self._next_seq += 1
            self._entries[seq] = entry
            self._ids.add(report_id)
            self._bytes += entry.size
        dropped = self._shrink(now, keep=report_id)
        if dropped:
            self._dropped += dropped
            _write_durably(self.path, DROPPED_FILE, f"{self._dropped}\n".encode())
            log.warning("spool full: dropped the %d oldest reports", dropped)
        return dropped

    def _shrink(self, now: float, keep: str) -> int:
        """Drop reports past the age bound, and the oldest while the bytes do not fit
        (never the report just put, even if it alone is too big)."""
        dropped = 0
        for seq, entry in list(self._entries.items()):
            if entry.created_at < now - self.max_age or (
                    self._bytes > self.max_bytes and entry.id != keep):
                self._delete(seq)
                dropped += 1
        return dropped

    def oldest(self, after: int = 0) -> Spooled | None:
        """The oldest waiting report (with seq greater than `after`)."""
        for seq, entry in self._entries.items():
            if seq > after:
                return Spooled(seq, entry.id, (self.path / entry.name).read_bytes())
        return None

    def remove(self, seq: int) -> None:
        """Forget a report the server has acknowledged."""
        if seq in self._entries:
            self._delete(seq)

    def _delete(self, seq: int) -> None:
        entry = self._entries.pop(seq)
        self._ids.discard(entry.id)
        self._bytes -= entry.size
        # Not fsync'd: a removal lost in a crash resends a report the server stores once.
        with contextlib.suppress(FileNotFoundError):
            (self.path / entry.name).unlink()

    def ids(self) -> list[str]:
        return [e.id for e in self._entries.values()]

    def stats(self) -> SpoolStats:
        oldest = min((e.created_at for e in self._entries.values()), default=None)
        return SpoolStats(len(self._entries), self._bytes, oldest, self._dropped)


def _take_over(path: Path) -> None:
    """Make `path` ready to be the spool's directory. A file there is the spool of an
    earlier version (SQLite), whose reports move into the directory so that an upgrade
    loses none, or something else, which is moved aside for an operator to look at."""
    side = path.with_name(f"{path.name}.migrating")
    if not path.exists() and side.is_dir():  # a migration stopped before its last step
        side.rename(path)
        return
    if not path.is_file():
        return
    with path.open("rb") as f:
        sqlite = f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    if not sqlite:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        path.rename(aside)
        log.error("spool %s is a file, not a spool directory; moved to %s", path, aside)
        return
    _migrate_sqlite(path, side)


def _migrate_sqlite(path: Path, side: Path) -> None:
    """Write the SQLite spool's reports to `side`, which then takes the file's place (the
    file is kept, renamed). A crash midway leaves the file in place, to be migrated again."""
    import sqlite3  # here: only for this one-off

    shutil.rmtree(side, ignore_errors=True)
    side.mkdir()
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT seq, id, created_at, body FROM reports ORDER BY seq").fetchall()
        dropped = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
    except sqlite3.DatabaseError as exc:
        log.error("spool %s: an old SQLite spool that cannot be read (%s); kept as it is",
                  path, exc)
        rows, dropped = [], None
    finally:
        db.close()
    for seq, report_id, created_at, body in rows:
        _write_durably(side, f"{seq:012d}_{created_at:.3f}_{report_id}.json", bytes(body))
    if dropped and dropped[0]:
        _write_durably(side, DROPPED_FILE, f"{dropped[0]}\n".encode())
    kept = path.with_name(f"{path.name}.sqlite-{int(time.time())}")
    path.rename(kept)
    side.rename(path)
    fsync_directory(path.parent)
    log.warning("spool %s: %d reports moved from the SQLite spool of an earlier version "
                "(kept as %s; delete it once they are delivered)", path, len(rows), kept.name)
