"""Remote write at the server's ingest rate: does the writer keep up, what it costs the
server, Prometheus's receiver against VictoriaMetrics, and /metrics once the measurements go
by remote write (issue 23).

For each run and each configuration (in turn: no remote write, remote write to Debian's
`prometheus` as receiver, to Debian's `victoria-metrics`), a fresh `wardready-server` and
database, pinned to CPU 1; the load generator (`bench.loadgen`) and the receiver share CPU 0.
The fleet is server_scale's: N agents, six PCs a ward (lab/city.py), every agent's token
issued beforehand.

- **Load**: every agent's routine five-minute report (host, latency, platforms), open loop
  at `--rate` reports/s (default 1,000) for `--seconds`, agent after agent, round after
  round; each round's reports stamped a second after the last round's, so that every sample
  is new to the receiver.
- **The writer**: the server's /metrics read every `POLL_SECONDS` during the load and after
  it, until nothing is pending or `--drain` seconds have passed: the
  `wardready_server_remote_write_*` figures (reports and samples acknowledged, pending,
  failures, drops) and the server's CPU time (/proc) at each read.
- **Server CPU per report**: from the first report due to the last answered (ingest, and
  the writer as far as it got then).
- **Receiver**: CPU seconds and resident memory (now and peak, /proc) over load and drain,
  the data directory's size, and how many of the host check's samples (one a report) it
  answers a PromQL `count_over_time` with.
- **Scrape**: once the writer is done (or given up on), /metrics timed from here, whole:
  bytes, samples, seconds (the first, then the median of three more).

    .venv/bin/python -m bench.remote_write           # 20,000 agents, 1,000/s, 40 s, 3 runs: ~18 min
    .venv/bin/python -m bench.remote_write --runs 1 --seconds 30
    .venv/bin/python -m bench.remote_write --quick         # 600 agents, 10 s, one run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench import loadgen, proc
from bench.server_scale import (
    DRIVER_CPU,
    ID_PLACEHOLDER,
    KINDS,
    RECEIVER_CPU,
    city_inventory,
    fleet,
    median,
    scrape,
    template,
)
from lab import city, stack
from wardready.server.store import Store

SERVER_CPU, STORE_CPU = RECEIVER_CPU, DRIVER_CPU
"""The server alone on one core; the remote-write receiver beside the load generator."""
CONFIGS = ("off", "prometheus", "victoria-metrics")
POLL_SECONDS = 2.0
POLL_PAGE = "/metrics?shard=0&shards=1024"
"""The writer's figures come with shard 0: a few wards, not the whole page (tens of MB)."""
SEND_FACTOR = 4.0
"""A slow server gets every report still, sent late: up to this many times --seconds."""
WARM_SECONDS = 3.0
"""Left to a fresh server before the load (it renders /metrics ahead, loads the fleet)."""
CONNECTIONS = 64
TIME_PLACEHOLDER = "1111111111.125"
HOST_SERIES = "wardready_host_memory_total_bytes"
"""One sample a report (the host check), to count what the receiver holds."""
PREFIX = b"wardready_server_remote_write_"


def log(message: str) -> None:
    print(f"[remote_write {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Poll:
    """One read of the server's /metrics."""

    t: float
    """Seconds since the load started."""
    cpu: float
    """The server's CPU seconds since the load started."""
    reports: float = 0.0
    samples: float = 0.0
    pending: float = math.nan
    failures: float = 0.0
    dropped: float = 0.0
    scrape_seconds: float = 0.0
    scrape_bytes: int = 0


@dataclass
class Result:
    """One configuration in one run."""

    config: str
    offered: int
    drive: loadgen.Run
    cpu_drive: float
    """The server's CPU seconds during the load."""
    polls: list[Poll] = field(default_factory=list)
    drive_seconds: float = 0.0
    drained_at: float | None = None
    """Seconds after the load started when nothing was pending; None: not within --drain."""
    receiver_cpu: float = math.nan
    receiver_rss: int = 0
    receiver_peak_rss: int = 0
    receiver_disk: int = 0
    stored_host_samples: float = math.nan
    server_rss: int = 0
    scrape_first: tuple[float, int, int] = (math.nan, 0, 0)
    scrape_later: float = math.nan

    def at_drive_end(self) -> Poll:
        """The last poll during the load."""
        during = [p for p in self.polls if p.t <= self.drive_seconds + 0.5]
        return during[-1] if during else Poll(0.0, 0.0)

    @property
    def final(self) -> Poll:
        return self.polls[-1] if self.polls else Poll(0.0, 0.0)


class Receiver:
    """Prometheus as a remote-write receiver, or VictoriaMetrics, pinned to STORE_CPU."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir, self.port = kind, workdir, stack.free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        if kind == "prometheus":
            config = workdir / "receiver.yml"
            config.write_text(yaml.safe_dump({
                "global": {"scrape_interval": "15s"},
                "storage": {"tsdb": {"out_of_order_time_window": "14d"}}}))
            self.process = stack.start_prometheus(workdir, port=self.port, config=config,
                                                  receiver=True)
            self.data = workdir / "prometheus-data"
        else:
            self.process = stack.start_victoria_metrics(workdir, self.port)
            self.data = workdir / "vm-data"
        os.sched_setaffinity(self.process.popen.pid, {STORE_CPU})
        for task in os.listdir(f"/proc/{self.process.popen.pid}/task"):
            os.sched_setaffinity(int(task), {STORE_CPU})

    @property
    def write_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def stored(self, selector: str) -> float:
        """Samples of `selector` over the last hour, as the receiver answers PromQL."""
        base = f"http://127.0.0.1:{self.port}"
        if self.kind == "victoria-metrics":
            stack.http_get(f"{base}/internal/force_flush", timeout=30)
        query = f"sum(count_over_time({selector}[1h]))"
        body = stack.http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query}), timeout=120)
        result = json.loads(body or b"{}").get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else math.nan

    def stop(self) -> None:
        self.process.stop()

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.data.rglob("*") if f.is_file())


def requests(port: int, agents: list[tuple[str, str, city.Shortfall, str]],
             tokens: list[str], count: int) -> list[bytes]:
    """`count` routine report POSTs, agent after agent, round after round; round r's reports
    measured at (now - rounds + r) s."""
    templates = {}
    for kind in set(KINDS):
        for pc, role in city.pcs(kind):
            t = template(kind, pc, role, routine=True)
            body = json.loads(t.body)
            stamp = json.dumps(body["generated_at"])
            t.body = t.body.replace(stamp, TIME_PLACEHOLDER)
            templates[kind, pc] = t
    rounds = math.ceil(count / len(agents))
    start = time.time() - rounds - 1
    out = []
    for i in range(count):
        r, a = divmod(i, len(agents))
        ward, host, kind, _ = agents[a]
        body = templates[kind, host].body.replace(TIME_PLACEHOLDER, f"{start + r:.3f}")
        body = body.replace("@@ward@@", ward).replace("@@host@@", host)
        body = body.replace(ID_PLACEHOLDER, str(uuid.uuid4()))
        out.append(loadgen.post("127.0.0.1", port, "/api/v1/reports", body.encode(),
                                {"Authorization": f"Bearer {tokens[a]}",
                                 "Content-Type": "application/json"}))
    return out


def read_writer(port: int) -> tuple[dict[str, float], float, int]:
    """The server's remote-write figures (name -> value, summed over labels), the scrape's
    seconds and bytes."""
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{POLL_PAGE}", timeout=60) as resp:
        body = resp.read()
    seconds = time.perf_counter() - start
    figures: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith(PREFIX):
            name = line.split(b"{", 1)[0].split(b" ", 1)[0].decode()
            figures[name] = figures.get(name, 0.0) + float(line.rsplit(b" ", 1)[1])
    return figures, seconds, len(body)


def poll(port: int, pid: int, t0: float, cpu0: float) -> Poll:
    figures, seconds, size = read_writer(port)
    name = "wardready_server_remote_write_"
    return Poll(time.monotonic() - t0, proc.cpu_seconds(pid) - cpu0,
                figures.get(f"{name}reports_total", 0.0),
                figures.get(f"{name}samples_total", 0.0),
                figures.get(f"{name}pending_reports", math.nan),
                figures.get(f"{name}failures_total", 0.0),
                figures.get(f"{name}dropped_reports_total", 0.0), seconds, size)


async def load(port: int, pid: int, batch: list[bytes], rate: float, seconds: float
               ) -> tuple[loadgen.Run, float, list[Poll], float, float]:
    """(the drive, server CPU seconds during it, polls, when it started (monotonic), server
    CPU at its start)."""
    polls: list[Poll] = []
    t0, cpu0 = time.monotonic(), proc.cpu_seconds(pid)
    stop = asyncio.Event()

    async def poller() -> None:
        while not stop.is_set():
            polls.append(await asyncio.to_thread(poll, port, pid, t0, cpu0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)

    task = asyncio.create_task(poller())
    run = await loadgen.drive("127.0.0.1", port, batch, CONNECTIONS, rate,
                              seconds * SEND_FACTOR)
    cpu = proc.cpu_seconds(pid) - cpu0
    stop.set()
    await task
    return run, cpu, polls, t0, cpu0


def one(config: str, workdir: Path, agents: list[tuple[str, str, city.Shortfall, str]],
        tokens_db: Path, rate: float, seconds: float, drain: float) -> Result:
    workdir.mkdir()
    receiver = None if config == "off" else Receiver(config, workdir / config)
    server = None
    try:
        port = stack.free_port()
        (workdir / "server.db").write_bytes(tokens_db.read_bytes())
        server_config: dict[str, object] = {
            "listen_port": port, "database": "server.db",
            "inventory": str(tokens_db.parent / "inventory.yml")}
        if receiver is not None:
            server_config["remote_write"] = {"url": receiver.write_url}
        (workdir / "server.yml").write_text(yaml.safe_dump(server_config))
        server = stack.Process("wardready-server", [
            "taskset", "-c", str(SERVER_CPU), stack.executable("wardready-server"), "serve",
            "--config", str(workdir / "server.yml")], workdir / "server.log", cwd=workdir)
        stack.wait_until("the server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 60, server)
        tokens = json.loads((tokens_db.parent / "tokens.json").read_text())
        time.sleep(WARM_SECONDS)
        count = int(rate * seconds)
        batch = requests(port, agents, tokens, count)
        rcpu0 = proc.cpu_seconds(receiver.process.popen.pid) if receiver else 0.0
        pid = server.popen.pid
        log(f"{config}: {count:,} reports at {rate:,.0f}/s")
        run, cpu, polls, t0, cpu0 = asyncio.run(load(port, pid, batch, rate, seconds))
        result = Result(config, count, run, cpu, polls, time.monotonic() - t0)
        if receiver is not None:
            deadline = t0 + result.drive_seconds + drain
            while time.monotonic() < deadline:
                p = poll(port, pid, t0, cpu0)
                result.polls.append(p)
                if p.pending == 0 and p.reports + p.dropped >= run.requests:
                    result.drained_at = p.t
                    break
                time.sleep(POLL_SECONDS)
            result.receiver_cpu = proc.cpu_seconds(receiver.process.popen.pid) - rcpu0
            result.receiver_rss = proc.rss_bytes(receiver.process.popen.pid)
            result.receiver_peak_rss = proc.peak_rss_bytes(receiver.process.popen.pid)
            log(f"{config}: {result.final.reports:,.0f} reports written, "
                f"{result.final.pending:,.0f} pending; counting what the receiver holds")
            result.stored_host_samples = receiver.stored(HOST_SERIES)
            result.receiver_disk = receiver.disk_bytes()
            receiver.stop()  # nor does it share a core with the scrapes
        base = f"http://127.0.0.1:{port}/metrics"
        result.scrape_first = scrape(base)
        result.scrape_later = statistics.median(scrape(base)[0] for _ in range(3))
        result.server_rss = proc.rss_bytes(pid)
        return result
    finally:
        if server is not None:
            server.stop()
        if receiver is not None:
            receiver.stop()


def tokens_database(workdir: Path, agents: list[tuple[str, str, city.Shortfall, str]]) -> Path:
    """A database with every agent's token (copied for each server), and the tokens in
    tokens.json beside it for the load generator."""
    (workdir / "inventory.yml").write_text(city_inventory(len(agents)), encoding="utf-8")
    path = workdir / "tokens.db"
    with Store(path) as store:
        store.db.execute("BEGIN")
        tokens = [store.issue_token(ward, host) for ward, host, _, _ in agents]
        store.db.execute("COMMIT")
    (workdir / "tokens.json").write_text(json.dumps(tokens))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered reports/s")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the load lasts")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds after the load to wait for the writer to catch up")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--quick", action="store_true", help="600 agents, 10 s, one run")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.seconds, args.runs, args.drain = 600, 10.0, 1, 60.0
    configs = args.configs.split(",")
    if set(configs) - set(CONFIGS) or not configs:
        parser.error(f"--configs {args.configs}: choose from {', '.join(CONFIGS)}")
    for name in ("agents", "rate", "seconds", "runs"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.drain < 0 or args.drain > 3600 or args.seconds > 3600:
        parser.error("--seconds and --drain: at most an hour")
    os.sched_setaffinity(0, {DRIVER_CPU})
    agents = fleet(args.agents)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="wardready-rw-") as tmp:
        log(f"{args.agents:,} agents' tokens")
        tokens = tokens_database(Path(tmp), agents)
        for n in range(args.runs):
            for config in configs:
                log(f"run {n + 1} of {args.runs}: {config}")
                results.append(one(config, Path(tmp) / f"{n}-{config}", agents, tokens,
                                   args.rate, args.seconds, args.drain))
    print(render(results, args, argv))
    return 0


def _each(values: list[float], fmt: str) -> str:
    return "; ".join(format(v, fmt) for v in values)


def render(results: list[Result], args: argparse.Namespace, argv: list[str] | None) -> str:
    command = " ".join([".venv/bin/python -m bench.remote_write",
                        *(sys.argv[1:] if argv is None else argv)])
    by: dict[str, list[Result]] = {}
    for r in results:
        by.setdefault(r.config, []).append(r)
    runs = max(len(v) for v in by.values())
    each = f"median of {runs} runs" if runs > 1 else "one run"
    name = {"off": "no remote write", "prometheus": "Prometheus 2.42 receiver",
            "victoria-metrics": "VictoriaMetrics 1.79"}
    lines = ["## Remote write at the ingest rate", "",
             f"`{command}`, {datetime.date.today()}, this {os.cpu_count()}-core machine: "
             f"{args.agents:,} agents' routine reports (host, latency, platforms) offered at "
             f"{args.rate:,.0f}/s for {args.seconds:g} s, open loop; the server pinned to CPU "
             f"{SERVER_CPU}, the load generator and the receiver to CPU {STORE_CPU}; "
             "remote_write at its defaults (500 reports a request). Each configuration with a "
             f"fresh server and database, in turn within each run; figures: the {each}, each "
             f"run's beside it. The writer is then given up to {args.drain:g} s to catch up.",
             "", "### Does the writer keep up?", "",
             "Ingest: reports answered per second, from the first due to the last answered "
             "(a server slower than the offered rate gets them late: open loop, latency from "
             f"when each was due, sending given up after {SEND_FACTOR * args.seconds:g} s). "
             "Written: the server's `wardready_server_remote_write_reports_total` and "
             "`_samples_total` over the same time.", "",
             "| receiver | answered | ingest reports/s | ingest p99 ms "
             "| written, reports/s | samples/s | pending at last answer "
             "| caught up (s after it) | written in all | failures; dropped "
             "| ingest reports/s, each run | written reports/s, each run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for config in [c for c in CONFIGS if c in by]:
        rs = by[config]
        ingest = [r.drive.rate for r in rs]
        ends = [r.at_drive_end() for r in rs]
        rates = [e.reports / e.t if e.t else math.nan for e in ends]
        samples = [e.samples / e.t if e.t else math.nan for e in ends]
        caught = [r.drained_at - r.drive_seconds if r.drained_at is not None else math.inf
                  for r in rs]
        writes = config != "off"
        lines.append("| " + " | ".join([
            name[config], f"{median([r.drive.requests for r in rs]):,.0f}/{rs[0].offered:,}",
            f"{median(ingest):,.0f}",
            f"{median([loadgen.summary(r.drive)['p99_ms'] for r in rs]):,.0f}",
            f"{median(rates):,.0f}" if writes else "—",
            f"{median(samples):,.0f}" if writes else "—",
            f"{median([e.pending for e in ends]):,.0f}" if writes else "—",
            ("—" if not writes else f"not within {args.drain:g}"
             if math.isinf(median(caught)) else f"{median(caught):.0f}"),
            f"{median([r.final.reports for r in rs]):,.0f}" if writes else "—",
            f"{median([r.final.failures for r in rs]):,.0f}; "
            f"{median([r.final.dropped for r in rs]):,.0f}" if writes else "—",
            _each(ingest, ",.0f"), _each(rates, ",.0f") if writes else "—"]) + " |")
    lines += ["", "Over time, the first run (the server's `_pending_reports`; stored = "
              "written + pending):", "",
              "| receiver | s | due so far | stored | written | pending "
              "| samples/s since last |", "|---|---:|---:|---:|---:|---:|---:|"]
    for config in [c for c in CONFIGS if c in by and c != "off"]:
        r = by[config][0]
        shown, last = [], None
        for p in r.polls:
            if last is None or p.t - last.t >= 14.5 or p is r.polls[-1]:
                shown.append((p, last))
                last = p
        for p, before in shown:
            rate = ((p.samples - before.samples) / (p.t - before.t)
                    if before is not None and p.t > before.t else math.nan)
            lines.append(f"| {name[config]} | {p.t:.0f} | "
                         f"{min(r.offered, round(p.t * args.rate)):,} | "
                         f"{p.reports + p.pending:,.0f} | {p.reports:,.0f} | "
                         f"{p.pending:,.0f} | {rate:,.0f} |")
    lines += ["", "### Server CPU per report", "",
              "| configuration | answered | CPU ms/report during load | p50 ms | p99 ms "
              "| server RSS MB | CPU ms/report, each run |", "|---|---:|---:|---:|---:|---:|---|"]
    for config in [c for c in CONFIGS if c in by]:
        rs = by[config]
        cpu = [r.cpu_drive / r.drive.requests * 1e3 if r.drive.requests else math.nan
               for r in rs]
        lines.append("| " + " | ".join([
            name[config], f"{median([r.drive.requests for r in rs]):,.0f}/{rs[0].offered:,}",
            f"{median(cpu):.2f}",
            f"{median([loadgen.summary(r.drive)['p50_ms'] for r in rs]):.1f}",
            f"{median([loadgen.summary(r.drive)['p99_ms'] for r in rs]):.1f}",
            f"{median([r.server_rss / 1e6 for r in rs]):,.0f}", _each(cpu, ".2f")]) + " |")
    lines += ["", "### Receivers, same samples", "",
              "Over the load and the catching up; the host check's samples counted back "
              "with `sum(count_over_time(" + HOST_SERIES + "[1h]))` against the reports "
              "the server had written.", "",
              "| receiver | samples written | CPU s | CPU µs/sample | RSS MB (peak) "
              "| disk MB | host samples held / written | CPU µs/sample, each run "
              "| peak RSS MB, each run |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for config in [c for c in CONFIGS if c in by and c != "off"]:
        rs = by[config]
        per = [r.receiver_cpu / r.final.samples * 1e6 if r.final.samples else math.nan
               for r in rs]
        lines.append("| " + " | ".join([
            name[config], f"{median([r.final.samples for r in rs]):,.0f}",
            f"{median([r.receiver_cpu for r in rs]):.1f}", f"{median(per):.1f}",
            f"{median([r.receiver_rss / 1e6 for r in rs]):,.0f} "
            f"({median([r.receiver_peak_rss / 1e6 for r in rs]):,.0f})",
            f"{median([r.receiver_disk / 1e6 for r in rs]):,.0f}",
            f"{median([r.stored_host_samples for r in rs]):,.0f} / "
            f"{median([r.final.reports for r in rs]):,.0f}",
            _each(per, ".1f"), _each([r.receiver_peak_rss / 1e6 for r in rs], ",.0f")]) + " |")
    lines += ["", "### /metrics once the measurements go by remote write", "",
              "The whole page, from here, after the load (the writer done or given up on), "
              "the receiver stopped.", "",
              "| configuration | MB | samples | samples/agent | first s | later s "
              "| later s, each run |", "|---|---:|---:|---:|---:|---:|---|"]
    for config in [c for c in CONFIGS if c in by]:
        rs = by[config]
        first = rs[0].scrape_first
        lines.append("| " + " | ".join([
            name[config], f"{first[1] / 1e6:.2f}", f"{first[2]:,}",
            f"{first[2] / args.agents:.1f}",
            f"{median([r.scrape_first[0] for r in rs]):.3f}",
            f"{median([r.scrape_later for r in rs]):.3f}",
            _each([r.scrape_later for r in rs], ".3f")]) + " |")
    polled = [p for r in results for p in r.polls]
    if polled:
        lines += ["", f"Every {POLL_SECONDS:g} s in every configuration, `{POLL_PAGE}` "
                  f"was read ({len(polled):,} reads in all): "
                  f"{median([p.scrape_bytes / 1e3 for p in polled]):.0f} kB and "
                  f"{median([p.scrape_seconds for p in polled]) * 1e3:.0f} ms a read "
                  "(median), counted in the server's CPU above."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
