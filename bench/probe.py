"""The continuous probe (`checks.probe`): what it costs in bytes at its defaults, and how well
its loss agrees with what the kernel dropped, on emulated ward links (lab/netlab.py).

- Cost: a clean link; a real server in the city namespace over HTTPS (a trustme CA), the
  real agent (`wardready-agent run`) in the ward namespace with only the probe enabled, at
  its defaults (1 probe a second, 44-byte payload, 60-s intervals). Once its first report is
  stored, the router's nftables counters (UDP and TCP each way, whole IP packets) and the
  ward interface's counters (Ethernet frames) are read, and again when `--intervals` more
  reports are; bytes per hour are that difference scaled to an hour. Beside them: what the
  probe itself counted in those reports (UDP with IP/UDP headers, HTTP before TLS).
- Loss: 3 % random loss each way; `--runs` times 3,600 probes (an hour's worth) at 200 a
  second over four sessions, one process as the agent runs them; the probe's loss against
  the drops the loss rule counted both ways.

    sudo .venv/bin/python -m bench.probe            # about 7 minutes
    sudo .venv/bin/python -m bench.probe --quick    # about 3 minutes

Needs root (network namespaces) and the Debian packages scripts/setup.sh installs.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import yaml

from lab import netlab
from lab.netlab import TOWARD_CITY, TOWARD_WARD, LinkSpec, WardLink
from wardready.checks import REGISTRY, probe

SERVER_PORT, ECHO_PORT = 8470, 8471
LOSS_PERCENT = 3.0
PROBES, RATE, SESSIONS = 3600, 200.0, 4

def log(message: str) -> None:
    print(f"[probe {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- cost ----------------------------------------------------------------------------------

@dataclass
class Snapshot:
    at: float
    nft: dict[str, tuple[int, int]]
    interface: tuple[int, int, int, int]
    """The ward's eth0: tx bytes, tx packets, rx bytes, rx packets (Ethernet frames)."""
    reports: list[dict[str, Any]]


def interface_counters(link: WardLink) -> tuple[int, int, int, int]:
    out = link.run(link.ward_ns, ["ip", "-s", "-j", "link", "show", "eth0"], timeout=10)
    stats = json.loads(out.stdout)[0]["stats64"]
    return (stats["tx"]["bytes"], stats["tx"]["packets"], stats["rx"]["bytes"],
            stats["rx"]["packets"])


def probe_reports(database: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT body FROM reports ORDER BY received_at").fetchall()
    return [r for r in (json.loads(body) for (body,) in rows)
            if r["outcomes"] and r["outcomes"][0]["check"] == "probe"]


def snapshot(link: WardLink, database: Path) -> Snapshot:
    return Snapshot(time.monotonic(), link.counters(), interface_counters(link),
                    probe_reports(database))


def wait_reports(database: Path, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(probe_reports(database)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} probe reports after {timeout:g} s")
        time.sleep(0.05)


def cost(intervals: int) -> list[str]:
    """Bytes per hour of the agent's probe at its defaults, by the kernel's counters."""
    defaults = probe.Config()
    with tempfile.TemporaryDirectory() as tmp, WardLink(LinkSpec()) as link:
        work = Path(tmp)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        issued = ca.issue_cert(link.city_ip)
        issued.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
        issued.private_key_pem.write_to_path(str(work / "key.pem"))
        token = netlab.start_city_server(
            link, work, SERVER_PORT, ECHO_PORT,
            settings={"tls": {"cert_file": "cert.pem", "key_file": "key.pem"}})
        for way, dev in (("up", TOWARD_CITY), ("down", TOWARD_WARD)):
            for proto in ("udp", "tcp"):
                link.add_counter(f"{proto}-{way}", f'oifname "{dev}" meta l4proto {proto}')
        link.add_counter("tcp-connections", f'oifname "{TOWARD_CITY}" tcp flags syn')
        checks: dict[str, Any] = {n: {"enabled": False} for n in REGISTRY if n != "probe"}
        (work / "agent.yml").write_text(yaml.safe_dump({
            "server_url": f"https://{link.city_ip}:{SERVER_PORT}", "ward": "sai-gon",
            "host": "bench-pc", "token_file": str(token), "ca_file": "ca.pem",
            "listen_port": 9471, "spool_path": "spool", "start_jitter_seconds": 0,
            "checks": checks}))
        agent_log = (work / "agent.log").open("wb")
        link.popen(link.ward_ns, [str(Path(sys.executable).parent / "wardready-agent"), "run",
                                  "--config", str(work / "agent.yml")],
                   stdout=agent_log, stderr=agent_log, cwd=work)
        database = work / "city.db"
        per_interval = defaults.interval_seconds + 30
        log(f"agent started; waiting for its first probe report, then {intervals} more")
        wait_reports(database, 1, per_interval)
        start = snapshot(link, database)
        wait_reports(database, len(start.reports) + intervals, (intervals + 1) * per_interval)
        end = snapshot(link, database)
        agent_log.close()
    return cost_rows(start, end, defaults)


def cost_rows(start: Snapshot, end: Snapshot, defaults: probe.Config) -> list[str]:
    seconds = end.at - start.at
    hour = 3600 / seconds

    def nft(name: str) -> tuple[int, int]:
        return (end.nft[name][0] - start.nft[name][0], end.nft[name][1] - start.nft[name][1])

    udp = [nft("udp-up"), nft("udp-down")]
    connections = nft("tcp-connections")[0]
    tcp = [nft("tcp-up"), nft("tcp-down")]
    tx, tx_packets, rx, rx_packets = (e - s for e, s in zip(end.interface, start.interface,
                                                            strict=True))
    new = end.reports[len(start.reports):]
    results = [probe.Result.model_validate(r["outcomes"][0]["result"]) for r in new]
    sent = sum(r.packets_sent for r in results)
    own_udp = sum(r.udp_sent_bytes + r.udp_received_bytes for r in results)
    own_http = sum(r.http_sent_bytes + r.http_received_bytes for r in results)
    report_bytes = sum(len(json.dumps(r)) for r in new)
    ip_total = sum(b for _, b in udp + tcp)
    frames = tx + rx

    def kib_h(octets: float) -> str:
        return f"{octets * hour / 1024:,.0f}"

    rows = [
        f"Cost at the defaults ({defaults.packet_rate:g} probe/s, {defaults.packet_bytes}-byte "
        f"payload, {defaults.interval_seconds:g}-s intervals), HTTPS, a clean link: "
        f"{len(new)} intervals, {seconds:.1f} s, {sent} probes "
        f"({sent * hour:,.0f} an hour).", "",
        "| what | counted by | packets | bytes in the window | KiB an hour |",
        "|---|---|---:|---:|---:|",
        f"| UDP probes and echoes (IP packets) | kernel (nftables, router) | "
        f"{udp[0][0] + udp[1][0]:,} | {udp[0][1] + udp[1][1]:,} | "
        f"{kib_h(udp[0][1] + udp[1][1])} |",
        f"| UDP probes and echoes (IP packets) | the probe's own count | | {own_udp:,} | "
        f"{kib_h(own_udp)} |",
        f"| TCP: session requests and report delivery, TLS, TCP/IP headers, ACKs | kernel "
        f"(nftables, router) | {tcp[0][0] + tcp[1][0]:,} | {tcp[0][1] + tcp[1][1]:,} | "
        f"{kib_h(tcp[0][1] + tcp[1][1])} |",
        f"| TCP connections opened (SYN) | kernel (nftables, router) | {connections} | | |",
        f"| HTTP session requests before TLS | the probe's own count | | {own_http:,} | "
        f"{kib_h(own_http)} |",
        f"| report bodies (JSON) | the stored reports | | {report_bytes:,} | "
        f"{kib_h(report_bytes)} |",
        f"| everything, IP packets | kernel (nftables, router) | "
        f"{sum(p for p, _ in udp + tcp):,} | {ip_total:,} | {kib_h(ip_total)} |",
        f"| everything, Ethernet frames | kernel (ward eth0) | {tx_packets + rx_packets:,} "
        f"| {frames:,} | {kib_h(frames)} |",
    ]
    if udp[0][0] != sent or udp[1][0] != sum(r.packets_received for r in results):
        rows.append(f"\nWarning: the kernel counted {udp[0][0]} probes and {udp[1][0]} echoes; "
                    f"the reports {sent} and {sum(r.packets_received for r in results)}.")
    log(f"cost: {ip_total * hour / 1e6:.3f} MB an hour (IP), {frames * hour / 1e6:.3f} "
        "MB (frames)")
    return rows


# -- loss accuracy -------------------------------------------------------------------------

@dataclass
class LossRun:
    sent: int
    lost: int
    dropped_up: int
    dropped_down: int
    seconds: float

    @property
    def probe(self) -> float:
        return self.lost / self.sent

    @property
    def kernel(self) -> float:
        return (self.dropped_up + self.dropped_down) / self.sent


def loss_run() -> LossRun:
    config = probe.Config(interval_seconds=PROBES / SESSIONS / RATE, packet_rate=RATE,
                          probe_timeout_seconds=1.5, timeout_seconds=60)
    with tempfile.TemporaryDirectory() as tmp, \
            WardLink(LinkSpec(loss_percent=LOSS_PERCENT)) as link:
        token = netlab.start_city_server(link, Path(tmp), SERVER_PORT, ECHO_PORT,
                                         echo={"max_packet_rate": 2 * RATE})
        for way, match in (("up", f"udp dport {ECHO_PORT}"), ("down", f"udp sport {ECHO_PORT}")):
            link.add_counter(f"{way}-in", match)
            link.add_counter(f"{way}-out", match, after_loss=True)
        t0 = time.monotonic()
        results = netlab.probe_intervals(link, config, SESSIONS, token, SERVER_PORT)
        seconds = time.monotonic() - t0
        kernel = {name: packets for name, (packets, _) in link.counters().items()}
    run = LossRun(sum(r.packets_sent for r in results), sum(r.packets_lost for r in results),
                  kernel["up-in"] - kernel["up-out"], kernel["down-in"] - kernel["down-out"],
                  seconds)
    log(f"loss: probe {run.probe:.4%}, kernel {run.kernel:.4%} ({seconds:.1f} s)")
    return run


def loss_rows(runs: list[LossRun]) -> list[str]:
    truth = netlab.round_trip_loss(LOSS_PERCENT)
    rows = [f"Loss accuracy: {LOSS_PERCENT:g} % random loss each way (round trip "
            f"{truth:.2%} configured); each run {PROBES:,} probes, {RATE:g}/s in {SESSIONS} "
            "sessions.", "",
            "| run | probes | lost (probe) | dropped up + down (kernel) | probe | kernel | "
            "probe - kernel | probe - configured | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(runs, 1):
        rows.append(f"| {i} | {r.sent:,} | {r.lost} | {r.dropped_up} + {r.dropped_down} | "
                    f"{r.probe:.3%} | {r.kernel:.3%} | {100 * (r.probe - r.kernel):+.3f} pp | "
                    f"{100 * (r.probe - truth):+.2f} pp | {r.seconds:.1f} |")
    spread = statistics.pstdev(r.probe for r in runs) if len(runs) > 1 else 0.0
    rows += ["", f"Binomial standard deviation of {PROBES:,} probes at {truth:.2%}: "
             f"{100 * (truth * (1 - truth) / PROBES) ** 0.5:.2f} pp; across these runs: "
             f"{100 * spread:.2f} pp."]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 intervals, 1 loss run")
    parser.add_argument("--intervals", type=int, help="intervals measured for cost (5)")
    parser.add_argument("--runs", type=int, help="loss runs (3)")
    args = parser.parse_args(argv)
    reason = netlab.require_netlab()
    if reason:
        print(f"bench.probe: {reason}", file=sys.stderr)
        return 1
    intervals = args.intervals or (2 if args.quick else 5)
    runs = args.runs or (1 if args.quick else 3)
    t0 = time.monotonic()
    lines = ["## Continuous probe: cost and loss accuracy", "",
             f"`sudo .venv/bin/python -m bench.probe` ({time.strftime('%Y-%m-%d')}).", ""]
    lines += [*cost(intervals), ""]
    lines += loss_rows([loss_run() for _ in range(runs)])
    print("\n".join(lines))
    log(f"took {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"bench.probe: {exc}: {exc.stderr}", file=sys.stderr)
        sys.exit(1)
