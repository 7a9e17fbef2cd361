"""When each check runs: at its own interval, first runs spread by a random jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

COALESCE_SECONDS = 1.0
"""Checks falling due within this window run in the same round and share one report."""


class Scheduler:
    """Decides rounds: the names of the checks due now.

    Each check first runs at a uniformly random offset within min(interval, jitter), so a
    thousand agents started together do not all measure the city's uplink at once; after
    that it runs every `interval` seconds on a fixed grid, skipping runs it has missed
    rather than bunching them up.
    """

    def __init__(self, intervals: dict[str, float], jitter: float | None = None,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.intervals = intervals
        self.clock = clock
        rng = rng or random.Random()
        now = clock()
        self.next_due = {
            name: now + rng.uniform(0, interval if jitter is None else min(interval, jitter))
            for name, interval in intervals.items()
        }

    def due(self) -> list[str]:
        """Names due now (within the coalescing window); advances their next due time."""
        now = self.clock()
        names = sorted(n for n, t in self.next_due.items() if t <= now + COALESCE_SECONDS)
        for name in names:
            interval = self.intervals[name]
            due = self.next_due[name] + interval
            if due <= now:  # missed runs (a suspended laptop): realign instead of bursting
                due += ((now - due) // interval + 1) * interval
            self.next_due[name] = due
        return names

    def seconds_until_next(self) -> float:
        return max(0.0, min(self.next_due.values()) - self.clock()) if self.next_due else 3600.0
