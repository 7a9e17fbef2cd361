"""On the generated 168-ward city (lab/city.py), the real rules flag the same wards for the
same throughput reasons whether the wards test as today (every PC hourly, judged over 6 h) or
as the measurement plan says (one PC every 6 h or so, judged over 24 h).

The test times come from the simulated day of bench/plan_capacity.py (the real slot
scheduler, planner and agent schedules, a warm-up Sunday and the measured Monday); each
test reads its ward's chosen link figures (lab/city.py) within ±8 %. The series are what the
server shows Prometheus, each PC's latest test until its next one and nothing after a check
that got no slot; and, as the brief asks of evidence, each figure once at its own time (a
window then holds only the tests taken inside it). `promtool test rules` evaluates the rules
over them every 30 minutes (coarser than Prometheus' 15 s, so two days of 1,000 PCs stay
quick; a test's figure moves to the next step) and must find, every third hour of the
measured day, each reporting ward flagged or not exactly as the city was built, never
unknown. Delay, jitter and loss are left out: their probes do not follow the plan.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.plan_capacity import POLICIES, Day, Policy, Simulation, load_city
from lab import city
from tests.conftest import REPO, load_file, require_binary
from wardready.core.inventory import Inventory
from wardready.model import criteria
from wardready.model.criteria import LinkId
from wardready.model.report import Report

STEP = 30 * 60
"""Scrape and evaluation step of the generated series, seconds."""
CHECKED = [f"{h}h" for h in range(24, 48, 3)] + ["47h30m"]
"""Evaluation times: every third hour of the measured day (it starts at 24h, the Monday)."""
NOISE = 0.08
THROUGHPUT: tuple[LinkId, ...] = ("download", "upload")
FLAGGED = "WardLinkBelowRequirement"


@dataclass(frozen=True)
class CityDay:
    inventory: Inventory
    kinds: dict[str, city.Shortfall]
    days: dict[Policy, Day]


@pytest.fixture(scope="module")
def city_day() -> CityDay:
    inventory = load_city(city.WARDS)
    kinds = city.plan(inventory)
    hosts = {ward: city.pcs(kind) for ward, kind in kinds.items()}
    days = {policy: Simulation(inventory, hosts, policy, seed=3).run()
            for policy in POLICIES}
    return CityDay(inventory, kinds, days)


def chosen_links(kinds: Mapping[str, city.Shortfall]) -> dict[city.Shortfall, dict[str, float]]:
    """Each kind of ward's download and upload, bytes/s, as its PCs report them."""
    found = {}
    for kind in set(kinds.values()) - {"no-agent"}:
        report = Report.model_validate(city.report("sai-gon", "room-pc", "conference-room", kind))
        (outcome,) = [o for o in report.outcomes if o.check == "bandwidth"]
        found[kind] = {d.direction: d.bytes_per_second
                       for d in getattr(outcome.result, "directions", [])}
    return found


def run_length(values: Sequence[float | None]) -> str:
    """promtool's notation: `7e6x3` is four samples of 7e6, `_x1` two missing ones."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        token = "_" if values[i] is None else f"{values[i]:.6g}"
        out.append(f"{token}x{j - i}" if j > i else token)
        i = j + 1
    return " ".join(out)


def series(c: CityDay, policy: Policy, stamped: bool) -> Iterator[dict[str, str]]:
    """The input series of one schedule: the wards, their requirements, each PC's tests:
    its latest figure at every scrape until the next test, or (`stamped`) each figure once,
    at its own time."""
    day, rng = c.days[policy], random.Random(11)
    t0, steps = day.start - 86400, round(2 * 86400 / STEP)
    links = chosen_links(c.kinds)
    for ward in c.inventory.wards:
        flat = f"x{steps}"
        yield {"series": f'wardready_ward_info{{ward="{ward.id}",'
                         f'working_group="{ward.working_group}"}}', "values": f"1{flat}"}
        profile = c.inventory.profile_of(ward)
        for direction in THROUGHPUT:
            need = criteria.LINK_BY_ID[direction].requirement
            yield {"series": f'{need.spec.name}{{ward="{ward.id}"}}',
                   "values": f"{need.of(profile):.6g}{flat}"}
    events: dict[tuple[str, str], list[tuple[float, dict[str, float] | None]]] = {}
    for ran in day.ran:  # the figure reaches the server when the test ends
        figures = {d: v * rng.uniform(1 - NOISE, 1 + NOISE)
                   for d, v in links[c.kinds[ran.ward]].items()}
        events.setdefault((ran.ward, ran.host), []).append((ran.end, figures))
    for failed in day.gave_up:  # an error outcome replaces the PC's figure
        events.setdefault((failed.ward, failed.host), []).append((failed.end, None))
    for (ward_id, host), found in sorted(events.items()):
        found.sort(key=lambda e: e[0])
        for direction in THROUGHPUT:
            values: list[float | None] = []
            k = 0
            latest: dict[str, float] | None = None
            for step in range(steps + 1):
                if stamped:
                    latest = None
                while k < len(found) and found[k][0] <= t0 + step * STEP:
                    latest = found[k][1]
                    k += 1
                values.append(None if latest is None else latest[direction])
            yield {"series": f'wardready_bandwidth_bytes_per_second{{ward="{ward_id}",'
                             f'host="{host}",direction="{direction}"}}',
                   "values": run_length(values)}


def expected(c: CityDay) -> list[dict[str, Any]]:
    """1 for each reporting ward and throughput criterion the city was built short of, 0 for
    the others (lab/city.py's EXPECTED)."""
    samples = []
    for ward in c.inventory.wards:
        kind = c.kinds[ward.id]
        if kind == "no-agent":
            continue
        for direction in THROUGHPUT:
            short = (FLAGGED, direction) in city.EXPECTED[kind]
            samples.append({"labels": f'{{criterion="{direction}",ward="{ward.id}",'
                                      f'working_group="{ward.working_group}"}}',
                            "value": 1 if short else 0})
    return samples


def rules(tmp_path: Path, window_hours: float | None) -> Path:
    """The shipped rules, or the same with the throughput criteria over another window."""
    if window_hours is None:
        return REPO / "prometheus" / "rules" / "wardready.rules.yml"
    build = load_file(REPO / "prometheus" / "build.py", "rules_build_windows")
    build.LINK = tuple(  # type: ignore[attr-defined]
        dataclasses.replace(c, window_seconds=window_hours * 3600) if c.id in THROUGHPUT else c
        for c in criteria.LINK)
    out = tmp_path / f"rules-{window_hours:g}h.yml"
    out.write_text(build.render(), encoding="utf-8")
    return out


def promtool_test(tmp_path: Path, rule_file: Path, input_series: list[dict[str, str]],
                  checks: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` over these series, with these `promql_expr_test`s."""
    promtool = require_binary("promtool")
    doc = {"rule_files": [str(rule_file)],
           "evaluation_interval": f"{STEP // 60}m",
           # The recorded series feed each other within one evaluation (figures, windows,
           # shortfalls): in the file's order, as Prometheus runs them.
           "group_eval_order": [g["name"] for g in yaml.safe_load(
               rule_file.read_text(encoding="utf-8"))["groups"]],
           "tests": [{"interval": f"{STEP // 60}m", "input_series": input_series,
                      "promql_expr_test": checks}]}
    path = tmp_path / "flagging.test.yml"
    path.write_text(yaml.safe_dump(doc, width=1 << 20), encoding="utf-8")
    return subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize(("policy", "window_hours", "stamped"), [
    ("hourly", 6.0, False),  # today: every PC hourly, judged over 6 h
    ("hourly", None, False),  # agents told not to follow the plan, under the shipped rules
    ("plan", None, False),  # the plan, under the shipped rules (24 h)
    ("hourly", 6.0, True),  # the same with each figure stamped at its own time
    ("plan", None, True),
])
def test_the_same_wards_are_flagged_for_the_same_reasons(
        city_day: CityDay, tmp_path: Path, policy: Policy, window_hours: float | None,
        stamped: bool) -> None:
    expr = (f'ward_criterion:wardready_shortfall:ratio{{criterion=~"{"|".join(THROUGHPUT)}"}}'
            " > bool 0")
    want = expected(city_day)
    assert sum(s["value"] for s in want) >= 10  # thin links and thin communes, both ways
    out = promtool_test(tmp_path, rules(tmp_path, window_hours),
                        list(series(city_day, policy, stamped)),
                        [{"expr": expr, "eval_time": at, "exp_samples": want} for at in CHECKED])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_stamped_figures_under_the_plan_would_leave_a_6h_window_empty(
        city_day: CityDay, tmp_path: Path) -> None:
    """Why the throughput window grew: with each figure at its own time, the old 6 h window
    would hold no test of some wards at every checked hour, and judge them not at all."""
    reporting = sum(kind != "no-agent" for kind in city_day.kinds.values())
    judged = 'count(ward_criterion:wardready_shortfall:ratio{criterion="download"})'
    out = promtool_test(tmp_path, rules(tmp_path, 6.0), list(series(city_day, "plan", True)),
                        [{"expr": f"{judged} < bool {reporting}", "eval_time": at,
                          "exp_samples": [{"labels": "{}", "value": 1}]} for at in CHECKED])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_the_plans_tests_are_too_sparse_for_the_old_window_but_not_the_new(
        city_day: CityDay) -> None:
    """Some ward went longer than 6 h between tests under the plan; none longer than the
    plan's freshness target, which the throughput window matches."""
    day = city_day.days["plan"]
    gaps: dict[str, float] = {}
    last: dict[str, float] = {}
    for ran in sorted(day.ran, key=lambda r: r.start):
        if ran.start >= day.start and ran.ward in last:
            gaps[ran.ward] = max(gaps.get(ran.ward, 0.0), ran.start - last[ran.ward])
        last[ran.ward] = ran.start
    target = city_day.inventory.measurement_plan.throughput.max_age_hours * 3600
    assert criteria.LINK_BY_ID["download"].window_seconds == target
    assert max(gaps.values()) > 6 * 3600
    assert max(gaps.values()) <= target
