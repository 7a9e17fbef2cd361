"""The demo: server, Prometheus and one agent on loopback, then the ward's state.

Run through `scripts/demo.sh`, which installs what it needs first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import yaml

from lab import REPO
from lab.stack import (
    SERVER_PORT,
    Process,
    StackError,
    http_get,
    issue_token,
    port_is_free,
    prometheus_query,
    start_agent,
    start_prometheus,
    start_server,
    wait_until,
)
from wardready.agent.plan import describe, fetch_plan, next_test
from wardready.checks.base import ServerLink
from wardready.core.errors import WardreadyError
from wardready.model.readiness import STATE_VALUE

WARD = "sai-gon"
HOST = "demo-pc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__)
    parser.add_argument("--dir", type=Path, default=REPO / ".demo",
                        help="where configs, logs and data go (default .demo/)")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--agent-port", type=int, default=9471)
    parser.add_argument("--once", action="store_true",
                        help="print the ward's state and stop, instead of running until Ctrl-C")
    args = parser.parse_args(argv)
    procs: list[Process] = []
    try:
        run(args, procs)
        if not args.once:
            print("\nRunning; press Ctrl-C to stop.", flush=True)
            while all(p.alive() for p in procs):
                time.sleep(1)
            dead = next(p for p in procs if not p.alive())
            raise StackError(f"{dead.name} exited:\n{dead.tail()}")
    except KeyboardInterrupt:
        print()
    except WardreadyError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()
        if procs:
            print(f"stopped {', '.join(p.name for p in procs)}; logs in {args.dir}")
    return 0


def run(args: argparse.Namespace, procs: list[Process]) -> None:
    work: Path = args.dir
    work.mkdir(parents=True, exist_ok=True)
    for port in (SERVER_PORT, args.prometheus_port, args.agent_port):
        if not port_is_free(port):
            raise StackError(f"port {port} on 127.0.0.1 is in use (another demo running?)")
    server_config = work / "server.yml"
    _write_yaml(server_config, {"listen_port": SERVER_PORT, "database": "wardready.db",
                                "inventory": str(REPO / "inventory.yml")})
    token_file = work / "agent.token"
    if not token_file.exists():
        token = issue_token(server_config, WARD, HOST)
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
    agent_config = work / "agent.yml"
    _write_yaml(agent_config, {
        "server_url": f"http://127.0.0.1:{SERVER_PORT}", "ward": WARD, "host": HOST,
        "token_file": "agent.token", "listen_port": args.agent_port,
        "inventory": str(REPO / "inventory.yml"), "start_jitter_seconds": 0,
        # Loopback only: the inventory's platform URLs are placeholders, so the demo probes
        # its own server as a stand-in platform.
        "checks": {"host": {"interval_seconds": 60},
                   "neighbours": {"enabled": False},  # a sweep would leave loopback
                   "platforms": {"targets": [{"id": "wardready-server",
                                              "url": f"http://127.0.0.1:{SERVER_PORT}/healthz"}]}},
    })

    step("server", f"http://127.0.0.1:{SERVER_PORT}")
    server = start_server(server_config, work)
    procs.append(server)
    wait_until("the server", lambda: http_get(f"http://127.0.0.1:{SERVER_PORT}/healthz"), 20,
               server)
    step("Prometheus", f"http://127.0.0.1:{args.prometheus_port}")
    procs.append(start_prometheus(work, args.prometheus_port))
    step("agent", f"ward {WARD}, host {HOST}, http://127.0.0.1:{args.agent_port}/metrics")
    agent = start_agent(agent_config, work)
    procs.append(agent)
    selector = f'ward="{WARD}",host="{HOST}"'
    step("waiting for the first report to reach Prometheus", "")
    wait_until("the agent's first report in Prometheus", lambda: prometheus_query(
        args.prometheus_port, f"wardready_media_udp_reachable{{{selector}}}"), 90, agent)
    # The throughput test follows the plan: the only PC of its ward, the demo's tests at once,
    # unless a quiet window of the plan holds it back (then the plan below says until when).
    agent_metrics = f"http://127.0.0.1:{args.agent_port}/metrics"
    wait_until("the first throughput test, or its deferral", lambda: prometheus_query(
        args.prometheus_port, f"wardready_bandwidth_bytes_per_second{{{selector}}}")
        or b"wardready_agent_throughput_deferrals_total{" in (http_get(agent_metrics) or b""),
        90, agent)
    print_state(args.prometheus_port)
    print()
    wait_until("the agent's plan", lambda: next_test("127.0.0.1", args.agent_port), 30, agent)
    print(describe(fetch_plan(ServerLink(f"http://127.0.0.1:{SERVER_PORT}",
                                         token_file.read_text().strip())),
                   next_test("127.0.0.1", args.agent_port)))
    print(f"""
Where to look:
  Prometheus    http://127.0.0.1:{args.prometheus_port}/graph?g0.expr=wardready_agent_last_report_timestamp_seconds
  server        http://127.0.0.1:{SERVER_PORT}/metrics
  agent         http://127.0.0.1:{args.agent_port}/metrics
  the plan      inventory.yml (measurement_plan); wardready-agent plan --config {agent_config}
  logs, data    {work}""", flush=True)


def print_state(prom: int) -> None:
    """The ward's host, equipment and link criteria, measured against required, as
    Prometheus sees them."""
    ward = f'ward="{WARD}"'
    rows = [
        ("PCs reporting", f"count(wardready_agent_last_report_timestamp_seconds{{{ward}}})",
         f"wardready_requirement_hosts{{{ward}}}", _count),
        ("CPU cores (fewest)", f"min(wardready_host_cpu_logical_cores{{{ward}}})",
         f"wardready_requirement_host_cpu_cores{{{ward}}}", _count),
        ("memory (least)", f"min(wardready_host_memory_total_bytes{{{ward}}})",
         f"wardready_requirement_host_memory_bytes{{{ward}}}", _gib),
        ("free disk (least)",
         f"min(max by (host) (wardready_host_disk_free_bytes{{{ward}}}))",
         f"wardready_requirement_host_disk_free_bytes{{{ward}}}", _gib),
    ]
    equipment = [  # summed over the ward's machines, as their agents counted them
        *((name, f'sum(wardready_peripherals{{{ward},kind="{kind}"}})',
           f"wardready_requirement_{required}{{{ward}}}", _count)
          for name, kind, required in (("webcams", "webcam", "cameras"),
                                       ("microphones", "microphone", "microphones"),
                                       ("speakers", "speaker", "speakers"),
                                       ("printers", "printer", "printers"),
                                       ("scanners", "scanner", "scanners"))),
        ("UPS", f'sum(wardready_host_power_supplies{{{ward},kind="ups"}})',
         f"wardready_requirement_ups{{{ward}}}", _count),
    ]
    rows += equipment
    link = [  # the most demanding machine's figure; lower is better for the last three
        ("download (slowest)",
         f'min(wardready_bandwidth_bytes_per_second{{{ward},direction="download"}})',
         f"wardready_requirement_download_bytes_per_second{{{ward}}}", _mbit),
        ("upload (slowest)",
         f'min(wardready_bandwidth_bytes_per_second{{{ward},direction="upload"}})',
         f"wardready_requirement_upload_bytes_per_second{{{ward}}}", _mbit),
        ("RTT median (worst)", f'max(wardready_latency_rtt_seconds{{{ward},statistic="median"}})',
         f"wardready_requirement_rtt_seconds{{{ward}}}", _ms),
        ("jitter (worst)", f"max(wardready_latency_jitter_seconds{{{ward}}})",
         f"wardready_requirement_jitter_seconds{{{ward}}}", _ms),
        ("loss (worst)", f"max(wardready_latency_loss_ratio{{{ward}}})",
         f"wardready_requirement_loss_ratio{{{ward}}}", _percent),
    ]
    info = prometheus_query(prom, f"wardready_ward_info{{{ward}}}")
    labels = info[0]["metric"] if info else {}
    print(f"\nWard {WARD} ({labels.get('name', '?')}, {labels.get('former_district', '?')}, "
          f"working group {labels.get('working_group', '?')}, profile {labels.get('profile')})")
    print(f"  {'criterion':<22}{'measured':>15}{'required':>14}  verdict")
    short = 0
    for i, (name, measured_q, required_q, fmt) in enumerate(rows + link):
        if i == len(rows) - len(equipment):
            print("  equipment (this machine's; a count the agent could not take shows '-')")
        if i == len(rows):
            print("  link (here: loopback to the local server; a ward measures its uplink)")
        measured, required = _scalar(prom, measured_q), _scalar(prom, required_q)
        higher_is_better = i < len(rows) + 2
        verdict = "?" if measured is None or required is None else (
            "ok" if (measured >= required if higher_is_better else measured <= required)
            else "SHORT")
        short += verdict == "SHORT"
        print(f"  {name:<22}{fmt(measured):>15}{fmt(required):>14}  {verdict}")
    udp = _scalar(prom, f"min(wardready_media_udp_reachable{{{ward}}})")
    mos = _scalar(prom, f"min(wardready_media_predicted_mos{{{ward}}})")
    call = "" if mos is None else f", predicted call quality MOS {mos:.2f} (ITU-T G.107)"
    print(f"  UDP media path: {'-' if udp is None else 'gets through' if udp else 'BLOCKED'}"
          + call)
    print(f"State: {'NOT READY' if short else 'criteria met'} "
          f"({short} of {len(rows) + len(link)} criteria short)")
    state = _scalar(prom, f"wardready_ward_readiness{{{ward}}}")
    names = {v: k for k, v in STATE_VALUE.items()}
    failing = sorted(r["metric"]["criterion"] for r in prometheus_query(
        prom, f"wardready_ward_criterion_verdict{{{ward}}} == 2"))
    print(f"Server's video-readiness verdict (wardready_ward_readiness): "
          f"{'-' if state is None else names.get(int(state), '?').upper()}"
          + (f"; failing: {', '.join(failing)}" if failing else ""))


def _scalar(prom: int, query: str) -> float | None:
    result = prometheus_query(prom, query)
    return float(result[0]["value"][1]) if result else None


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _mbit(value: float | None) -> str:
    return "-" if value is None else f"{value * 8 / 1e6:.1f} Mbit/s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"


def step(what: str, where: str) -> None:
    print(f"- {what}{': ' + where if where else ''}", flush=True)


def _write_yaml(path: Path, data: dict[str, object]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        sys.exit(main())
