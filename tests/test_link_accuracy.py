"""wardready's link figures against ground truth on emulated ward links: the configured link,
iperf3 and the kernel's own drop counters. The full table is `python -m bench.links`."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netlab

pytestmark = pytest.mark.integration


@pytest.fixture
def lab() -> None:
    problem = netlab.require_netlab()
    if problem:
        pytest.skip(problem)


def iperf3_bytes_10s(link: netlab.WardLink) -> tuple[float, int]:
    """iperf3's default test (10 s, -P 4) downloading: (Mbit/s, bytes moved)."""
    server = link.popen(link.city_ns, ["iperf3", "-s", "-1", "-B", link.city_ip],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    netlab.wait_listening(link, link.city_ns, 5201)
    out = link.run(link.ward_ns, ["iperf3", "-c", link.city_ip, "-P", "4", "-R", "-J"],
                   timeout=60)
    server.wait(timeout=10)
    result = json.loads(out.stdout)
    return (result["end"]["sum_received"]["bits_per_second"] / 1e6,
            int(result["end"]["sum_received"]["bytes"]))


@pytest.fixture
def link_20(lab: None, tmp_path: Path) -> Iterator[tuple[netlab.WardLink, Path]]:
    with netlab.WardLink(netlab.LinkSpec(rate_mbit=20)) as link:
        yield link, netlab.start_city_server(link, tmp_path)


def test_goodput_on_a_20_mbit_link_within_5_percent_of_truth_and_iperf3(
        link_20: tuple[netlab.WardLink, Path]) -> None:
    link, token = link_20
    ceiling = netlab.goodput_ceiling_mbit(20)
    ours = netlab.run_check(link, "bandwidth", {}, token, timeout=120)
    reference = netlab.iperf3_goodput(link, seconds=5, streams=4, download=True)
    upload_reference = netlab.iperf3_goodput(link, seconds=5, streams=4, download=False)
    for d, ref in zip(ours["directions"], (reference, upload_reference), strict=True):
        mbit = d["bytes_per_second"] * 8 / 1e6
        assert mbit == pytest.approx(ceiling, rel=0.05), d
        assert mbit == pytest.approx(ref, rel=0.05), (d, ref)
        assert d["stop_reason"] == "converged", d


def test_a_2_mbit_link_is_measured_within_budget_and_cheaper_than_iperf3(
        lab: None, tmp_path: Path) -> None:
    with netlab.WardLink(netlab.LinkSpec(rate_mbit=2)) as link:
        token = netlab.start_city_server(link, tmp_path)
        config = {"max_seconds": 10}
        ours = netlab.run_check(link, "bandwidth", config, token, timeout=120)
        reference_mbit, reference_bytes = iperf3_bytes_10s(link)
    down, up = ours["directions"]
    assert down["bytes"] <= reference_bytes, (down, reference_bytes)  # it converged sooner
    for d in (down, up):
        # Its budget, plus at most the load probe in flight (2 s timeout): an upload is
        # aborted at the stop, not left to drain what its buffers held.
        assert d["seconds"] <= 10 + 2.5, d
        assert d["bytes_per_second"] * 8 / 1e6 == pytest.approx(
            netlab.goodput_ceiling_mbit(2), rel=0.05), d
    assert reference_mbit == pytest.approx(netlab.goodput_ceiling_mbit(2), rel=0.05)


def test_rtt_jitter_and_loss_on_a_lossy_delayed_link(lab: None, tmp_path: Path) -> None:
    spec = netlab.LinkSpec(rate_mbit=20, loss_percent=2, delay_ms=40, jitter_ms=10)
    count, interval = 400, 0.025  # spaced more than twice the jitter: truth is 2j/3
    with netlab.WardLink(netlab.LinkSpec(rate_mbit=20), delayer_seed=3) as link:
        token = netlab.start_city_server(link, tmp_path)
        base = netlab.ping(link, 20, 0.05).median_ms
        link.reconfigure(spec)
        config = {"targets": [link.city_ip], "count": count, "method": "icmp-raw",
                  "probe_interval_seconds": interval, "timeout_seconds": 60}
        ours = netlab.run_check(link, "latency", config, token, timeout=90)["targets"][0]
        dropped = sum(link.loss_drops().values())
    truth = netlab.truth(spec, base_rtt_ms=base)
    assert ours["rtt_median_seconds"] * 1000 == pytest.approx(truth.rtt_ms, abs=2)
    assert ours["jitter_seconds"] * 1000 == pytest.approx(truth.jitter_ms, abs=2)
    # Every probe lost is a packet the kernel dropped: exact against its counters...
    assert ours["sent"] - ours["received"] == dropped
    # ...and within binomial noise (4 standard deviations) of the configured loss.
    p = truth.round_trip_loss
    assert abs(ours["loss_ratio"] - p) <= 4 * math.sqrt(p * (1 - p) / count)
