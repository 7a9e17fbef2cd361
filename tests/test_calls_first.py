"""Issue 21's problem, measured: today's throughput test on one ward PC damages a call that
another PC of the same ward carries over the same uplink.

One TwoHostWardLink (lab/netlab.py) shaped to 20 Mbit/s each way, a real wardready-server in
the city. Host A carries a call-shaped UDP stream both ways (lab/callstream.py: 2.6 Mbit/s of
1,200-byte datagrams in 50 frames a second, iperf3); host B runs the throughput test as every
PC runs it today (`python -m wardready.checks bandwidth`, defaults). Every figure asserted is
iperf3's at the call's receivers or the kernel's (tbf drop counters), never a stopwatch of
ours. bench/calls_first.py measures the same at full length for docs/benchmarks.md; the plan
of issue 21 must turn the second test's damage into a deferral.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.calls_first import Settings, lab_for
from bench.calls_first import plan as plan_arm
from lab import netlab
from lab.callstream import DIRECTIONS, Call, CallShape, loss_of

pytestmark = pytest.mark.integration
RATE_MBIT = 20.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[netlab.TwoHostWardLink, Path]]:
    """Skip (a failure under CI=true) where namespaces cannot be built."""
    problem = netlab.require_netlab()
    if problem:
        pytest.skip(f"emulated links: {problem}")
    with netlab.TwoHostWardLink(netlab.LinkSpec(rate_mbit=RATE_MBIT)) as link:
        yield link, netlab.start_city_server(link, tmp_path)


def test_todays_throughput_test_damages_a_call_on_the_same_uplink(
        lab: tuple[netlab.TwoHostWardLink, Path]) -> None:
    link, token = lab
    shape = CallShape()

    # Baseline: the call alone uses 2.7 of the 20 Mbit/s each way (1,242-byte frames), and
    # nothing else crosses the router, so the shaper never fills and nothing is lost. The
    # margin (0.5 %, 13 of 2,700 datagrams) is for a receiver starved of CPU on a loaded CI
    # machine overflowing its socket buffer, the only other place a datagram can be lost.
    alone = Call.start(link, seconds=10, shape=shape).finish()
    for direction in DIRECTIONS:
        trace = alone.trace(direction)
        assert trace.packets >= 0.9 * 10 * shape.datagrams_per_second, (direction, trace)
        assert trace.loss <= 0.005, (direction, trace.loss, trace.seconds)

    # Today: host B's test starts 2 s into a 20 s call (a test converges in about 9 s, at
    # most its 2 x 10 s budget).
    before = link.shaper_drops()
    call = Call.start(link, seconds=20, shape=shape)
    try:
        time.sleep(2)
        start = time.time()
        test = netlab.run_check(link, "bandwidth", {}, token, timeout=90, ns=link.host_b_ns)
        end = time.time()
        overlap = call.finish()
    finally:
        call.stop()
    drops = {d: n - before[d] for d, n in link.shaper_drops().items()}

    for direction in DIRECTIONS:
        trace = overlap.trace(direction)
        during = trace.during([(start, end)])
        per_second = [(round(100 * s.loss, 1), round(s.jitter_ms, 2)) for s in trace.seconds]
        figures = (f"{direction}: loss {100 * loss_of(during):.2f} % in the {len(during)} s "
                   f"of the test (alone {100 * alone.trace(direction).loss:.2f} %), worst "
                   f"jitter {trace.worst('jitter_ms', during):.2f} ms (alone "
                   f"{alone.trace(direction).worst('jitter_ms'):.2f}), tbf drops {drops}; "
                   f"per second (loss %, jitter ms) {per_second}")
        # Each direction of the test runs 4 TCP streams for at least 3 s (1 s warm-up, 2 s
        # measured). Without AQM or ECN they grow until the shaper's 50 ms queue overflows,
        # again and again, and the call's 5-datagram frame bursts arrive into that full queue:
        # 4.6-17 % of the call's datagrams were lost over the test's seconds in runs on this
        # machine (worst seconds 29-55 %). 1 % is the floor asserted: more than twice the
        # baseline's allowance, and lost datagrams the kernel's tail drop accounts for.
        assert loss_of(during) >= 0.01, figures
        assert drops[direction] >= trace.lost > 0, figures

    # And the test reads the call's traffic as missing capacity: the call keeps its 2.7 Mbit/s
    # (UDP does not back off), TCP gets what is left, about 16.7 of the 19.13 Mbit/s
    # ceiling. 5 % below the ceiling is the bound: the link-accuracy tests hold the same
    # test within 5 % of the ceiling on a quiet link.
    ceiling = netlab.goodput_ceiling_mbit(RATE_MBIT)
    read = {d["direction"]: d["bytes_per_second"] * 8 / 1e6 for d in test["directions"]}
    assert read["download"] < 0.95 * ceiling, (read, ceiling)
    assert read["upload"] < 0.95 * ceiling, (read, ceiling)


def test_with_the_plan_the_test_waits_for_the_call_and_runs_after_it() -> None:
    """The fix: host A's agent tells the server it carries the call, so host B's test, due
    during it, is held back with its reason; the call keeps its baseline (nothing lost, the
    shaper drops nothing); with the call over, the test runs and reads the link."""
    problem = netlab.require_netlab()
    if problem:
        pytest.skip(f"emulated links: {problem}")
    settings = Settings(call_seconds=20, test_offsets=(3.0,))
    with lab_for(settings) as lab:
        arm = plan_arm(lab)
        tester_log = (lab.workdir / "bench-pc" / "agent.log").read_text()
    assert "throughput test deferred (ward_in_use)" in tester_log, tester_log[-2000:]
    assert [d.reason.split()[0] for d in arm.deferrals] == ["ward_in_use"]
    assert arm.tests == []  # the server has no test of host B from the call's time
    for direction in DIRECTIONS:
        trace = arm.call.trace(direction)
        assert trace.packets >= 0.9 * 20 * CallShape().datagrams_per_second, trace
        assert trace.loss <= 0.005, (direction, trace.loss, trace.seconds)  # as baseline
        assert arm.shaper_drops[direction] == 0, arm.shaper_drops  # no test's queue overflow
    assert arm.alone is not None
    ceiling = netlab.goodput_ceiling_mbit(RATE_MBIT)
    for direction in DIRECTIONS:
        assert arm.alone.mbit(direction) == pytest.approx(ceiling, rel=0.05), arm.alone
