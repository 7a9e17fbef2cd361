"""Link-measurement accuracy and cost against ground truth, on emulated ward links.

For each link (2, 20, 100 Mbit/s; clean, and with 2 % loss each way plus 40 ms ± 10 ms delay)
it builds a ward — router — city set of network namespaces (lab/netlab.py), runs a real
wardready server in the city, runs wardready's checks in the ward
(`python -m wardready.checks ...`), and measures the same link with iperf3 (TCP, 4 streams,
the default 10 s) and ping. It prints one Markdown table per measured quantity: configured
truth, wardready, the reference tool, errors, bytes and seconds spent.

    sudo .venv/bin/python -m bench.links            # all six links, about 8 minutes
    sudo .venv/bin/python -m bench.links --rates 20 --impaired no

Needs root and the Debian packages scripts/setup.sh installs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab import netlab

REPO = Path(__file__).resolve().parent.parent
SERVER_PORT, ECHO_PORT, IPERF_PORT = 8470, 8471, 5201
STREAMS = 4
PROBES, PROBE_INTERVAL = 400, 0.025
"""Spaced 25 ms (more than twice the jitter), so the jitter truth is 2j/3."""


@dataclass
class Row:
    link: str
    quantity: str
    truth: float | None
    wardready: float | None
    reference: float | None
    unit: str
    extra: str = ""

    def cells(self) -> list[str]:
        def fmt(v: float | None) -> str:
            return "—" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"

        def err(a: float | None, b: float | None, relative: bool) -> str:
            if a is None or b is None or (relative and b == 0):
                return "—"
            return f"{100 * (a - b) / b:+.1f} %" if relative else f"{a - b:+.2f}"
        relative = self.unit == "Mbit/s"
        return [self.link, self.quantity, fmt(self.truth), fmt(self.wardready),
                fmt(self.reference), err(self.wardready, self.truth, relative),
                err(self.wardready, self.reference, relative), self.unit, self.extra]


def iperf3(link: netlab.WardLink, download: bool) -> tuple[float, int, float]:
    """iperf3's default 10 s test with 4 streams: (goodput Mbit/s after its first second,
    bytes moved in all 11 s, seconds)."""
    server = link.popen(link.city_ns, ["iperf3", "-s", "-1", "-B", link.city_ip,
                                       "-p", str(IPERF_PORT)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        netlab.wait_listening(link, link.city_ns, IPERF_PORT)
        t0 = time.monotonic()
        out = link.run(link.ward_ns, ["iperf3", "-c", link.city_ip, "-p", str(IPERF_PORT),
                                      "-t", "10", "-O", "1", "-P", str(STREAMS), "-J",
                                      *(["-R"] if download else [])], timeout=60)
        seconds = time.monotonic() - t0
        result = json.loads(out.stdout)
        if "error" in result:
            raise RuntimeError(f"iperf3: {result['error']}")
        moved = sum(i["sum"]["bytes"] for i in result["intervals"])  # omitted second included
        return result["end"]["sum_received"]["bits_per_second"] / 1e6, moved, seconds
    finally:
        server.terminate()
        server.wait(timeout=10)


def measure(spec: netlab.LinkSpec, label: str, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    with netlab.WardLink(spec, delayer_seed=1) as link:
        token = netlab.start_city_server(link, workdir, SERVER_PORT, ECHO_PORT)
        base = netlab.ping(link, 20, 0.05).median_ms if spec.delay_ms == 0 else None
        if base is None:  # the undelayed RTT of this link, measured without the delay
            link.reconfigure(netlab.LinkSpec(rate_mbit=spec.rate_mbit))
            base = netlab.ping(link, 20, 0.05).median_ms
            link.reconfigure(spec)
        truth = netlab.truth(spec, base_rtt_ms=base, probe_interval_ms=PROBE_INTERVAL * 1000)
        rows += bandwidth_rows(link, label, truth, token)
        rows += latency_rows(link, label, truth, token)
        rows += media_rows(link, label, spec, token)
    return rows


def bandwidth_rows(link: netlab.WardLink, label: str, truth: netlab.LinkTruth,
                   token: Path) -> list[Row]:
    t0 = time.monotonic()
    ours = netlab.run_check(link, "bandwidth", {"streams": STREAMS}, token, timeout=120)
    seconds = time.monotonic() - t0
    rows = []
    for direction in ours["directions"]:
        download = direction["direction"] == "download"
        ref_rate, ref_bytes, ref_seconds = iperf3(link, download)
        rows.append(Row(
            label, f"{direction['direction']} goodput", truth.goodput_mbit,
            direction["bytes_per_second"] * 8 / 1e6, ref_rate, "Mbit/s",
            f"wardready {direction['bytes'] / 1e6:.1f} MB in {direction['seconds']:.1f} s "
            f"({direction['stop_reason']}); iperf3 {ref_bytes / 1e6:.1f} MB in "
            f"{ref_seconds:.1f} s; RTT under load median "
            f"{1000 * (direction['rtt_under_load_median_seconds'] or 0):.0f} ms"))
    rows[-1].extra += f"; whole check {seconds:.1f} s"
    return rows


def latency_rows(link: netlab.WardLink, label: str, truth: netlab.LinkTruth,
                 token: Path) -> list[Row]:
    before = sum(link.loss_drops().values())
    config = {"targets": [link.city_ip], "count": PROBES, "method": "icmp-raw",
              "probe_interval_seconds": PROBE_INTERVAL, "timeout_seconds": 120}
    ours = netlab.run_check(link, "latency", config, token, timeout=120)["targets"][0]
    ours_dropped = sum(link.loss_drops().values()) - before
    ping = netlab.ping(link, PROBES, PROBE_INTERVAL)
    ping_dropped = sum(link.loss_drops().values()) - before - ours_dropped
    rtts = [r * 1000 for r in ours["rtts_seconds"] if r is not None]
    jitter = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(rtts))
    return [
        Row(label, "median RTT", truth.rtt_ms, ours["rtt_median_seconds"] * 1000,
            ping.median_ms, "ms", f"{PROBES} ICMP echoes {PROBE_INTERVAL * 1000:.0f} ms apart"),
        Row(label, "jitter", truth.jitter_ms, ours["jitter_seconds"] * 1000, ping.jitter_ms,
            "ms", f"mean abs. difference of consecutive RTTs (ours recomputed: {jitter:.2f})"),
        Row(label, "loss", 100 * truth.round_trip_loss, 100 * ours["loss_ratio"],
            100 * ping.loss, "%", f"packets the kernel dropped: ours {ours_dropped} = "
            f"{100 * ours_dropped / PROBES:.2f} %, ping {ping_dropped} = "
            f"{100 * ping_dropped / PROBES:.2f} %"),
    ]


def media_rows(link: netlab.WardLink, label: str, spec: netlab.LinkSpec,
               token: Path) -> list[Row]:
    rate = 50  # packets a second: 20 ms apart, twice the jitter, so 2j/3 holds
    ours = netlab.run_check(link, "media", {"packet_rate": rate, "duration_seconds": 10}, token,
                     timeout=60)
    return_jitter = netlab.truth(spec, probe_interval_ms=1000 / rate).jitter_ms
    loss = spec.loss_percent
    return [
        Row(label, "UDP jitter city→ward", return_jitter,
            (ours["jitter_return_seconds"] or 0) * 1000, None, "ms",
            f"RFC 3550, {ours['packets_sent']} packets of {ours['packet_bytes']} B"),
        Row(label, "UDP loss ward→city", loss, 100 * (ours["forward_loss_ratio"] or 0), None,
            "%", ""),
        Row(label, "UDP loss city→ward", loss, 100 * (ours["return_loss_ratio"] or 0), None,
            "%", f"reachable: {ours['udp_reachable']}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="2,20,100", help="Mbit/s, comma separated")
    parser.add_argument("--impaired", choices=("both", "no", "yes"), default="both")
    args = parser.parse_args(argv)
    problem = netlab.require_netlab()
    if problem:
        print(f"bench.links: {problem}", file=sys.stderr)
        return 2
    impairments = {"both": (False, True), "no": (False,), "yes": (True,)}[args.impaired]
    rows: list[Row] = []
    started = time.monotonic()
    for rate in (float(r) for r in args.rates.split(",")):
        for impaired in impairments:
            spec = netlab.LinkSpec(rate_mbit=rate, **({"loss_percent": 2.0, "delay_ms": 40.0,
                                                       "jitter_ms": 10.0} if impaired else {}))
            label = f"{rate:g} Mbit/s" + (", 2 % loss, 40±10 ms" if impaired else "")
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="wardready-bench-") as tmp:
                rows += measure(spec, label, Path(tmp))
    header = ["link", "quantity", "truth", "wardready", "iperf3 / ping", "wardready vs truth",
              "wardready vs reference", "unit", "cost and notes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
