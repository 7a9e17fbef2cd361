"""The agent's footprint beside Debian's prometheus-node-exporter: memory, its growth, CPU.

Starts a real server, a real agent and `prometheus-node-exporter`, all on loopback, with
every check at its defaults except those in SKIPPED_CHECKS, the LAN check reading the
neighbour table instead of sweeping, and the speed and media tests on short budgets (loopback
is fast). Three phases, each with fresh processes:

- idle (`--runs` times): the agent at its default intervals. Resident memory once its first
  report (every check, the speed and media tests included) is delivered (node-exporter's
  after its first scrape), then CPU over `--idle-seconds` while both are scraped every 15 s,
  as Prometheus would.
- in process (once): what the agent would hold had it run its isolated checks itself, not
  in a child: a process importing the agent runs the speed and media tests against the same
  server, then imports what the device poll and the ARP sweep import.
- rounds (once): every enabled check due every 0.5 s (the latency check with its default 20
  probes, spaced 10 ms instead of 200 ms), each round followed by one scrape of both /metrics.
  Resident memory before and after `--rounds` rounds; CPU per round (the agent) and per
  scrape (node-exporter).

    .venv/bin/python -m bench.agent_footprint            # about 8 minutes
    .venv/bin/python -m bench.agent_footprint --quick    # about 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import proc
from lab import stack

REPO = Path(__file__).resolve().parent.parent
MIB = 2**20
SKIPPED_CHECKS = ("platforms",)
"""It would resolve outside names."""
IN_PROCESS_CHECKS = ("host", "latency", "peripherals")
ISOLATED_CHECKS = ("bandwidth", "media", "devices", "neighbours")
"""Each run in a child process of its own (`wardready.agent.child`), at its default interval."""
SHORT_LINK_TESTS = {
    "bandwidth": {"max_seconds": 2, "max_bytes": 16 << 20, "warmup_seconds": 0.2,
                  "min_measure_seconds": 0.5},
    "media": {"duration_seconds": 2, "receive_grace_seconds": 0.5},
}
"""Loopback moves gigabits: a speed test on its default budgets would move 100 MiB a way."""
NEIGHBOURS_ON_LOOPBACK = {"method": "neighbour-table", "probe_ports": False}
"""The LAN check reads the OS neighbour table (and looks up vendors) but sends nothing: a
sweep or a port probe would leave loopback."""
FAST_INTERVAL = 0.5
"""Every check is due in every round (the scheduler coalesces what is due within 1 s)."""
FAST_LATENCY = {"probe_interval_seconds": 0.01, "probe_timeout_seconds": 0.5}
SCRAPE_SECONDS = 15.0
"""Prometheus's usual scrape interval."""
DEFAULT_ROUND_SECONDS = 300.0
"""The shortest default interval of the checks measured here (host, latency)."""
TARGET_RSS = 45e6
"""Issue 9: at most 45 MB resident, idle."""
TARGET_CPU_PERCENT = 1.0
"""Issue 9: under 1 % of one core on average between bandwidth tests."""
TARGET_GROWTH = 0.5 * MIB
"""What 'no growth' allows over the last half of the rounds: a few pages of heap either way."""


def log(message: str) -> None:
    print(f"[agent_footprint {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


@dataclass
class Stack:
    """A server, an agent and node-exporter on loopback, and how to reach them."""

    server: stack.Process
    agent: stack.Process
    exporter: stack.Process
    agent_port: int
    exporter_port: int
    server_url: str
    log_offset: int = 0
    rounds_seen: int = 0

    def agent_metrics(self) -> bytes:
        body = stack.http_get(f"http://127.0.0.1:{self.agent_port}/metrics", timeout=10)
        if body is None:
            raise stack.StackError("the agent's /metrics did not answer")
        return body

    def exporter_metrics(self) -> bytes:
        body = stack.http_get(f"http://127.0.0.1:{self.exporter_port}/metrics", timeout=10)
        if body is None:
            raise stack.StackError("node-exporter's /metrics did not answer")
        return body

    def health(self) -> dict[str, Any]:
        body = stack.http_get(f"http://127.0.0.1:{self.agent_port}/healthz")
        return dict(json.loads(body)) if body else {}

    def rounds(self) -> int:
        """Rounds the agent has logged so far: read from its log, which costs it nothing."""
        with self.agent.log.open("rb") as f:
            f.seek(self.log_offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.log_offset += len(complete)
        self.rounds_seen += complete.count(b" spooled: ")
        return self.rounds_seen


def node_exporter() -> str:
    found = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if found is None:
        raise stack.StackError("prometheus-node-exporter not found: install the Debian "
                               "package 'prometheus-node-exporter'")
    return found


@contextlib.contextmanager
def running(workdir: Path, fast: bool) -> Iterator[Stack]:
    """Server, agent (default intervals, or `fast`) and node-exporter; all stopped after."""
    port, agent_port, exporter_port = stack.free_port(), stack.free_port(), stack.free_port()
    server_config = workdir / "server.yml"
    server_config.write_text(yaml.safe_dump({
        "listen_port": port, "database": "server.db",
        "inventory": str(REPO / "inventory.yml")}))
    (workdir / "token").write_text(stack.issue_token(server_config, "sai-gon", "pc-01"))
    checks: dict[str, dict[str, Any]] = {name: {"enabled": False} for name in SKIPPED_CHECKS}
    checks["neighbours"] = dict(NEIGHBOURS_ON_LOOPBACK)
    if fast:  # the checks run in the agent's own process; children are measured apart
        for name in IN_PROCESS_CHECKS:
            checks.setdefault(name, {})["interval_seconds"] = FAST_INTERVAL
        checks["latency"].update(FAST_LATENCY)
    for name, short in SHORT_LINK_TESTS.items():
        checks.setdefault(name, {}).update(short)
    agent_config = workdir / "agent.yml"
    agent_config.write_text(yaml.safe_dump({
        "server_url": f"http://127.0.0.1:{port}", "ward": "sai-gon", "host": "pc-01",
        "token_file": "token", "listen_port": agent_port, "spool_path": "spool",
        "start_jitter_seconds": 0, "checks": checks}))
    with contextlib.ExitStack() as cleanup:
        server = stack.start_server(server_config, workdir)
        cleanup.callback(server.stop)
        exporter = stack.Process("node-exporter", [
            node_exporter(), f"--web.listen-address=127.0.0.1:{exporter_port}",
            "--log.level=warn"], workdir / "node-exporter.log")
        cleanup.callback(exporter.stop)
        agent = stack.start_agent(agent_config, workdir)
        cleanup.callback(agent.stop)
        running = Stack(server, agent, exporter, agent_port, exporter_port,
                        f"http://127.0.0.1:{port}")
        stack.wait_until("node-exporter", lambda: stack.http_get(
            f"http://127.0.0.1:{exporter_port}/metrics"), 20, exporter)
        stack.wait_until("the agent", lambda: stack.http_get(
            f"http://127.0.0.1:{agent_port}/healthz"), 30, agent)
        # Its first round's report, not the continuous probe's (which may come first: a
        # failed interval, while the server was still starting).
        stack.wait_until("the agent's first round delivered", lambda: (
            running.rounds() >= 1 and running.health().get("pending") == 0), 60, agent)
        # And the plan's first throughput test (the ward's only PC tests at once): it runs
        # apart from the rounds, and its child's CPU would land in the idle window.
        stack.wait_until("the plan's first throughput test delivered", lambda: (
            b'wardready_agent_check_success{check="bandwidth"}' in running.agent_metrics()
            and running.health().get("pending") == 0), 120, agent)
        yield running


@dataclass
class Idle:
    agent_rss: int
    exporter_rss: int
    agent_cpu_percent: float
    exporter_cpu_percent: float
    latency_method: str


def idle_run(workdir: Path, seconds: float) -> Idle:
    """Memory after start, then CPU over `seconds` of scrapes every 15 s."""
    with running(workdir, fast=False) as s:
        s.exporter_metrics()  # node-exporter collects on scrape: its first one, like ours
        time.sleep(1.0)  # let the delivery's connection and the first scrape settle
        agent_rss = proc.rss_bytes(s.agent.popen.pid)
        exporter_rss = proc.rss_bytes(s.exporter.popen.pid)
        method = re.search(rb'wardready_latency_probes_sent\{method="([a-z-]+)"',
                           s.agent_metrics())
        log(f"idle: agent {agent_rss / MIB:.1f} MiB, node-exporter {exporter_rss / MIB:.1f} MiB;"
            f" {seconds:g} s of scrapes every {SCRAPE_SECONDS:g} s")
        start = time.monotonic()
        agent_cpu = proc.cpu_seconds(s.agent.popen.pid, children=True)
        exporter_cpu = proc.cpu_seconds(s.exporter.popen.pid, children=True)
        scrape_at = 0.0
        while (now := time.monotonic() - start) < seconds:  # bounded by the clock
            if now >= scrape_at:
                s.agent_metrics()
                s.exporter_metrics()
                scrape_at += SCRAPE_SECONDS
            time.sleep(max(0.0, min(scrape_at, seconds) - (time.monotonic() - start)))
        elapsed = time.monotonic() - start
        agent_cpu = proc.cpu_seconds(s.agent.popen.pid, children=True) - agent_cpu
        exporter_cpu = proc.cpu_seconds(s.exporter.popen.pid, children=True) - exporter_cpu
        if s.rounds() > 1:
            log("warning: the agent ran a round during the idle window")
    return Idle(agent_rss, exporter_rss, 100 * agent_cpu / elapsed,
                100 * exporter_cpu / elapsed, method[1].decode() if method else "?")


IN_PROCESS = r"""
import asyncio, json, sys
import wardready.agent.cli, wardready.agent.agent
from wardready.agent.agent import run_check
from wardready.checks import REGISTRY
from wardready.checks.base import Context, ServerLink

def rss():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                if line.startswith("VmRSS:"))

steps = [("the agent's imports", rss())]
context = Context(server=ServerLink(sys.argv[1], open(sys.argv[2]).read().strip()))
for name, config in json.loads(sys.argv[3]).items():
    spec = REGISTRY[name]
    outcome = asyncio.run(run_check(spec, spec.config_model.model_validate(config), context))
    if not outcome.ok:
        sys.exit(f"{name}: {outcome.error}")
    steps.append((f"{name} check run in process", rss()))
from netmiko import ConnectHandler  # what the devices check imports for its first device
from ntc_templates.parse import parse_output
steps.append(("the device poll's imports (netmiko, ntc-templates)", rss()))
from scapy.layers.l2 import ARP, Ether  # what the ARP sweep imports
from scapy.sendrecv import srp
steps.append(("the ARP sweep's imports (scapy layers)", rss()))
print(json.dumps(steps))
"""
CHILD_RUNS = 3


@dataclass
class InProcess:
    steps: list[tuple[str, int]]
    """(what was done, RSS after it), cumulative."""
    child_cpu_seconds: dict[str, float]
    """CPU of one child process (start, imports, the check), by isolated check."""


def in_process_run(workdir: Path) -> InProcess:
    """What the isolated checks would leave in the agent, and what a child costs instead."""
    with running(workdir, fast=False) as s:
        out = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, s.server_url, str(workdir / "token"),
             json.dumps(SHORT_LINK_TESTS)], capture_output=True, text=True, timeout=120,
            check=False)
        if out.returncode != 0:
            raise stack.StackError(f"in-process run failed: {out.stderr.strip()[-2000:]}")
        steps = [(what, int(rss)) for what, rss in json.loads(out.stdout)]
        server = {"url": s.server_url, "token": (workdir / "token").read_text().strip(),
                  "ca_file": None}
        configs = {**SHORT_LINK_TESTS, "neighbours": NEIGHBOURS_ON_LOOPBACK, "devices": {}}
        cpu = {}
        for name in ISOLATED_CHECKS:  # as the agent runs them: python -m wardready.agent.child
            request = json.dumps({"check": name, "config": configs[name],
                                  "context": {"server": server}})
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            for _ in range(CHILD_RUNS):
                answer = subprocess.run([sys.executable, "-m", "wardready.agent.child"],
                                        input=request, text=True, capture_output=True,
                                        timeout=60, check=True)
                if "result" not in json.loads(answer.stdout):
                    raise stack.StackError(f"{name} in a child: {answer.stdout[:500]}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name] = (after.ru_utime + after.ru_stime - before.ru_utime
                         - before.ru_stime) / CHILD_RUNS
    return InProcess(steps, cpu)


@dataclass
class Rounds:
    rounds: int
    agent_rss: list[tuple[int, int]] = field(default_factory=list)
    """(rounds done, RSS) samples, the first before the rounds counted here."""
    exporter_rss: list[tuple[int, int]] = field(default_factory=list)
    agent_cpu_per_round: float = 0.0
    exporter_cpu_per_scrape: float = 0.0
    seconds: float = 0.0


def rounds_run(workdir: Path, rounds: int) -> Rounds:
    """RSS before and after `rounds` back-to-back rounds, each followed by one scrape of both."""
    out = Rounds(rounds)
    samples = max(1, rounds // 10)
    with running(workdir, fast=True) as s:
        s.exporter_metrics()
        base = s.rounds()
        apid, epid = s.agent.popen.pid, s.exporter.popen.pid
        out.agent_rss.append((0, proc.rss_bytes(apid)))
        out.exporter_rss.append((0, proc.rss_bytes(epid)))
        start = time.monotonic()
        agent_cpu = proc.cpu_seconds(apid, children=True)
        exporter_cpu = proc.cpu_seconds(epid, children=True)
        scraped = 0
        deadline = start + 60 + 5 * rounds
        while scraped < rounds:
            if time.monotonic() > deadline or not s.agent.alive():
                raise stack.StackError(f"{scraped} of {rounds} rounds in time:\n{s.agent.tail()}")
            done = s.rounds() - base
            while scraped < min(done, rounds):
                s.agent_metrics()
                s.exporter_metrics()
                scraped += 1
                if scraped % samples == 0:
                    out.agent_rss.append((scraped, proc.rss_bytes(apid)))
                    out.exporter_rss.append((scraped, proc.rss_bytes(epid)))
                    if scraped % (samples * 5) == 0:
                        log(f"rounds: {scraped}/{rounds}, agent "
                            f"{out.agent_rss[-1][1] / MIB:.1f} MiB")
            time.sleep(0.02)
        agent_cpu = proc.cpu_seconds(apid, children=True) - agent_cpu
        exporter_cpu = proc.cpu_seconds(epid, children=True) - exporter_cpu
        out.seconds = time.monotonic() - start
        out.agent_cpu_per_round = agent_cpu / (s.rounds() - base)
        out.exporter_cpu_per_scrape = exporter_cpu / scraped
    return out


def growth(samples: list[tuple[int, int]], half: bool = False) -> int:
    """RSS after the rounds minus before them (or minus at half-way, past any warm-up)."""
    rounds = samples[-1][0]
    first = next(r for n, r in samples if n >= rounds // 2) if half else samples[0][1]
    return samples[-1][1] - first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="idle runs (default 3)")
    parser.add_argument("--rounds", type=int, default=500, help="accelerated rounds (500)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="idle window, scraped every 15 s (default 60)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 idle run of 15 s, 20 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.rounds, args.idle_seconds = 1, 20, 15.0
    if args.runs < 1 or args.rounds < 2 or args.idle_seconds <= 0:
        parser.error("--runs must be at least 1, --rounds at least 2, --idle-seconds positive")
    idles = []
    for run in range(args.runs):
        log(f"idle run {run + 1} of {args.runs}")
        with tempfile.TemporaryDirectory(prefix="wardready-footprint-") as tmp:
            idles.append(idle_run(Path(tmp), args.idle_seconds))
    log("the isolated checks in process")
    with tempfile.TemporaryDirectory(prefix="wardready-footprint-") as tmp:
        inside = in_process_run(Path(tmp))
    log(f"{args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="wardready-footprint-") as tmp:
        rounds = rounds_run(Path(tmp), args.rounds)
    print(render(idles, rounds, inside, args.idle_seconds,
                 sys.argv[1:] if argv is None else argv))
    return 0


def render(idles: list[Idle], rounds: Rounds, inside: InProcess, idle_seconds: float,
           argv: list[str]) -> str:
    """The Markdown section."""
    def med(values: list[float]) -> float:
        return statistics.median(values)

    def each(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values) if len(values) > 1 else ""

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}" if b > 0 else "-"

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    agent_rss = [i.agent_rss / MIB for i in idles]
    exporter_rss = [i.exporter_rss / MIB for i in idles]
    agent_cpu = [i.agent_cpu_percent for i in idles]
    exporter_cpu = [i.exporter_cpu_percent for i in idles]
    n = rounds.rounds
    agent_growth, exporter_growth = growth(rounds.agent_rss), growth(rounds.exporter_rss)
    agent_late, exporter_late = (growth(rounds.agent_rss, half=True),
                                 growth(rounds.exporter_rss, half=True))
    per_round_ms = 1000 * rounds.agent_cpu_per_round
    per_scrape_ms = 1000 * rounds.exporter_cpu_per_scrape
    from wardready.checks import REGISTRY

    intervals = {n: REGISTRY[n].config_model().interval_seconds for n in ISOLATED_CHECKS}
    children = sum(inside.child_cpu_seconds[n] / intervals[n] for n in ISOLATED_CHECKS)
    average = (med(agent_cpu) + 100 * rounds.agent_cpu_per_round / DEFAULT_ROUND_SECONDS
               + 100 * children)
    methods = sorted({i.latency_method for i in idles})
    command = " ".join([".venv/bin/python -m bench.agent_footprint", *argv])
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    target_mib = TARGET_RSS / MIB
    rows = [
        ("RSS after start, MiB", f"{med(agent_rss):.1f}", f"{med(exporter_rss):.1f}",
         ratio(med(agent_rss), med(exporter_rss)),
         f"≤ {target_mib:.1f} (45 MB)", met(med(agent_rss) <= target_mib),
         each(agent_rss, ".1f")),
        (f"RSS after {n} rounds, MiB", f"{rounds.agent_rss[-1][1] / MIB:.1f}",
         f"{rounds.exporter_rss[-1][1] / MIB:.1f}",
         ratio(rounds.agent_rss[-1][1], rounds.exporter_rss[-1][1]),
         f"≤ {target_mib:.1f} (45 MB)", met(rounds.agent_rss[-1][1] / MIB <= target_mib), ""),
        (f"RSS growth over {n} rounds, MiB", f"{agent_growth / MIB:+.2f}",
         f"{exporter_growth / MIB:+.2f}", "", "", "", ""),
        (f"RSS growth over the last {n - n // 2} rounds, MiB", f"{agent_late / MIB:+.2f}",
         f"{exporter_late / MIB:+.2f}", "", f"≤ {TARGET_GROWTH / MIB:.1f}",
         met(agent_late <= TARGET_GROWTH), ""),
        ("CPU per round (node-exporter: per scrape), ms", f"{per_round_ms:.1f}",
         f"{per_scrape_ms:.1f}", ratio(per_round_ms, per_scrape_ms), "", "", ""),
        (f"CPU between rounds, scraped every {SCRAPE_SECONDS:g} s, % of one core",
         f"{med(agent_cpu):.3f}", f"{med(exporter_cpu):.3f}",
         ratio(med(agent_cpu), med(exporter_cpu)), f"< {TARGET_CPU_PERCENT:g}",
         met(med(agent_cpu) < TARGET_CPU_PERCENT), each(agent_cpu, ".3f")),
        (f"CPU on average: a round every {DEFAULT_ROUND_SECONDS:g} s, the children at their "
         "intervals, % of one core",
         f"{average:.3f}", "", "", f"< {TARGET_CPU_PERCENT:g}",
         met(average < TARGET_CPU_PERCENT), "derived"),
    ]
    starts = f"{len(idles)} fresh starts" if len(idles) > 1 else "one start"
    trend = ", ".join(f"{r / MIB:.1f}" for _, r in rounds.agent_rss)
    step = rounds.agent_rss[1][0] if len(rounds.agent_rss) > 1 else n
    lines = [
        "## Agent footprint", "",
        f"`{command}`, {datetime.date.today()}, this {os.cpu_count()}-core machine "
        f"({model}), as {'root' if os.geteuid() == 0 else 'an unprivileged user'}.", "",
        "A real server, agent and Debian's `prometheus-node-exporter` run side by side on "
        "loopback. The agent runs every check at its defaults except "
        f"{', '.join(SKIPPED_CHECKS)} (it would resolve outside names), the LAN check, "
        "which reads the neighbour table instead of sweeping, and the speed and media tests, "
        "against the server on short budgets (2 s, 16 MiB a way; 2 s of UDP); latency by "
        f"{', '.join(methods)}. The agent runs bandwidth, media, devices and neighbours in a "
        "child process each, and the continuous probe beside its rounds. *RSS after start*: "
        "VmRSS once the agent's first round (every scheduled check, the speed and media "
        "tests included) is delivered and node-exporter has "
        "answered its first scrape (median of "
        f"{starts}). *CPU between rounds*: user + system time over {idle_seconds:g} s at the "
        f"default intervals (no round falls in them), both scraped every {SCRAPE_SECONDS:g} "
        f"s. *Rounds*: in one further start, every check due every {FAST_INTERVAL:g} s "
        f"(the checks the agent runs itself: {', '.join(IN_PROCESS_CHECKS)}; latency: its "
        "default 20 probes, spaced 10 ms; the isolated checks at their default intervals), "
        "each round followed by one scrape of both; growth is RSS after the rounds minus "
        "before, and over their last half (past any warm-up); CPU per round includes the "
        "report's delivery and the scrape. CPU comes from /proc in 10 ms ticks. *On "
        "average*: the idle rate, plus one such round every "
        f"{DEFAULT_ROUND_SECONDS:g} s (the shortest default interval: an upper bound), plus "
        "each isolated check's child process (below) at its default interval.", "",
        "| measure | agent | node-exporter | agent / node-exporter | target (agent) | met "
        "| runs |",
        "|---|---:|---:|---:|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows), "",
        f"{n} rounds took {rounds.seconds:.0f} s. Agent RSS every {step} rounds, MiB: "
        f"{trend}.", "",
        "What the agent would hold had it run its isolated checks itself: one process "
        "importing the agent runs the same speed and media tests against the same server, "
        "then imports what the device poll and the ARP sweep import (cumulative RSS). "
        "Instead each runs in a child process whose memory goes back when it ends; its "
        f"CPU (start, imports, the check; mean of {CHILD_RUNS} runs of `python -m "
        "wardready.agent.child` with the same configs; devices with no device to poll): "
        + ", ".join(f"{n} {1000 * inside.child_cpu_seconds[n]:.0f} ms every "
                    f"{intervals[n]:g} s" for n in ISOLATED_CHECKS)
        + f", {100 * children:.3f} % of one core in all.", "",
        "| after | RSS, MiB | added, MiB |",
        "|---|---:|---:|",
        *(f"| {what} | {rss / MIB:.1f} | "
          f"{'' if i == 0 else format((rss - inside.steps[i - 1][1]) / MIB, '+.1f')} |"
          for i, (what, rss) in enumerate(inside.steps)),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
