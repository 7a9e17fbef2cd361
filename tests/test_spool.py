"""The agent's spool: order, bounds with counted drops, durability across reopen."""

from __future__ import annotations

from pathlib import Path

from agent.spool import Spool


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


def test_a_corrupt_spool_is_kept_aside_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    spool = Spool(path, 1 << 20, 3600)
    spool.put("r0", b"x")
    assert spool.ids() == ["r0"]
    assert len(list(tmp_path.glob("s.db.corrupt-*"))) == 1
