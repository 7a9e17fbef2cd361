"""The central server at fleet scale: report ingest against the Pushgateway, and /metrics.

For each fleet size N (agents; six PCs a ward, so N/6 generated wards, lab/city.py), a real
`wardready-server` and Debian's `prometheus-pushgateway` each run pinned to one core (CPU 1);
this process drives them from the other (CPU 0, `bench.loadgen`).

Ingest, for each receiver, in the same run:
- **first contact**: every agent's full report (host facts, peripherals, platforms, link
  checks; the conference-room PC also its router and switch), closed loop over 32
  connections: the receiver's ceiling;
- **routine round**: every agent's five-minute report (host, latency, platforms), open loop
  at a fixed offered rate (default 1,000/s), latency counted from when each was due.
The Pushgateway receives the same samples each report would put on the server's /metrics, as
one PUT per report to `/metrics/job/wardready/ward/W/host/H`, so the two compare per sample.

Scrape: the server's /metrics once every agent has reported, timed from here (whole and per
shard, `?shard=i&shards=n`), and Prometheus's own `scrape_duration_seconds` for it.

The machine's speed changes from minute to minute, so everything is measured `--runs` times
(default 3), each run with fresh receivers and a fresh database, and the tables give the
median with each run's figure beside it. The default Pushgateway (which answers a handful of
pushes a minute) and Prometheus (minutes per run at 20,000 agents) are measured in the
first run only.

    .venv/bin/python -m bench.server_scale                   # 2,000 and 20,000 agents, 3 runs
    .venv/bin/python -m bench.server_scale --agents 2000 --runs 1
    .venv/bin/python -m bench.server_scale --quick           # 600 agents, one run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from bench import loadgen, proc
from lab import city, stack
from wardready.checks import REGISTRY
from wardready.core.metrics import SampleCollector, outcome_samples
from wardready.server.store import Store

RECEIVER_CPU, DRIVER_CPU = 1, 0
LIMIT_SECONDS = 60.0
"""A phase stops sending after this long: the Pushgateway takes hours for 20,000 pushes."""
KINDS: tuple[city.Shortfall, ...] = ("ok", "thin-link", "lossy", "old-network", "no-webcam",
                                     "ok")
"""Ward kinds, in turn: most wards healthy, some short in ways that add series."""
ROUTINE_CHECKS = ("host", "latency", "platforms")
"""What an agent reports every five minutes at the default intervals."""
WARD_PLACEHOLDER, HOST_PLACEHOLDER = "@@ward@@", "@@host@@"
ID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


def log(message: str) -> None:
    print(f"[server_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Template:
    """One kind of report, with placeholders for ward, host and id, and what the
    Pushgateway gets for the same report."""

    body: str
    push: bytes
    samples: int

    def report(self, ward: str, host: str) -> bytes:
        return (self.body.replace(WARD_PLACEHOLDER, ward).replace(HOST_PLACEHOLDER, host)
                .replace(ID_PLACEHOLDER, str(uuid.uuid4())).encode())


def template(kind: city.Shortfall, pc: str, role: str, routine: bool) -> Template:
    body = city.report(WARD_PLACEHOLDER, pc, role, kind)
    if routine:
        body["outcomes"] = [o for o in body["outcomes"] if o["check"] in ROUTINE_CHECKS]
    body["id"] = ID_PLACEHOLDER
    body["host"] = HOST_PLACEHOLDER
    samples: list[Any] = []
    for o in body["outcomes"]:
        samples += outcome_samples(o["check"], o["ok"], o["duration_seconds"], o["started_at"])
        if o.get("result") is not None:
            check = REGISTRY[o["check"]]
            samples += check.samples(check.result_model.model_validate(o["result"]))
    registry = CollectorRegistry(auto_describe=False)
    specs = {s.spec.name: s.spec for s in samples}
    registry.register(SampleCollector(list(specs.values()), lambda: samples))
    push = generate_latest(registry)
    return Template(json.dumps(body), push, len(samples))


def fleet(agents: int) -> list[tuple[str, str, city.Shortfall, str]]:
    """(ward, host, kind, role) of `agents` PCs over generated wards."""
    wards = math.ceil(agents / city.PCS)
    out = []
    for w in range(wards):
        kind = KINDS[w % len(KINDS)]
        for pc, role in city.pcs(kind)[:city.PCS]:
            out.append((f"w{w:05d}", pc, kind, role))
    return out[:agents]


def city_inventory(agents: int) -> str:
    """inventory.yml's profiles with the generated wards of `fleet(agents)`."""
    base = yaml.safe_load(city.inventory_yaml(city.WARDS))
    groups = [g["id"] for g in base["working_groups"]]
    template_ward = next(w for w in base["wards"] if w.get("kind", "ward") == "ward")
    base["wards"] = [dict(template_ward, id=f"w{w:05d}", name=f"Phường {w}",
                          working_group=groups[w % len(groups)])
                     for w in range(math.ceil(agents / city.PCS))]
    return yaml.safe_dump(base, allow_unicode=True, sort_keys=False)


class Receivers:
    """A wardready server and a Pushgateway, each on CPU 1, with N agents' tokens."""

    def __init__(self, workdir: Path, agents: list[tuple[str, str, city.Shortfall, str]]):
        self.workdir = workdir
        (workdir / "inventory.yml").write_text(city_inventory(len(agents)), encoding="utf-8")
        self.port, self.push_port = stack.free_port(), stack.free_port()
        config = workdir / "server.yml"
        config.write_text(yaml.safe_dump({
            "listen_port": self.port, "database": "server.db",
            "inventory": str(workdir / "inventory.yml")}))
        with Store(workdir / "server.db") as store:
            store.db.execute("BEGIN")
            self.tokens = [store.issue_token(ward, host) for ward, host, _, _ in agents]
            store.db.execute("COMMIT")
        pin = ["taskset", "-c", str(RECEIVER_CPU)]
        self.server = stack.Process(
            "wardready-server",
            [*pin, stack.executable("wardready-server"), "serve", "--config", str(config)],
            workdir / "server.log", cwd=workdir)
        gateway = shutil.which("prometheus-pushgateway")
        if gateway is None:
            raise stack.StackError("prometheus-pushgateway not found: scripts/setup.sh "
                                   "installs the Debian package")
        self.gateway = stack.Process(
            "pushgateway", [*pin, gateway, f"--web.listen-address=127.0.0.1:{self.push_port}",
                            "--log.level=warn"], workdir / "pushgateway.log")
        self.fast_port = stack.free_port()
        self.fast_gateway = stack.Process(
            "pushgateway", [*pin, gateway, f"--web.listen-address=127.0.0.1:{self.fast_port}",
                            "--push.disable-consistency-check", "--log.level=warn"],
            workdir / "pushgateway-unchecked.log")
        stack.wait_until("the server", lambda: stack.http_get(
            f"http://127.0.0.1:{self.port}/healthz"), 60, self.server)
        for process, port in ((self.gateway, self.push_port),
                              (self.fast_gateway, self.fast_port)):
            stack.wait_until("the Pushgateway", lambda port=port: stack.http_get(  # type: ignore[misc]
                f"http://127.0.0.1:{port}/-/ready"), 30, process)

    @contextlib.contextmanager
    def alone(self, receiver: stack.Process) -> Iterator[None]:
        """The other receivers stopped (SIGSTOP) meanwhile, so that CPU 1 is this one's: the
        checked Pushgateway goes on working through its backlog for minutes after its phase
        has given up on it, and took most of the core from the server's phases after it."""
        others = [p for p in (self.server, self.gateway, self.fast_gateway)
                  if p is not receiver and p.alive()]
        for process in others:
            os.killpg(process.popen.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for process in others:
                os.killpg(process.popen.pid, signal.SIGCONT)

    def stop_gateways(self) -> None:
        for process in (self.gateway, self.fast_gateway):
            process.stop()

    def stop(self) -> None:
        for process in (self.server, self.gateway, self.fast_gateway):
            process.stop()


def requests(receivers: Receivers, agents: list[tuple[str, str, city.Shortfall, str]],
             templates: dict[tuple[city.Shortfall, str], Template]) -> tuple[list[bytes],
                                                                            list[bytes], int]:
    """Encoded report POSTs to the server and the matching Pushgateway PUTs, and samples."""
    to_server, to_gateway, samples = [], [], 0
    for (ward, host, kind, _), token in zip(agents, receivers.tokens, strict=True):
        t = templates[kind, host]
        to_server.append(loadgen.post("127.0.0.1", receivers.port, "/api/v1/reports",
                                      t.report(ward, host),
                                      {"Authorization": f"Bearer {token}",
                                       "Content-Type": "application/json"}))
        to_gateway.append(loadgen.post("127.0.0.1", receivers.push_port,
                                       f"/metrics/job/wardready/ward/{ward}/host/{host}",
                                       t.push, {"Content-Type": "text/plain; version=0.0.4"},
                                       method="PUT"))
        samples += t.samples
    return to_server, to_gateway, samples


@dataclass
class Row:
    """One receiver in one phase, over the runs."""

    agents: int
    phase: str
    receiver: str
    samples: int
    """Samples of all `offered` reports."""
    offered: int
    runs: list[tuple[loadgen.Run, float]]
    """Each run's drive and the receiver's CPU seconds meanwhile."""

    def cells(self) -> list[str]:
        summaries = [loadgen.summary(run) for run, _ in self.runs]
        rates = [s["rate"] for s in summaries]
        p99s = [s["p99_ms"] for s in summaries]
        ok = [sum(n for code, n in run.statuses.items() if code < 300) for run, _ in self.runs]
        cpu = [c / run.requests * 1e3 for run, c in self.runs if run.requests]
        return [f"{self.agents:,}", self.phase, self.receiver,
                f"{median(ok):,.0f}/{self.offered:,}", f"{median(rates):,.0f}",
                f"{median(rates) * self.samples / self.offered:,.0f}",
                f"{median([s['p50_ms'] for s in summaries]):.1f}", f"{median(p99s):.1f}",
                f"{median(cpu):.2f}" if cpu else "—",
                "; ".join(f"{r:,.0f}" for r in rates), "; ".join(f"{p:.0f}" for p in p99s)]


def median(values: list[float] | list[int]) -> float:
    """The median, NaN for none; NaN values (a run with no answer) count as the worst."""
    if not values:
        return math.nan
    return statistics.median(math.inf if math.isnan(v) else v for v in values)


def ingest(receivers: Receivers, agents: list[tuple[str, str, city.Shortfall, str]],
           rate: float, first_run: bool) -> Iterator[tuple[str, str, int, int,
                                                           tuple[loadgen.Run, float]]]:
    """(phase, receiver, samples, offered, (run, CPU seconds)) of each phase and receiver."""
    for phase, routine in (("first contact, closed loop", False),
                           (f"routine, open loop at {rate:,.0f}/s", True)):
        templates = {(kind, pc): template(kind, pc, role, routine)
                     for kind in set(KINDS) for pc, role in city.pcs(kind)}
        to_server, to_gateway, samples = requests(receivers, agents, templates)
        for name, process, port, batch in (
                ("wardready", receivers.server, receivers.port, to_server),
                ("pushgateway", receivers.gateway, receivers.push_port, to_gateway),
                ("pushgateway, consistency check off", receivers.fast_gateway,
                 receivers.fast_port, [r.replace(f":{receivers.push_port}".encode(),
                                                 f":{receivers.fast_port}".encode(), 1)
                                       for r in to_gateway])):
            if process is receivers.gateway and not first_run:
                continue
            log(f"{len(agents):,} agents, {phase}: {name}")
            with receivers.alone(process):
                before = proc.cpu_seconds(process.popen.pid)
                run = asyncio.run(loadgen.drive("127.0.0.1", port, batch,
                                                64 if routine else 32,
                                                rate if routine else None, LIMIT_SECONDS))
                cpu = proc.cpu_seconds(process.popen.pid) - before
            yield phase, name, samples, len(batch), (run, cpu)


def scrape(url: str) -> tuple[float, int, int]:
    """(seconds, bytes, samples) of one GET."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as resp:
        body = resp.read()
    seconds = time.perf_counter() - start
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return seconds, len(body), samples


@dataclass
class Scrapes:
    """/metrics timed from here in one run."""

    first: tuple[float, int, int]
    """(seconds, bytes, samples) of the first whole scrape after every agent reported."""
    later: float
    """Median seconds of three whole scrapes after it."""
    shards: list[tuple[float, int, int]]
    """Each shard's scrape, when there is more than one."""
    rss: int
    """The server's RSS after the scrapes, bytes."""


def scrapes(receivers: Receivers) -> Scrapes:
    base = f"http://127.0.0.1:{receivers.port}"
    targets = json.loads(stack.http_get(f"{base}/api/v1/metrics-targets") or b"[]")
    first = scrape(f"{base}/metrics")  # renders every agent once (as after a restart)
    later = statistics.median(scrape(f"{base}/metrics")[0] for _ in range(3))
    shards = [scrape(f"{base}/metrics?shard={i}&shards={len(targets)}")
              for i in range(len(targets))] if len(targets) > 1 else []
    return Scrapes(first, later, shards, proc.rss_bytes(receivers.server.popen.pid))


def scrape_rows(agents: int, runs: list[Scrapes]) -> Iterator[list[str]]:
    """Rows of the scrape table: the median over runs, and each run's seconds."""
    def row(target: str, seconds: list[float], size: float, samples: float,
            per_agent: str) -> list[str]:
        return [f"{agents:,}", target, f"{median(seconds):.2f}", f"{size / 1e6:.1f}",
                f"{samples:,.0f}", per_agent, "; ".join(f"{x:.2f}" for x in seconds)]

    first = runs[0].first
    whole = f"{first[2] / agents:.0f}"
    yield row("whole, first after start", [r.first[0] for r in runs], first[1], first[2], whole)
    yield row("whole, later", [r.later for r in runs], first[1], first[2], whole)
    if runs[0].shards:
        parts = runs[0].shards
        all_shards = f"{sum(s[2] for s in parts) / agents:.0f} (all shards)"
        yield row(f"one of {len(parts)} shards, median",
                  [statistics.median(s[0] for s in r.shards) for r in runs],
                  statistics.median(s[1] for s in parts), statistics.median(s[2] for s in parts),
                  all_shards)
        yield row(f"one of {len(parts)} shards, slowest",
                  [max(s[0] for s in r.shards) for r in runs],
                  max(s[1] for s in parts), max(s[2] for s in parts), all_shards)
    rss = [r.rss / 1e6 for r in runs]
    yield [f"{agents:,}", "(the server's own RSS, MB)", "", f"{median(rss):.0f}", "", "",
           "; ".join(f"{x:.0f}" for x in rss)]


def prometheus_rows(receivers: Receivers, agents: int, shards: int) -> Iterator[list[str]]:
    """Rows of the scrape table: Prometheus scraping the whole target, then the shards."""
    for job in ("whole", "http-sd"):
        first, last, samples, rss = prometheus_scrapes(receivers, job, agents)
        yield [f"{agents:,}", f"Prometheus's scrape_duration_seconds, {job}"
               + (f" ({shards} targets)" if job == "http-sd" else "")
               + " (slowest target: first scrape; latest)",
               f"{first:.2f}; {last:.2f}", "", f"{samples:,.0f}",
               f"{samples / agents:.0f}; Prometheus RSS {rss / 2**30:.1f} GiB", "first only"]


PROMETHEUS_WAIT_SECONDS = 40.0
PROMETHEUS_WAIT_PER_AGENT = 0.0075
"""Prometheus on one core takes about 100 CPU-seconds to create the 3.2 million series of
20,000 agents (its first round of scrapes, all targets): wait long enough to see the rounds
after it too (150 s at 20,000 agents)."""


def prometheus_scrapes(receivers: Receivers, job: str, agents: int = 0
                       ) -> tuple[float, float, float, int]:
    """Prometheus scraping the server for a while: the slowest target's longest
    scrape_duration_seconds (the first scrape, which creates the series) and latest, the
    samples it took per round (all targets), its RSS."""
    workdir = receivers.workdir / f"prometheus-{job}"
    workdir.mkdir()
    target: dict[str, Any] = (
        {"static_configs": [{"targets": [f"127.0.0.1:{receivers.port}"]}]} if job == "whole"
        else {"http_sd_configs": [{
            "url": f"http://127.0.0.1:{receivers.port}/api/v1/metrics-targets",
            "refresh_interval": "10s"}]})
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [{
        "job_name": "wardready", "scrape_interval": "15s", "scrape_timeout": "15s",
        **target}]}))
    port = stack.free_port()
    prometheus = stack.start_prometheus(workdir, port, config)
    try:
        time.sleep(max(PROMETHEUS_WAIT_SECONDS, agents * PROMETHEUS_WAIT_PER_AGENT))
        durations = stack.prometheus_query(
            port, 'max_over_time(scrape_duration_seconds{job="wardready"}[5m])')
        latest = stack.prometheus_query(port, 'scrape_duration_seconds{job="wardready"}')
        samples = stack.prometheus_query(
            port, 'sum(max_over_time(scrape_samples_scraped{job="wardready"}[5m]))')
        rss_bytes = proc.rss_bytes(prometheus.popen.pid)
        return (max((float(d["value"][1]) for d in durations), default=math.nan),
                max((float(d["value"][1]) for d in latest), default=math.nan),
                float(samples[0]["value"][1]) if samples else math.nan, rss_bytes)
    finally:
        prometheus.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="2000,20000", help="fleet sizes, comma separated")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="offered reports/s in the routine round")
    parser.add_argument("--runs", type=int, default=3,
                        help="fresh receivers per fleet size; medians are reported")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 600 agents, once")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: give at least 1")
    try:
        sizes = [600] if args.quick else [int(n) for n in args.agents.split(",")]
    except ValueError:
        parser.error(f"--agents {args.agents}: give fleet sizes as integers, comma separated")
    if min(sizes) < 1:
        parser.error(f"--agents {args.agents}: every fleet size must be at least 1")
    runs = 1 if args.quick else args.runs
    os.sched_setaffinity(0, {DRIVER_CPU})
    rows: dict[tuple[int, str, str], Row] = {}
    table: list[list[str]] = []
    for size in sizes:
        agents = fleet(size)
        timed: list[Scrapes] = []
        prometheus: list[list[str]] = []
        for n in range(runs):
            log(f"{size:,} agents: run {n + 1} of {runs}")
            with tempfile.TemporaryDirectory(prefix="wardready-scale-") as tmp:
                receivers = Receivers(Path(tmp), agents)
                try:
                    for phase, name, samples, offered, measured in ingest(
                            receivers, agents, args.rate, first_run=n == 0):
                        rows.setdefault((size, phase, name), Row(
                            size, phase, name, samples, offered, [])).runs.append(measured)
                    receivers.stop_gateways()  # nor do they share the core with the scrapes
                    log(f"{size:,} agents: scrapes")
                    timed.append(scrapes(receivers))
                    if n == 0:
                        prometheus = list(prometheus_rows(receivers, size,
                                                          max(1, len(timed[0].shards))))
                finally:
                    receivers.stop()
        table += [*scrape_rows(size, timed), *prometheus]
    print(render(list(rows.values()), table, argv, runs))
    return 0


def render(rows: list[Row], scrapes: list[list[str]], argv: list[str] | None,
           runs: int) -> str:
    command = " ".join([".venv/bin/python -m bench.server_scale", *(argv or [])])
    each = f"median of {runs} runs" if runs > 1 else "one run"
    lines = ["## Server ingest against the Pushgateway", "",
             f"`{command}`, {datetime.date.today()}, this {os.cpu_count()}-core machine: "
             f"each receiver pinned to CPU {RECEIVER_CPU}, the load generator on CPU "
             f"{DRIVER_CPU}; the receivers not under test stopped (SIGSTOP) meanwhile, the "
             f"Pushgateways stopped before the scrapes. Figures: the {each}, each with fresh "
             "receivers and database (the default Pushgateway: the first run only).", "",
             "| agents | phase | receiver | answered | reports/s | samples/s | p50 ms | p99 ms "
             "| receiver CPU ms/report | reports/s, each run | p99 ms, each run |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    lines += ["", "## Scrape cost", "",
              f"From here: the {each}; Prometheus: the first run only.", "",
              "| agents | target | seconds | MB | samples | samples/agent | seconds, each run |",
              "|---:|---|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(s) + " |" for s in scrapes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
