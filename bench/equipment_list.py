"""Time to build and render the equipment request list for the whole city.

Generates an inventory of N wards (lab/city.py: 10 working groups, every fourth ward a
commune, one ward in four short in a known way), and builds the server's in-memory view of
N wards x H PCs the way report ingest does: every report goes through
`Fleet.ward_link_change` and `Fleet.apply` (server/handlers.py), the ward's link points are
collected as the store would record them. Each PC sends one full report six hours ago, then a
bandwidth result every hour and a media result every 15 minutes with slightly varying figures,
so the 6 h delay window has real work (the 24 h throughput window holds those 6 h). It then
times `server.equipment.build`, each renderer of `server.equipment_formats`, and reading the
link points back from a real Store (SQLite), which the HTTP endpoint and the CLI do on every
request, and the whole CLI path (`equipment.from_store`: every agent's state from SQLite, then
the list). Setup is timed apart.

    .venv/bin/python -m bench.equipment_list              # 3,300 wards x 10 PCs, about 6 minutes
    .venv/bin/python -m bench.equipment_list --wards 168 --hosts 6 --runs 3
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from lab import city
from lab.results import link, udp
from wardready.core.inventory import Inventory, load_inventory
from wardready.model import criteria
from wardready.model.report import Outcome, Report
from wardready.server import equipment
from wardready.server.context import Fleet
from wardready.server.equipment_formats import FORMATS
from wardready.server.store import Store

MAX_AGE = 86400.0
"""The server's default `readiness_max_age_seconds`."""
ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
MEDIA_EVERY, BANDWIDTH_EVERY = 900.0, 3600.0
VARIANTS = 16
"""Varied bandwidth and media results per shortfall kind, drawn at random per report."""
T = TypeVar("T")
Points = dict[tuple[str, str], list[tuple[float, float | None]]]


def load_city(wards: int) -> Inventory:
    with tempfile.TemporaryDirectory(prefix="wardready-bench-") as tmp:
        path = Path(tmp) / "inventory.yml"
        path.write_text(city.inventory_yaml(wards), encoding="utf-8")
        return load_inventory(path)


def pcs(kind: city.Shortfall, hosts: int) -> list[tuple[str, str]]:
    """(host, role) of a ward's reporting PCs: city.pcs with `hosts` PCs instead of six."""
    if kind == "no-agent":
        return []
    count = {"few-pcs": 3, "room-pc-slow": hosts + 1}.get(kind, hosts)
    return [("room-pc", "conference-room")] + [
        (f"counter-{i:02d}", "counter") for i in range(1, count)]


class Templates:
    """Validated reports and outcomes, made once and copied per PC (host.collect() is slow)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.full: dict[tuple[city.Shortfall, str], Report] = {}
        self.links: dict[tuple[city.Shortfall, str], list[Outcome]] = {}

    def report(self, kind: city.Shortfall, pc: str, role: str) -> Report:
        """The full report of `pc`: city.report tells room-pc, counter-01 and counter-02
        apart; every other counter reports like counter-03."""
        shape = pc if pc in ("room-pc", "counter-01", "counter-02") else "counter-03"
        if (kind, shape) not in self.full:
            self.full[kind, shape] = Report.model_validate(
                city.report("template", shape, role, kind))
        return self.full[kind, shape]

    def link(self, kind: city.Shortfall, check: str) -> Outcome:
        """A bandwidth or media outcome of a ward of `kind`, figures within ±8 % of city's."""
        if (kind, check) not in self.links:
            variants = []
            for _ in range(VARIANTS):
                f = self.rng.uniform(0.92, 1.08)
                if check == "bandwidth":
                    down, up = {"thin-link": (20, 40), "commune-thin": (15, 8)}.get(kind, (95, 40))
                    result: Any = link(down * f, up * f, loaded_rtt_ms=20 * f)
                elif kind == "udp-blocked":
                    result = udp(reachable=False)
                else:
                    loss = 0.05 * f if kind == "lossy" else self.rng.choice((0.0, 0.002))
                    result = udp(rtt_ms=20 * f, jitter_ms=2 * f, loss=loss)
                variants.append(Outcome(check=check, started_at=0.0, duration_seconds=10.0,
                                        ok=True, result=result))
            self.links[kind, check] = variants
        return self.rng.choice(self.links[kind, check])


def ward_reports(ward: str, kind: city.Shortfall, hosts: int, now: float,
                 templates: Templates) -> Iterator[Report]:
    """A ward's reports over the last 6 h, in the order the server receives them."""
    rng = templates.rng
    events: list[tuple[float, str, str, str]] = []  # (at, host, role, what)
    for pc, role in pcs(kind, hosts):
        start = now - criteria.DELAY_WINDOW_SECONDS + rng.uniform(0, MEDIA_EVERY)
        events.append((start, pc, role, "full"))
        for k in range(1, round(criteria.DELAY_WINDOW_SECONDS / MEDIA_EVERY)):
            events.append((start + k * MEDIA_EVERY, pc, role, "media"))
        for k in range(1, round(criteria.DELAY_WINDOW_SECONDS / BANDWIDTH_EVERY)):
            events.append((start + k * BANDWIDTH_EVERY + 30, pc, role, "bandwidth"))
    for at, pc, role, what in sorted(events):
        template = templates.report(kind, pc, role)
        if what == "full":
            outcomes = [o.model_copy(update={"started_at": at}) for o in template.outcomes]
        else:
            outcomes = [templates.link(kind, what).model_copy(update={"started_at": at})]
        yield template.model_copy(update={"id": uuid.uuid4(), "ward": ward, "host": pc,
                                          "generated_at": at, "outcomes": outcomes})


def simulate(inventory: Inventory, hosts: int, now: float, seed: int
             ) -> tuple[Fleet, Points, int]:
    """The server's view after ingesting every ward's reports: (fleet, link points, reports)."""
    fleet, points = Fleet({}, set(), MAX_AGE), defaultdict(list)
    templates, count = Templates(random.Random(seed)), 0
    for ward, kind in city.plan(inventory).items():
        for report in ward_reports(ward, kind, hosts, now, templates):
            received_at = report.generated_at + 0.5
            change = fleet.ward_link_change(report, received_at)
            fleet.apply(report, received_at, change)
            for criterion, value in change.items():
                points[ward, criterion].append((received_at, value))
            count += 1
    return fleet, dict(points), count


def timed(fn: Callable[[], T], runs: int) -> tuple[list[float], T]:
    seconds, result = [], None
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    assert result is not None
    return seconds, result


def stored(fleet: Fleet, points: Points, workdir: Path) -> Store:
    """A database holding what `Store.add_report` and `Store.issue_token` would have left
    after the same reports: link points, each agent's counters and latest outcomes, tokens."""
    store = Store(workdir / "bench.db")
    agents = fleet.agents.items()
    with store.db:
        store.db.execute("BEGIN")
        store.db.executemany("INSERT INTO ward_link (ward, criterion, at, value) VALUES (?,?,?,?)",
                             [(w, c, at, v) for (w, c), pts in points.items() for at, v in pts])
        store.db.executemany(
            "INSERT INTO agents (ward, host, last_report_at, reports_total, dropped_reports_total,"
            " clock_offset_seconds, role, agent_version) VALUES (?,?,?,?,?,?,?,?)",
            [(w, h, s.last_report_at, s.reports_total, s.dropped_reports_total,
              s.clock_offset_seconds, s.role, s.agent_version) for (w, h), s in agents])
        store.db.executemany(
            "INSERT INTO latest (ward, host, check_name, started_at, outcome) VALUES (?,?,?,?,?)",
            [(w, h, c, o.started_at, o.model_dump_json())
             for (w, h), s in agents for c, o in s.outcomes.items()])
        store.db.executemany(
            "INSERT INTO tokens (id, role, ward, host, secret_sha256, created_at)"
            " VALUES (?, 'agent', ?, ?, '', 0)",
            [(f"bench{i}", w, h) for i, (w, h) in enumerate(fleet.agents)])
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wards", type=int, default=3300)
    parser.add_argument("--hosts", type=int, default=10, help="PCs per ward")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    inventory = load_city(args.wards)
    now = time.time()
    print(f"simulating {len(inventory.wards)} wards x {args.hosts} PCs ...", file=sys.stderr,
          flush=True)
    fleet, points, reports = simulate(inventory, args.hosts, now, args.seed)
    setup = time.perf_counter() - t0
    evidence = equipment.Evidence(fleet.agents, fleet.active, points)

    rows: list[tuple[str, list[float]]] = []
    seconds, lst = timed(lambda: equipment.build(inventory, evidence, now, MAX_AGE), args.runs)
    rows.append(("`build()`", seconds))
    sizes = {}
    for name in ("csv", "markdown", "xlsx", "json"):
        render = FORMATS[name].render
        seconds, body = timed(functools.partial(render, lst, ZONE), args.runs)
        rows.append((f"render {name}", seconds))
        sizes[name] = len(body.encode() if isinstance(body, str) else body)
    seconds, _ = timed(lambda: FORMATS["csv"].render(
        equipment.build(inventory, evidence, now, MAX_AGE), ZONE), args.runs)
    rows.append(("`build()` + render csv", seconds))

    print("writing the same state to SQLite ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="wardready-bench-") as tmp:
        t0 = time.perf_counter()
        store = stored(fleet, points, Path(tmp))
        setup_db = time.perf_counter() - t0
        try:
            since = now - criteria.HISTORY_SECONDS
            seconds, read = timed(lambda: store.ward_link_points(since), args.runs)
            rows.append(("`Store.ward_link_points()` (HTTP endpoint and CLI)", seconds))
            seconds, _ = timed(store.agent_states, args.runs)
            rows.append(("`Store.agent_states()` (CLI)", seconds))
            seconds, found = timed(
                lambda: equipment.from_store(inventory, store, now, MAX_AGE), args.runs)
            rows.append(("`equipment.from_store()` (CLI: read state, links, build)", seconds))
        finally:
            store.close()
    assert read == points, "the store gives back other link points than it was given"
    assert (found.lines, found.no_data) == (lst.lines, lst.no_data), "the store's list differs"

    n_points = sum(len(p) for p in points.values())
    print(f"Setup (not measured): {setup:.0f} s to simulate, {setup_db:.0f} s to write SQLite. "
          f"{len(inventory.wards)} wards, {len(fleet.agents)} PCs, {reports} reports through "
          f"Fleet.ward_link_change + apply, {n_points} link points in {len(points)} series.")
    print(f"List: {len(lst.lines)} lines for {len({x.ward.id for x in lst.lines})} wards, "
          f"{len(lst.no_data)} no-data entries, {lst.total_vnd:,} VND "
          f"(+{lst.unpriced_lines} lines needing a quote). Sizes: "
          + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()) + ".\n")
    print(f"| step ({args.runs} runs) | median s | max s |")
    print("|---|---:|---:|")
    for label, secs in rows:
        print(f"| {label} | {statistics.median(secs):.3f} | {max(secs):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
