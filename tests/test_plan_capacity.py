"""The measurement plan's day on the city's fleet (168 wards x 10 PCs), simulated through the
real slot scheduler, planner and agent schedules (bench/plan_capacity.py): what a ward, an
operator and the central server would notice, against the plan's own settings in
inventory.yml and the measured cost of a test."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from bench import plan_capacity
from bench.plan_capacity import Day, Simulation
from lab import city
from wardready.core.inventory import Inventory
from wardready.core.plan import MB, minutes

PCS = 10


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return plan_capacity.load_city(city.WARDS)


@pytest.fixture(scope="module")
def plan_day(inventory: Inventory) -> tuple[Simulation, Day]:
    sim = Simulation(inventory, PCS, "plan", seed=7)
    return sim, sim.run()


@pytest.fixture(scope="module")
def hourly_day(inventory: Inventory) -> Day:
    return Simulation(inventory, PCS, "hourly", seed=7).run()


def test_the_plan_moves_a_tenth_of_todays_bytes_or_less(
        inventory: Inventory, plan_day: tuple[Simulation, Day], hourly_day: Day) -> None:
    budget = inventory.measurement_plan.throughput.daily_budget_mb * MB
    plan = plan_day[1].bytes_per_ward()
    today = hourly_day.bytes_per_ward()
    assert len(plan) == len(today) == city.WARDS
    mean_plan = sum(plan.values()) / len(plan)
    mean_today = sum(today.values()) / len(today)
    assert max(plan.values()) <= budget
    # Today's hourly tests on every PC move more than ten daily budgets per ward.
    assert mean_today >= 10 * budget
    assert mean_plan * 10 <= mean_today


def test_every_wards_uplink_figure_stays_within_the_plans_max_age(
        inventory: Inventory, plan_day: tuple[Simulation, Day]) -> None:
    max_age = inventory.measurement_plan.throughput.max_age_hours * 3600
    day = plan_day[1]
    # The age at every moment of the day, from every test the wards ran: before each test
    # and at the day's end, how long since the one before.
    tests: dict[str, list[float]] = defaultdict(list)
    for ran in day.ran:
        tests[ran.ward].append(ran.start)
    assert set(tests) == {w.id for w in inventory.wards}
    for ward, starts in tests.items():
        starts = sorted(t for t in starts if t < day.end)
        assert starts[0] < day.start, f"{ward}: no figure before the day began"
        checkpoints = [t for t in starts if t > day.start] + [day.end]
        for at in checkpoints:
            latest = max(t for t in starts if t < at)
            assert at - latest <= max_age, (ward, (at - latest) / 3600)


def test_no_test_starts_inside_the_city_conference(
        inventory: Inventory, plan_day: tuple[Simulation, Day]) -> None:
    plan = inventory.measurement_plan
    (window,) = plan.quiet_windows
    assert window.days == ["mon"] and plan_capacity.DAY.weekday() == 0
    monday = datetime.combine(plan_capacity.DAY, datetime.min.time(), plan.zone)
    start = (monday + timedelta(minutes=minutes(window.start))).timestamp()
    end = (monday + timedelta(minutes=minutes(window.end))).timestamp()
    day = plan_day[1]
    inside = [r for r in day.ran if start <= r.start < end]
    assert inside == []
    assert day.deferred["quiet_window"] > 0  # tests did fall due in it, and waited
    assert any(end <= r.start < end + 3600 for r in day.ran)  # and ran after it


def test_no_ward_spends_more_than_its_daily_budget(
        inventory: Inventory, plan_day: tuple[Simulation, Day]) -> None:
    plan = inventory.measurement_plan
    budget = plan.throughput.daily_budget_mb * MB
    sim, day = plan_day
    spent: dict[tuple[str, str], int] = defaultdict(int)
    for ran in day.ran:  # a test counts on the day it ended, as the server charges it
        spent[ran.ward, datetime.fromtimestamp(ran.end, plan.zone).date().isoformat()] += \
            ran.bytes
    assert len({d for _, d in spent}) == 2  # the warm-up Sunday and the Monday
    assert max(spent.values()) <= budget
    # The 100 Mbit/s wards' tests (89.5 MB) hit the budget: a fifth would leave less than one
    # test's allowance (220 MB) of the 500, so the planner refused it until midnight.
    assert day.deferred["budget"] > 0
    # The real planner charged each test's bytes to the ward's day (Slots.release on the
    # simulated clock).
    charged = {(ward, datetime.fromtimestamp(at, plan.zone).date().isoformat()): moved
               for (ward, at), moved in sim.planner.spent.items()} if sim.planner else {}
    monday = plan_capacity.DAY.isoformat()
    assert {k: v for k, v in charged.items() if k[1] == monday} == {
        k: v for k, v in spent.items() if k[1] == monday}


def test_only_the_conference_room_pc_tests(plan_day: tuple[Simulation, Day]) -> None:
    day = plan_day[1]
    assert {r.host for r in day.ran} == {"room-pc"}
    assert day.granted < 5 * city.WARDS  # about four a ward (a 6 h mean), not 240
