"""The scheduler: jittered first runs, fixed intervals, coalesced rounds, no bursts after a gap."""

from __future__ import annotations

import random
import statistics

from wardready.agent.scheduler import Scheduler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_runs_of_many_agents_spread_over_the_jitter_window() -> None:
    clock = Clock()
    starts = [Scheduler({"host": 300}, jitter=60, rng=random.Random(seed), clock=clock)
              .next_due["host"] - clock.now for seed in range(1000)]
    assert min(starts) >= 0 and max(starts) <= 60
    # Spread, not bunched: every 6-second slice of the window gets some agents.
    slices = {int(s // 6) for s in starts}
    assert slices == set(range(10))
    assert 25 < statistics.mean(starts) < 35


def test_jitter_defaults_to_the_interval() -> None:
    clock = Clock()
    starts = [Scheduler({"host": 30}, rng=random.Random(s), clock=clock).next_due["host"]
              - clock.now for s in range(200)]
    assert max(starts) <= 30 and max(starts) > 25


def test_checks_run_at_their_own_intervals_and_share_rounds_when_due_together() -> None:
    clock = Clock()
    sched = Scheduler({"host": 10, "ping": 5}, jitter=0, clock=clock)
    rounds = []
    for _ in range(40):
        clock.now += sched.seconds_until_next()
        rounds.append((clock.now - 1000, sched.due()))
    runs = {name: [t for t, names in rounds if name in names] for name in ("host", "ping")}
    assert runs["ping"][:5] == [0, 5, 10, 15, 20]
    assert runs["host"][:3] == [0, 10, 20]
    assert (10, ["host", "ping"]) in rounds  # one report for both


def test_missed_runs_are_skipped_not_bunched() -> None:
    clock = Clock()
    sched = Scheduler({"host": 10}, jitter=0, clock=clock)
    assert sched.due() == ["host"]
    clock.now += 95  # the machine slept through nine runs
    assert sched.due() == ["host"]
    assert sched.due() == []
    assert sched.next_due["host"] == 1100
