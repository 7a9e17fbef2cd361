"""Throughput-test capacity over one simulated day, worked out with the real plan and slot code.

    .venv/bin/python -m bench plan_capacity            # both fleets, both schedules (~2 min)
    .venv/bin/python -m bench.plan_capacity --quick    # the city's 168 x 10 only (~5 s)

A discrete-event simulation on simulated time (a heap of events, nothing sleeps; seeded).
It drives the real objects: the server's `Slots` (server/speedtest.py: one test per ward,
`max_concurrent_tests` city-wide, leases) and `Planner` (server/plan.py: quiet windows, the
daily budget, the slot's byte budget, the tester election in `agent_plan`); the agent's
`ThroughputSchedule` (agent/plan.py: exponential clamped intervals, deferral retries) under
the plan, and its `Scheduler` (agent/scheduler.py: every check at its fixed interval, first
runs spread by a random jitter) for today's hourly tests. The inventory is lab/city.py's
generated city with the shipped `measurement_plan:` of inventory.yml.

Modelled, not run: how the bandwidth check waits for a slot (`checks.bandwidth._acquire`:
polls with doubling backoff for up to `slot_wait_seconds`, gives up on ward_busy/city_busy,
returns a deferral for the plan's holds that outlast the wait), the server's slot handler
(`server.speedtest.acquire_slot`: the plan's refusal, then a slot of `slot_bytes`), the
download and upload endpoints (they spend the slot's byte budget), and what the agent does
with the outcome (`Agent._throughput_test`: a deferral is retried, a test run or failed draws
the next interval). A test costs what the link benchmark measured (docs/benchmarks.md, "Link
measurement against ground truth", 2026-11-23): on a 100 Mbit/s link 42.6 MB down in 3.6 s
and 46.9 MB up in 3.9 s, the whole check 8.5 s; on 20 Mbit/s 8.5 MB in 3.6 s and 14.4 MB in
6.1 s, 10.7 s. Half the wards are on each. Nothing else uses the links: no calls (so no
`ward_in_use`, `own_traffic` or `rtt_inflation` deferrals), no agent restarts, no outages.
A slot request's answer comes back a round trip later. Plan pulls are not simulated: the
plan does not change during the day, and `ThroughputSchedule.update` keeps the drawn time
when only the ward's last test moved.

The simulated day is Monday 7 December 2026 in the city's time zone, the day of the shipped
plan's city conference (07:30-11:30), after a whole simulated Sunday of warm-up. Each agent
starts at a random time in Sunday's first 12 h (the plan's longest interval) with no figure
for its ward, as a fleet whose PCs were not all started in the same minute; by Monday every
ward's latest figure, budget and next test are those of a running fleet. (Started all in the
same minute, the plan's first tests would all fall in its first 10 minutes:
`FIRST_TEST_SPREAD_SECONDS`.)

Most of the full run's time is today's schedule on the country's fleet: 19,800 agents whose
checks poll the full slots about seven million times a day, each through the real `Slots`.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from lab import city
from wardready.agent.plan import ThroughputSchedule
from wardready.agent.scheduler import Scheduler
from wardready.checks import bandwidth
from wardready.core.inventory import Inventory, load_inventory
from wardready.core.plan import MB
from wardready.server.config import SpeedtestConfig
from wardready.server.plan import Candidate, PlanBook, Planner, elect
from wardready.server.speedtest import Slot, Slots
from wardready.server.store import Identity

Policy = Literal["hourly", "plan"]
POLICIES: tuple[Policy, ...] = ("hourly", "plan")
POLICY_NAMES: dict[Policy, str] = {
    "hourly": "today: every PC, hourly",
    "plan": "the plan"}
DAY = date(2026, 12, 7)
"""A Monday: the shipped plan's city conference holds tests back 07:30-11:30."""
BIN_SECONDS = 60.0
"""The central server's Mbit/s is averaged over bins this long; the peak is the busiest."""
HOURLY = bandwidth.Config().interval_seconds
SLOT_WAIT = bandwidth.Config().slot_wait_seconds
REQUEST_SECONDS = 0.02
"""A slot request's round trip (lab/city.py's healthy ward link: 20 ms): the agent works out
how long it has waited once the answer is back."""
START_SPREAD = 12 * 3600.0
"""Agents start at random within this from the warm-up day's midnight (the plan's longest
interval), not all in the same minute; by the measured day each has run at least this
long."""
HELD = bandwidth.HELD
"""The plan's refusals the agent defers on when they outlast its wait (quiet window, budget,
a PC of the ward in a call); for ward_busy and city_busy it waits, then gives up."""


@dataclass(frozen=True)
class TestCost:
    """One throughput test on a link, as measured (both directions)."""

    mbit: int
    down_bytes: int
    down_seconds: float
    up_bytes: int
    up_seconds: float
    whole_seconds: float
    """The whole check: the slot is held from the grant to the release."""

    @property
    def bytes(self) -> int:
        return self.down_bytes + self.up_bytes


COSTS = (TestCost(100, 42_600_000, 3.6, 46_900_000, 3.9, 8.5),
         TestCost(20, 8_500_000, 3.6, 14_400_000, 6.1, 10.7))
"""docs/benchmarks.md, the link benchmark of 2026-11-23 (MB are 10^6 bytes there)."""


@dataclass(frozen=True)
class FleetSize:
    wards: int
    pcs: int

    @property
    def name(self) -> str:
        return f"{self.wards:,} wards x {self.pcs} PCs"


FLEETS = (FleetSize(city.WARDS, 10), FleetSize(3300, 6))
"""Ho Chi Minh City's 168 wards with about ten PCs each; the country's ~3,300 communes."""


@dataclass(frozen=True)
class Ran:
    """A test that ran: its ward, PC, when the slot was granted and released, its bytes."""

    ward: str
    host: str
    start: float
    end: float
    bytes: int


@dataclass
class Day:
    """What one simulated day showed (counts are of events inside the measured day)."""

    policy: Policy
    fleet: FleetSize
    start: float
    end: float
    wards: list[str]
    due: int = 0
    """Tests that fell due (the agent started its bandwidth check)."""
    requests: int = 0
    """Slot requests (POST /api/v1/speedtest/slots), retries included."""
    granted: int = 0
    deferred: Counter[str] = field(default_factory=Counter)
    """Tests that fell due but were put off, by the plan's reason."""
    failed: Counter[str] = field(default_factory=Counter)
    """Tests that got no slot within the wait (an error outcome), by the last refusal."""
    slot_seconds: float = 0.0
    saturated_seconds: float = 0.0
    """Time every city-wide slot was held."""
    peak_concurrency: int = 0
    bins: list[float] = field(default_factory=list)
    """Bytes moved in each BIN_SECONDS of the day."""
    ran: list[Ran] = field(default_factory=list)
    """Every test that ran, warm-up day included."""
    asked_bytes: int = 0
    """What the tests due would have moved, had each got a slot."""
    gave_up: list[Ran] = field(default_factory=list)
    """Every check that got no slot (from its start to when it gave up), warm-up included."""
    capacity: int = 0
    """The city's slots (`max_concurrent_tests`)."""
    elapsed: float = 0.0

    def in_day(self) -> list[Ran]:
        return [r for r in self.ran if self.start <= r.start < self.end]

    def bytes_per_ward(self) -> dict[str, int]:
        moved = dict.fromkeys(self.wards, 0)
        for r in self.in_day():
            moved[r.ward] += r.bytes
        return moved

    def max_ages(self) -> dict[str, float]:
        """Each ward's oldest 'latest uplink figure' over the day: the longest time, within
        the day, since its latest test (inf: none yet)."""
        times: dict[str, list[float]] = {w: [] for w in self.wards}
        for r in self.ran:
            if r.start < self.end:
                times[r.ward].append(r.start)
        ages = {}
        for ward, ts in times.items():
            ts.sort()
            before = [t for t in ts if t < self.start]
            last = before[-1] if before else -math.inf
            worst = 0.0
            for t in ts[len(before):]:
                worst = max(worst, t - last)
                last = t
            ages[ward] = max(worst, self.end - last)
        return ages

    @property
    def slot_use(self) -> float:
        return self.slot_seconds / (self.capacity * (self.end - self.start))

    @property
    def mean_mbit(self) -> float:
        return sum(self.bins) * 8 / (self.end - self.start) / 1e6

    @property
    def peak_mbit(self) -> float:
        return max(self.bins) * 8 / BIN_SECONDS / 1e6


@dataclass
class Agent:
    """One PC: its identity, its ward's link, and its side of the schedule."""

    identity: Identity
    cost: TestCost
    rng: random.Random
    scheduler: Scheduler | None = None
    schedule: ThroughputSchedule | None = None
    due_at: float = math.nan
    """When its test falls due next (an older due event no longer counts)."""
    check_started: float = 0.0
    poll: float = 1.0


START, DUE, ASK, RELEASE = range(4)
"""Kinds of event: an agent starts, its test falls due, it asks for a slot, its test ends."""


Host = tuple[str, str]
"""A PC of a ward: its host name and role."""


def standard_hosts(pcs: int) -> list[Host]:
    """A ward's PCs: the conference-room PC (which the plan elects) and counter PCs, named as
    lab/city.py names them."""
    return [("room-pc", "conference-room")] + [
        (f"counter-{k:02d}", "counter") for k in range(1, pcs)]


def load_city(wards: int) -> Inventory:
    """lab/city.py's generated city of `wards` wards, with inventory.yml's plan."""
    with tempfile.TemporaryDirectory(prefix="wardready-plan-") as tmp:
        path = Path(tmp) / "inventory.yml"
        path.write_text(city.inventory_yaml(wards), encoding="utf-8")
        return load_inventory(path)


def local_midnight(day: date, inventory: Inventory) -> float:
    return datetime.combine(day, datetime.min.time(),
                            inventory.measurement_plan.zone).timestamp()


class Simulation:
    """One policy on one fleet, over the warm-up day and the measured day."""

    def __init__(self, inventory: Inventory, pcs: int | Mapping[str, Sequence[Host]],
                 policy: Policy, seed: int, day: date = DAY,
                 config: SpeedtestConfig | None = None) -> None:
        """`pcs`: how many PCs each ward has (one the conference-room PC), or each ward's
        (host, role) pairs. Each agent draws from its own generator, seeded by `seed` and
        its name, so one agent's draws do not depend on the order of the others' events."""
        self.policy = policy
        self.now = local_midnight(day - timedelta(days=1), inventory)
        self.config = config or SpeedtestConfig()
        self.planner = Planner(PlanBook(None, inventory)) if policy == "plan" else None
        self.slots = Slots(self.config, self.planner, clock=lambda: self.now)
        wards = [w.id for w in inventory.wards]
        start = local_midnight(day, inventory)
        hosts = pcs if not isinstance(pcs, int) else {w: standard_hosts(pcs) for w in wards}
        size = FleetSize(len(wards), pcs if isinstance(pcs, int)
                         else max(len(h) for h in hosts.values()))
        self.day = Day(policy, size, start, start + 86400, wards,
                       bins=[0.0] * math.ceil(86400 / BIN_SECONDS),
                       capacity=self.config.max_concurrent_tests)
        self.events: list[tuple[float, int, int, Agent, Slot | None]] = []
        self.seq = itertools.count()
        self.level_since, self.level = self.now, 0
        self.candidates: dict[str, list[Candidate]] = {}
        for i, ward in enumerate(wards):
            self.candidates[ward] = [Candidate(h, role, None) for h, role in hosts[ward]]
            cost = COSTS[i % len(COSTS)]
            for host, _ in hosts[ward]:
                agent = Agent(Identity(f"{ward}/{host}", "agent", ward, host), cost,
                              random.Random(f"{seed}/{ward}/{host}"))
                self.at(self.now + agent.rng.uniform(0, START_SPREAD), START, agent)

    # -- the event loop ---------------------------------------------------------------------

    def at(self, when: float, kind: int, agent: Agent, slot: Slot | None = None) -> None:
        heapq.heappush(self.events, (when, next(self.seq), kind, agent, slot))

    def run(self) -> Day:
        started = time.monotonic()
        end, events = self.day.end, self.events
        while events:
            when, _, kind, agent, slot = heapq.heappop(events)
            if when >= end:
                break
            self.now = when
            if kind == ASK:
                self._ask(agent)
            elif kind == DUE:
                if slot is None and agent.due_at == when:
                    self._due(agent)
            elif kind == RELEASE:
                assert slot is not None
                self._release(agent, slot)
            else:
                self._start(agent)
        self.now = end
        self._level_changed()  # close the last stretch of slot use
        self.day.elapsed = time.monotonic() - started
        return self.day

    def counting(self) -> bool:
        return self.day.start <= self.now < self.day.end

    # -- the agent: when the test falls due, and what it does with the outcome --------------

    def _start(self, agent: Agent) -> None:
        """The agent starts: today its scheduler's first run falls at random within the
        interval; under the plan it fetches its part and draws its first test."""
        if self.policy == "hourly":
            agent.scheduler = Scheduler({"bandwidth": HOURLY}, rng=agent.rng,
                                        clock=lambda: self.now)
            self._due_at(agent, agent.scheduler.next_due["bandwidth"])
            return
        assert self.planner is not None
        ward, host = agent.identity.ward, agent.identity.host
        candidates = self.candidates[ward]
        testers, _ = elect(self.planner.settings(ward)[0], candidates)
        if host not in testers:
            return  # what agent_plan would tell it: no scheduled tests on this PC
        agent.schedule = ThroughputSchedule(agent.rng)
        agent.schedule.update(self.planner.agent_plan(ward, host, candidates, self.now),
                              self.now)
        self._next(agent)

    def _due_at(self, agent: Agent, when: float) -> None:
        agent.due_at = when
        self.at(when, DUE, agent)

    def _due(self, agent: Agent) -> None:
        if agent.scheduler is not None and "bandwidth" not in agent.scheduler.due():
            self._due_at(agent, agent.scheduler.next_due["bandwidth"])
            return
        if self.counting():
            self.day.due += 1
            self.day.asked_bytes += agent.cost.bytes
        agent.check_started, agent.poll = self.now, 1.0
        self._ask(agent)

    def _next(self, agent: Agent) -> None:
        """The check is over: wait for the next test, as the agent's loop does."""
        if agent.scheduler is not None:
            self._due_at(agent, max(self.now, agent.scheduler.next_due["bandwidth"]))
        elif agent.schedule is not None and agent.schedule.next_at is not None:
            self._due_at(agent, max(self.now, agent.schedule.next_at))

    # -- checks.bandwidth._acquire and server.speedtest.acquire_slot, on simulated time -----

    def _ask(self, agent: Agent) -> None:
        """POST /api/v1/speedtest/slots, as the server's handler answers it."""
        now = self.now
        if self.day.start <= now < self.day.end:
            self.day.requests += 1
        ward = agent.identity.ward
        slot: Slot | str
        if self.planner is not None:
            refused = self.planner.refusal(ward, now, False)
            if refused is not None:
                reason, wait, _ = refused
                self.planner.defer(ward, reason)
                self._refused(agent, reason, wait)
                return
            slot = self.slots.acquire(agent.identity, now,
                                      self.planner.slot_bytes(ward, now, False))
        else:
            slot = self.slots.acquire(agent.identity, now)
        if isinstance(slot, tuple):
            self._refused(agent, slot[0], self.slots.retry_after(now))
            return
        self._granted(agent, slot)

    def _refused(self, agent: Agent, reason: str, wait: float) -> None:
        """The agent's side of a 429, once the answer is back (a round trip later): defer,
        give up, or ask again after a pause."""
        retry = float(int(wait + 0.999))  # the Retry-After header: whole seconds
        answered = self.now + REQUEST_SECONDS
        left = SLOT_WAIT - (answered - agent.check_started)
        if left > 0 and (retry <= left or reason not in HELD):
            pause = min(left, retry, agent.poll) * agent.rng.uniform(0.5, 1.0)
            agent.poll *= 2
            heapq.heappush(self.events, (answered + pause, next(self.seq), ASK, agent, None))
            return
        self.now = answered
        if reason in HELD or agent.schedule is not None:  # the plan's tests defer a busy city
            if self.counting():
                self.day.deferred[reason] += 1
            assert agent.schedule is not None
            agent.schedule.deferred(reason, retry, answered)
        else:  # "no test slot within 120 s": an error outcome, no figure
            if self.counting():
                self.day.failed[reason] += 1
            self.day.gave_up.append(Ran(agent.identity.ward, agent.identity.host,
                                        agent.check_started, answered, 0))
            if agent.schedule is not None:
                agent.schedule.ran(answered)
        self._next(agent)

    # -- the test itself: the endpoints spend the slot's bytes; the agent releases it -------

    def _granted(self, agent: Agent, slot: Slot) -> None:
        cost, start = agent.cost, self.now
        down = min(cost.down_bytes, slot.bytes_left)
        slot.bytes_left -= down
        up = min(cost.up_bytes, slot.bytes_left)
        slot.bytes_left -= up
        self.slots.bytes_moved["download"] += down
        self.slots.bytes_moved["upload"] += up
        first = start + cost.whole_seconds - cost.down_seconds - cost.up_seconds
        self._spread(first, first + cost.down_seconds, down)
        self._spread(first + cost.down_seconds, start + cost.whole_seconds, up)
        end = start + cost.whole_seconds
        self.day.ran.append(Ran(slot.ward, slot.host, start, end, down + up))
        if self.planner is not None:  # as its report would tell the server
            self.planner.measured_at[slot.ward] = start
        if self.counting():
            self.day.granted += 1
        self._level_changed()
        self.at(end, RELEASE, agent, slot)

    def _release(self, agent: Agent, slot: Slot) -> None:
        self.slots.release(slot)  # charges the ward's budget (Planner.spend)
        self._level_changed()
        if agent.schedule is not None:
            agent.schedule.ran(self.now)
        self._next(agent)

    def _level_changed(self) -> None:
        """Account for the stretch since the number of held slots last changed."""
        lo, hi = max(self.level_since, self.day.start), min(self.now, self.day.end)
        if hi > lo:
            self.day.slot_seconds += self.level * (hi - lo)
            if self.level >= self.config.max_concurrent_tests:
                self.day.saturated_seconds += hi - lo
        self.level_since, self.level = self.now, len(self.slots.by_ward)
        if self.counting():
            self.day.peak_concurrency = max(self.day.peak_concurrency, self.level)

    def _spread(self, start: float, end: float, size: int) -> None:
        """Add `size` bytes moved evenly over [start, end) to the day's bins."""
        lo, hi = max(start, self.day.start), min(end, self.day.end)
        if hi <= lo:
            return
        rate = size / (end - start)
        first = int((lo - self.day.start) // BIN_SECONDS)
        last = int((hi - self.day.start - 1e-9) // BIN_SECONDS)
        for b in range(first, last + 1):
            b_lo = self.day.start + b * BIN_SECONDS
            overlap = min(hi, b_lo + BIN_SECONDS) - max(lo, b_lo)
            self.day.bins[b] += rate * overlap


# -- the report ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """A fleet, a schedule, and the city's slots (`max_concurrent_tests`; None: default)."""

    fleet: FleetSize
    policy: Policy
    slots: int | None = None

    @property
    def name(self) -> str:
        extra = f", {self.slots} slots" if self.slots is not None else ""
        return POLICY_NAMES[self.policy] + extra


SCENARIOS = (
    *(Scenario(f, p) for f in FLEETS for p in POLICIES),
    Scenario(FLEETS[1], "plan", 16),
)
"""Each fleet under both schedules at the defaults; the country's fleet under the plan with
the slots it needs (docs/scaling.md)."""


def hours(seconds: float) -> str:
    return "never" if math.isinf(seconds) else f"{seconds / 3600:.1f} h"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def section(runs: Sequence[tuple[Scenario, Day]], inventory: Inventory, seed: int,
            elapsed: float) -> str:
    t = inventory.measurement_plan.throughput
    config = SpeedtestConfig()
    windows = "; ".join(f"{w.name}, {'/'.join(w.days)} {w.start}-{w.end}"
                        for w in inventory.measurement_plan.quiet_windows)
    out = [
        "## Throughput-test capacity: the plan against hourly tests",
        "",
        f"`.venv/bin/python -m bench plan_capacity` ({elapsed:.0f} s, seed {seed}; "
        "`bench/plan_capacity.py`). `tests/test_plan_capacity.py` runs the city's day again "
        "and checks the plan's side against the plan's own settings.",
        "",
        "One simulated day, Monday 7 December 2026 in the city's time zone, after a "
        "simulated Sunday of warm-up (each agent starts at a random time in its first 12 h, "
        "so by Monday every ward has run at least one longest interval), on simulated time: "
        "a heap of events, seeded, nothing sleeps. Real code decides everything the plan "
        "decides: the server's `Slots` (server/speedtest.py) grant, refuse and lease the "
        "slots; its `Planner` (server/plan.py) elects the tester, refuses slots in quiet "
        "windows and past the budget, sizes each slot, and charges what it moved; each "
        "agent's `ThroughputSchedule` (agent/plan.py) or, for today's hourly tests, "
        "`Scheduler` (agent/scheduler.py) says when its next test falls due. Modelled: the "
        "bandwidth check's wait for a slot (`_acquire`: it polls with doubling backoff, "
        "defers on the plan's holds, gives up after "
        f"{SLOT_WAIT:g} s; a request's round trip {REQUEST_SECONDS * 1e3:g} ms), the slot "
        "handler's order of calls, the endpoints spending the slot's bytes, and the "
        "agent's reaction (a deferral is retried; a test run or failed draws the next "
        "interval).",
        "",
        "- **A test's cost** is what the link benchmark above measured on 2026-11-23, both "
        "directions: on a 100 Mbit/s link 42.6 MB down in 3.6 s and 46.9 MB up in 3.9 s, "
        "the whole check 8.5 s (89.5 MB); on 20 Mbit/s 8.5 MB in 3.6 s and 14.4 MB in 6.1 s, "
        "10.7 s (22.9 MB). Half the wards are on each (alternately). The slot is held for "
        "the whole check.",
        f"- **Today**: every PC runs the test every {HOURLY / 3600:g} h on a fixed grid (its "
        "first run at random within the hour), through the same slots with no plan (a "
        f"slot may move {config.max_bytes_per_slot / 2**20:g} MiB).",
        f"- **The plan**: inventory.yml's `measurement_plan`: {t.testers} tester per ward "
        f"(the {t.prefer_role} PC), intervals exponential around {t.mean_interval_hours:g} h "
        f"clamped to [{t.min_interval_hours:g} h, {t.max_interval_hours:g} h], "
        f"{t.daily_budget_mb:g} MB a day per ward, {t.test_max_mb:g} MB per test, "
        f"freshness target {t.max_age_hours:g} h; quiet window: {windows}.",
        f"- **Both**: one test per ward at a time, {config.max_concurrent_tests} city-wide "
        f"(`max_concurrent_tests`), leases of {config.slot_seconds:g} s. Not modelled: calls "
        "(no `ward_in_use`, `own_traffic` or `rtt_inflation` deferrals), agent restarts, "
        "outages.",
        "",
        "| fleet | schedule | tests due | slot requests | tests run | deferred | gave up: "
        f"no slot in {SLOT_WAIT:g} s | slot use | all slots held | most at once |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for scenario, d in runs:
        deferred = ", ".join(f"{n:,} {r.replace('_', ' ')}" for r, n in
                             sorted(d.deferred.items())) or "0"
        out.append(
            f"| {d.fleet.name} | {scenario.name} | {d.due:,} | {d.requests:,} | "
            f"{d.granted:,} ({d.granted / max(d.due, 1):.0%}) | {deferred} | "
            f"{sum(d.failed.values()):,} | {d.slot_use:.0%} | "
            f"{d.saturated_seconds / 86400:.0%} of the day | {d.peak_concurrency} |")
    out += ["",
            "| fleet | schedule | central Mbit/s, busiest minute | day's mean | MB per ward "
            "per day, mean | most | oldest uplink figure, worst ward | 95th percentile of "
            f"wards | wards past {t.max_age_hours:g} h |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scenario, d in runs:
        per_ward = d.bytes_per_ward()
        ages = list(d.max_ages().values())
        over = sum(a > t.max_age_hours * 3600 for a in ages)
        out.append(
            f"| {d.fleet.name} | {scenario.name} | {d.peak_mbit:,.0f} | {d.mean_mbit:,.1f} | "
            f"{statistics.mean(per_ward.values()) / MB:,.0f} | "
            f"{max(per_ward.values()) / MB:,.0f} | {hours(max(ages))} | "
            f"{hours(percentile(ages, 0.95))} | {over:,} |")
    out += [
        "",
        "*Tests due*: the agent started its bandwidth check. *Slot requests*: POSTs to the "
        "slot endpoint, retries included. *Tests run*: slots granted (share of the tests "
        "due). *Deferred*: tests the plan put off; the agent tries again after the window "
        "(spread over 3 h) or the day (over 2 h), or 10-20 min after finding the city busy. "
        "*Gave up*: no slot within the wait (today's hourly tests); the check reports an "
        "error, so that PC's figure leaves /metrics until its next test. "
        "*Slot use*: slot-seconds held over the city's slot-seconds. *Central Mbit/s*: what "
        "all running tests move through the central server, per minute (the busiest) and "
        "over the day. *MB per ward*: both directions, every PC of the ward. *Oldest uplink "
        "figure*: for each ward, the longest it went during the day since its latest test "
        "(the freshness operators get); the worst ward, the 95th percentile of wards, and "
        "the wards past the plan's target.",
        ""]
    by = {(s.fleet, s.policy): d for s, d in runs if s.slots is None}
    for fleet in dict.fromkeys(s.fleet for s, _ in runs):
        hourly, plan = by.get((fleet, "hourly")), by.get((fleet, "plan"))
        if hourly is None or plan is None:
            continue
        h_bytes = statistics.mean(hourly.bytes_per_ward().values())
        p_bytes = statistics.mean(plan.bytes_per_ward().values())
        out.append(
            f"- {fleet.name}: the plan moves {h_bytes / max(p_bytes, 1):,.0f} times fewer "
            f"bytes per ward a day than today ({p_bytes / MB:,.0f} MB against "
            f"{h_bytes / MB:,.0f} MB); today's tests would move "
            f"{hourly.asked_bytes / len(hourly.wards) / MB:,.0f} MB per ward if every one "
            f"got a slot. Today {hourly.granted / max(hourly.due, 1):.0%} of the tests due "
            f"run and the slots are held {hourly.slot_use:.0%} of the time; under the plan "
            f"{plan.granted / max(plan.due, 1):.0%} run (the rest deferred or given up) and "
            f"the slots are held {plan.slot_use:.0%} of the time.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help=f"only the city's {FLEETS[0].name}")
    args = parser.parse_args(argv)
    started = time.monotonic()
    runs: list[tuple[Scenario, Day]] = []
    inventories: dict[int, Inventory] = {}
    for scenario in SCENARIOS:
        fleet = scenario.fleet
        if args.quick and fleet != FLEETS[0]:
            continue
        if fleet.wards not in inventories:
            inventories[fleet.wards] = load_city(fleet.wards)
        print(f"simulating {fleet.name}, {scenario.name} ...", file=sys.stderr, flush=True)
        config = SpeedtestConfig(**({} if scenario.slots is None
                                    else {"max_concurrent_tests": scenario.slots}))
        day = Simulation(inventories[fleet.wards], fleet.pcs, scenario.policy, args.seed,
                         config=config).run()
        print(f"  {day.elapsed:.1f} s", file=sys.stderr, flush=True)
        runs.append((scenario, day))
    print(section(runs, inventories[FLEETS[0].wards], args.seed, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
