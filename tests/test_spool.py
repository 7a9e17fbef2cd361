"""The agent's spool: order, bounds with counted drops, durability across reopen."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from wardready.agent.spool import Spool


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_reports_come_back_oldest_first_and_survive_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_seconds=3600)
    for i in range(5):
        spool.put(f"r{i}", b"x" * 100)
    spool.put("r2", b"x" * 100)  # a duplicate id is kept once
    first = spool.oldest()
    assert first is not None and first.id == "r0"
    spool.remove(first.seq)
    spool.close()
    reopened = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_seconds=3600)
    assert reopened.ids() == ["r1", "r2", "r3", "r4"]
    assert reopened.stats().bytes == 400


def test_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=1000, max_age_seconds=3600)
    dropped = [spool.put(f"r{i}", b"x" * 300) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert spool.ids() == ["r2", "r3", "r4"]
    assert spool.stats().dropped_total == 2
    spool.close()
    assert Spool(tmp_path / "s.db", 1000, 3600).stats().dropped_total == 2  # counter persists


def test_reports_older_than_the_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_seconds=60, clock=clock)
    spool.put("old", b"x")
    clock.now += 61
    assert spool.put("new", b"y") == 1
    assert spool.ids() == ["new"]
    assert spool.stats().dropped_total == 1


def test_a_file_where_the_spool_belongs_is_kept_aside_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a spool" * 100)
    spool = Spool(path, 1 << 20, 3600)
    spool.put("r0", b"x")
    assert spool.ids() == ["r0"]
    assert len(list(tmp_path.glob("s.db.corrupt-*"))) == 1


def test_a_write_cut_short_leaves_nothing_that_is_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20, 3600)
    spool.put("r0", b'{"whole": true}')
    # What a kill between write and rename leaves behind: a temporary file, half written.
    (tmp_path / "s" / ".tmp-000000000002_1000000.000_r1.json").write_bytes(b'{"ha')
    (tmp_path / "s" / "notes.txt").write_text("an operator's file")
    reopened = Spool(tmp_path / "s", 1 << 20, 3600)
    assert reopened.ids() == ["r0"]
    first = reopened.oldest()
    assert first is not None and first.body == b'{"whole": true}'
    assert sorted(p.name for p in (tmp_path / "s").iterdir())[-1] == "notes.txt"
    assert not list((tmp_path / "s").glob(".tmp-*"))
    reopened.put("r1", b"{}")  # the sequence goes on past what is on disk
    assert reopened.ids() == ["r0", "r1"]


def test_a_bad_report_id_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 1 << 20, 3600)
    with pytest.raises(ValueError, match=re.escape("report id '../x'")):
        spool.put("../x", b"{}")
    assert spool.ids() == [] and list((tmp_path / "s").iterdir()) == []


def test_an_sqlite_spool_of_an_earlier_version_is_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                              created_at REAL NOT NULL, body BLOB NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO counters VALUES ('dropped', 3);
    """)
    for i in range(4):
        db.execute("INSERT INTO reports (id, created_at, body) VALUES (?, ?, ?)",
                   (f"r{i}", 1_000_000.0 + i, f'{{"n": {i}}}'.encode()))
    db.execute("DELETE FROM reports WHERE id = 'r1'")  # delivered before the upgrade
    db.commit()
    db.close()
    clock = Clock()
    spool = Spool(path, 1 << 20, 3600, clock=clock)
    assert path.is_dir() and len(list(tmp_path.glob("spool.db.sqlite-*"))) == 1
    assert spool.ids() == ["r0", "r2", "r3"]
    assert spool.stats().dropped_total == 3
    assert spool.stats().oldest_created_at == 1_000_000.0
    first = spool.oldest()
    assert first is not None and first.body == b'{"n": 0}'
    spool.put("r4", b"{}")
    assert Spool(path, 1 << 20, 3600, clock=clock).ids() == ["r0", "r2", "r3", "r4"]


def test_a_migration_stopped_before_its_last_step_is_finished(tmp_path: Path) -> None:
    side = tmp_path / "spool.migrating"
    side.mkdir()
    (side / "000000000007_1000000.000_r7.json").write_bytes(b"{}")
    spool = Spool(tmp_path / "spool", 1 << 20, 3600, clock=Clock())
    assert spool.ids() == ["r7"] and not side.exists()
