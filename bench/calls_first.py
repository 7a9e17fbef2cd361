"""Calls first (issue 21): a call on one ward PC, the throughput test on another, one uplink.

A `TwoHostWardLink` (lab/netlab.py): ward hosts A and B on one ward LAN behind a router that
shapes the ward's uplink to 20 Mbit/s each way (tbf, 50 ms of queue), a real
`wardready-server` in the city. Host A carries a call (lab/callstream.py: 2.6 Mbit/s each
way, 1,200-byte datagrams in 50 frames a second, iperf3 UDP), whose loss and jitter iperf3
measures at each receiver, per second and for the whole call. Each arm gets a fresh link and
server:

- `baseline`: the call alone;
- `today`: the call, and on host B the throughput test as every PC runs it today, whenever it
  falls due (`python -m wardready.checks bandwidth`, its default 4 streams, download then
  upload), started TEST_OFFSETS seconds into the call; after the call, the same test once on
  the quiet link, for the figure it reads without a call;
- `plan`: issue 21's plan (not yet built: see `plan`).

No delay is added to the link (see DELAY): the harm is done by the shared bottleneck queue.

    sudo .venv/bin/python -m bench calls_first                 # 2-minute calls, about 6 min
    sudo .venv/bin/python -m bench.calls_first --quick         # 30 s calls, about 2 min
    sudo .venv/bin/python -m bench.calls_first --arms today --delay-ms 20

Needs root and the Debian packages scripts/setup.sh installs (iperf3, iproute2, nftables).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lab import netlab
from lab.callstream import DIRECTIONS, Call, CallResult, CallShape, Second, loss_of

RATE_MBIT = 20.0
CALL_SECONDS, QUICK_CALL_SECONDS = 120, 30
TEST_OFFSETS, QUICK_TEST_OFFSETS = (15.0, 50.0, 85.0), (5.0,)
"""When today's test starts, in seconds into the call: three in two minutes, each over by the
next (a test takes at most its 2 x 10 s budget plus a few seconds of set-up)."""
TEST_TIMEOUT = 180.0
DELAY = ("No delay is added (`--delay-ms 0`). The harm is made by the queue both hosts share: "
         "the router's tbf holds at most 50 ms of traffic, so a saturating test adds up to "
         "50 ms of queueing to the call and drops what arrives when it is full; a constant "
         "propagation delay adds to neither (iperf3's jitter is a difference of transit "
         "times). The delayer would add an emulator artefact to exactly the figure measured: "
         "it is a Python process on the same two cores as the test's client and server, "
         "released packets up to 4.7 ms late (mean 0.08 ms) under the test's ~2,000 "
         "packets/s, and delays only the city→ward direction. A 30 s run with 20 ms added "
         "city→ward (`--quick --arms today --delay-ms 20`) showed more damage, not less "
         "(worst second 40 % down, 55 % up; 2.4 % and 5.6 % of the whole call), so the "
         "figures below understate what a link with some delay suffers.")
"""Measured by hand, as the note says; kept here so the section says it."""


@dataclass(frozen=True)
class Settings:
    call_seconds: int
    test_offsets: tuple[float, ...]
    rate_mbit: float = RATE_MBIT
    delay_ms: float = 0.0
    shape: CallShape = field(default_factory=CallShape)

    @property
    def spec(self) -> netlab.LinkSpec:
        return netlab.LinkSpec(rate_mbit=self.rate_mbit, delay_ms=self.delay_ms)

    @property
    def ceiling_mbit(self) -> float:
        return netlab.goodput_ceiling_mbit(self.rate_mbit)


@dataclass
class Lab:
    """What an arm gets: a fresh two-host link with a real server in the city, and an agent
    token for each ward host (ward sai-gon; host A is `call-pc`, host B `bench-pc`)."""

    link: netlab.TwoHostWardLink
    workdir: Path
    token_a: Path
    token_b: Path
    settings: Settings
    server_port: int = 8470


@dataclass(frozen=True)
class TestRun:
    """One throughput test on host B: when (wall clock) and what it read."""

    start: float
    end: float
    result: dict[str, Any]

    def mbit(self, direction: str) -> float | None:
        for d in self.result["directions"]:
            if d["direction"] == direction:
                return float(d["bytes_per_second"]) * 8 / 1e6
        return None

    def rtt_under_load_ms(self) -> float | None:
        rtts = [d["rtt_under_load_median_seconds"] for d in self.result["directions"]
                if d["rtt_under_load_median_seconds"] is not None]
        return 1000 * max(rtts) if rtts else None


@dataclass(frozen=True)
class Deferral:
    """A test that fell due and was not run: when (wall clock) and the reason recorded."""

    at: float
    reason: str


@dataclass
class ArmResult:
    call: CallResult
    tests: list[TestRun] = field(default_factory=list)
    """Tests that ran during the call."""
    deferrals: list[Deferral] = field(default_factory=list)
    alone: TestRun | None = None
    """A test on the link with no call on it."""
    shaper_drops: dict[str, int] = field(default_factory=dict)
    """Packets the router's tbf dropped during the call, by direction (the kernel's count)."""

    @property
    def windows(self) -> list[tuple[float, float]]:
        return [(t.start, t.end) for t in self.tests]


def run_test(lab: Lab) -> TestRun:
    """Today's throughput test on host B, with the check's defaults."""
    start = time.time()
    result = netlab.run_check(lab.link, "bandwidth", {}, lab.token_b, timeout=TEST_TIMEOUT,
                              port=lab.server_port, ns=lab.link.host_b_ns)
    return TestRun(start, time.time(), result)


def sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


# -- the arms -------------------------------------------------------------------------------

def baseline(lab: Lab) -> ArmResult:
    """The call alone on the link: what the call gets when nothing else runs."""
    before = lab.link.shaper_drops()
    result = Call.start(lab.link, lab.settings.call_seconds, lab.settings.shape).finish()
    return ArmResult(result, shaper_drops=drops_since(lab, before))


def today(lab: Lab) -> ArmResult:
    """Today's behaviour: host B's throughput test runs whenever it falls due, during the call
    or not; then once more with the call over."""
    before = lab.link.shaper_drops()
    call = Call.start(lab.link, lab.settings.call_seconds, lab.settings.shape)
    tests = []
    try:
        for offset in lab.settings.test_offsets:
            sleep_until(call.started + offset)
            tests.append(run_test(lab))
        result = call.finish()
    finally:
        call.stop()
    drops = drops_since(lab, before)
    return ArmResult(result, tests=tests, alone=run_test(lab), shaper_drops=drops)


def plan(lab: Lab) -> ArmResult:
    """Issue 21's plan, end to end, on the same link and call as the other arms: host B is
    its ward's tester (named in the plan), host A carries the call, both run a real
    `wardready-agent run`. A's agent tells the server while the call runs; B's first test
    falls due then (its agent starts during the call) and the server holds it back. After
    the call, once A's marks lapse, the same test runs on the quiet link."""
    link, port = lab.link, lab.server_port
    name_tester(lab, "bench-pc")
    agents = [netlab.start_ward_agent(link, link.ward_ns, lab.workdir, "call-pc", lab.token_a,
                                      port, role="conference-room")]
    before = link.shaper_drops()
    call = Call.start(link, lab.settings.call_seconds, lab.settings.shape)
    deferrals = []
    try:
        wait_for(lambda: in_call(lab) >= 1, "host A's agent to say it carries the call", 30)
        # B's test falls due the moment its agent starts (start_jitter_seconds: 0).
        sleep_until(call.started + lab.settings.test_offsets[0])
        agents.append(netlab.start_ward_agent(link, link.host_b_ns, lab.workdir, "bench-pc",
                                              lab.token_b, port, role="counter"))
        wait_for(lambda: deferred(lab, "ward_in_use") >= 1, "B's test to be held back", 60)
        deferrals.append(Deferral(time.time(), "ward_in_use (host A carries a call), "
                                               "held back by the server"))
        result = call.finish()
    finally:
        call.stop()
    drops = drops_since(lab, before)
    # A test B ran anyway would be on the server, with when it ran (none should be).
    metrics = netlab.server_metrics(link, port)
    key = '{check="bandwidth",host="bench-pc",ward="sai-gon"}'
    tests = []
    if f"wardready_agent_check_timestamp_seconds{key}" in metrics:
        start = metrics[f"wardready_agent_check_timestamp_seconds{key}"]
        tests.append(TestRun(start, start + metrics[f"wardready_agent_check_duration_seconds"
                                                    f"{key}"], {"directions": []}))
    wait_for(lambda: in_call(lab) == 0, "host A's marks to lapse after the call", 60)
    for agent in agents:  # B's agent would try again 10-20 min later; the same test, now:
        agent.terminate()
        agent.wait(timeout=30)
    alone = run_test(lab)
    return ArmResult(result, tests=tests, deferrals=deferrals, alone=alone, shaper_drops=drops)


def name_tester(lab: Lab, host: str) -> None:
    """Make `host` its ward's only tester in the server's plan (an operator's edit of the
    inventory), and wait until the server has read it again."""
    import yaml

    inventory = lab.workdir / "inventory.yml"
    doc = yaml.safe_load(inventory.read_text())
    doc["measurement_plan"] = {**netlab.LAB_PLAN, "overrides": [
        {"ward": "sai-gon", "throughput": {"hosts": [host]}}]}
    inventory.write_text(yaml.safe_dump(doc, allow_unicode=True))

    def named() -> bool:
        body = netlab.fetch(lab.link, lab.link.host_b_ns,
                            f"http://{lab.link.city_ip}:{lab.server_port}/api/v1/plan",
                            lab.token_b)
        return bool(json.loads(body)["throughput"]["testers"] == [host])
    wait_for(named, f"the server to name {host} its ward's tester", 30)


def in_call(lab: Lab) -> float:
    return netlab.server_metrics(lab.link, lab.server_port).get(
        'wardready_plan_pcs_in_call{ward="sai-gon"}', 0.0)


def deferred(lab: Lab, reason: str) -> float:
    return netlab.server_metrics(lab.link, lab.server_port).get(
        f'wardready_throughput_tests_deferred_total{{reason="{reason}",ward="sai-gon"}}', 0.0)


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)


Arm = Callable[[Lab], ArmResult]
ARMS: dict[str, Arm] = {"baseline": baseline, "today": today, "plan": plan}
"""Run in this order, each on a fresh link; an arm that raises NotImplementedError is shown
as not measured yet."""


def drops_since(lab: Lab, before: dict[str, int]) -> dict[str, int]:
    now = lab.link.shaper_drops()
    return {d: now[d] - before.get(d, 0) for d in now}


@contextlib.contextmanager
def lab_for(settings: Settings) -> Iterator[Lab]:
    from wardready.server.store import Store

    with tempfile.TemporaryDirectory(prefix="wardready-calls-") as tmp, \
            netlab.TwoHostWardLink(settings.spec, delayer_seed=1) as link:
        workdir = Path(tmp)
        with Store(workdir / "city.db") as store:  # the server opens the same database
            token_a = workdir / "call-pc.token"
            token_a.write_text(store.issue_token("sai-gon", "call-pc"))
        token_b = netlab.start_city_server(link, workdir)
        yield Lab(link, workdir, token_a, token_b, settings)


# -- the section ----------------------------------------------------------------------------

def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def ms(x: float) -> str:
    return f"{x:.2f}"


def call_rows(name: str, arm: ArmResult) -> list[str]:
    rows = []
    for direction in DIRECTIONS:
        trace = arm.call.trace(direction)
        during = trace.during(arm.windows)
        outside = trace.outside(arm.windows)
        rows.append("| " + " | ".join([
            name, f"{direction} ({'city→ward' if direction == 'download' else 'ward→city'})",
            f"{trace.packets:,}", pct(trace.loss), pct(trace.worst("loss")),
            ms(trace.jitter_ms), ms(trace.worst("jitter_ms")),
            f"{len(during)}", pct(loss_of(during)) if during else "—",
            ms(trace.worst("jitter_ms", during)) if during else "—",
            pct(loss_of(outside)) if outside else "—",
            f"{arm.shaper_drops.get(direction, 0):,}"]) + " |")
    return rows


def test_rows(name: str, arm: ArmResult, settings: Settings) -> list[str]:
    rows = []
    runs = [(f"during the call, {t.start - arm.call.started:.0f} s in", t) for t in arm.tests]
    if arm.alone is not None:
        runs.append(("after the call, link quiet", arm.alone))
    for label, run in runs:
        cells = [name, label, f"{run.end - run.start:.1f}"]
        for direction in DIRECTIONS:
            mbit = run.mbit(direction)
            cells.append("—" if mbit is None else
                         f"{mbit:.2f} ({100 * (mbit / settings.ceiling_mbit - 1):+.1f} %)")
        rtt = run.rtt_under_load_ms()
        cells.append("—" if rtt is None else f"{rtt:.0f}")
        cells.append(", ".join(d["stop_reason"] for d in run.result["directions"]))
        rows.append("| " + " | ".join(cells) + " |")
    for deferral in arm.deferrals:
        rows.append(f"| {name} | deferred {deferral.at - arm.call.started:.0f} s into the "
                    f"call: {deferral.reason} | — | — | — | — | — |")
    return rows


def timeline(arm: ArmResult) -> list[str]:
    """The per-second figures around the first test of the arm."""
    first = arm.tests[0]
    down, up = arm.call.download, arm.call.upload
    lines = ["| s into the call | test running | download loss | download jitter ms | "
             "upload loss | upload jitter ms |", "|---:|---|---:|---:|---:|---:|"]
    for d, u in zip(down.seconds, up.seconds, strict=False):
        if d.end < first.start - 2 or d.start > first.end + 2:
            continue
        running = "yes" if d.overlaps([(first.start, first.end)]) else ""
        lines.append(f"| {d.start - arm.call.started:.0f}-{d.end - arm.call.started:.0f} | "
                     f"{running} | {pct(d.loss)} | {ms(d.jitter_ms)} | {pct(u.loss)} | "
                     f"{ms(u.jitter_ms)} |")
    return lines


def call_wire_mbit(settings: Settings) -> float:
    """What the call puts through the shaper each way: tbf counts whole frames (the datagram
    plus 8 bytes of UDP, 20 of IP and 14 of Ethernet header)."""
    shape = settings.shape
    return shape.rate_mbit * (shape.datagram_bytes + 42) / shape.datagram_bytes


def verdicts(results: dict[str, ArmResult], settings: Settings) -> list[str]:
    lines = []
    base, now = results.get("baseline"), results.get("today")
    if now is not None and now.tests:
        call = call_wire_mbit(settings)
        share = settings.ceiling_mbit * (settings.rate_mbit - call) / settings.rate_mbit
        read = [m for t in now.tests for d in DIRECTIONS if (m := t.mbit(d)) is not None]
        rtts = [r for t in now.tests if (r := t.rtt_under_load_ms()) is not None]
        lines.append(
            f"- The test read {min(read):.2f}-{max(read):.2f} Mbit/s during the call, "
            f"{100 * (1 - max(read) / settings.ceiling_mbit):.0f}-"
            f"{100 * (1 - min(read) / settings.ceiling_mbit):.0f} % below the link's "
            f"{settings.ceiling_mbit:.2f}: the call's {call:.2f} Mbit/s of frames each way "
            f"(UDP does not back off) read as missing capacity; TCP's share of what the call "
            f"leaves is {settings.ceiling_mbit:.2f} x ({settings.rate_mbit:g} - {call:.2f}) / "
            f"{settings.rate_mbit:g} = {share:.2f}.")
        idle = [1000 * t.result["idle_rtt_median_seconds"] for t in now.tests
                if t.result.get("idle_rtt_median_seconds") is not None]
        if rtts and idle:
            lines.append(
                f"- The test's own RTT under load, {min(rtts):.0f}-{max(rtts):.0f} ms (idle "
                f"before it: {max(idle):.1f} ms or less), is the queueing the call's datagrams "
                "waited through too: close to the shaper's full 50 ms. iperf3's jitter rises "
                "less (RFC 3550 follows the change in transit time from one datagram to the "
                "next, and the queue fills and drains over tens of milliseconds), so loss is "
                "the clearer sign of the damage.")
    planned = results.get("plan")
    if base is not None and planned is not None:
        for direction in DIRECTIONS:
            b, p = base.call.trace(direction), planned.call.trace(direction)
            lines.append(
                f"- {direction}, with the plan: the call lost {pct(p.loss)} (worst second "
                f"{pct(p.worst('loss'))}) against {pct(b.loss)} alone; jitter "
                f"{ms(p.jitter_ms)} ms (worst second {ms(p.worst('jitter_ms'))}) against "
                f"{ms(b.jitter_ms)} ms ({ms(b.worst('jitter_ms'))}) alone; the shaper dropped "
                f"{planned.shaper_drops.get(direction, 0):,} packets.")
        held = ", ".join(d.reason.split()[0] for d in planned.deferrals) or "none"
        after = planned.alone
        lines.append(
            f"- The plan held host B's test back ({held}) and {len(planned.tests)} test ran "
            "during the call"
            + ("." if after is None else
               f"; with the call over, the same test read {after.mbit('download'):.2f} down "
               f"and {after.mbit('upload'):.2f} Mbit/s up."))
    if base is not None and now is not None and now.tests:
        for direction in DIRECTIONS:
            b, t = base.call.trace(direction), now.call.trace(direction)
            during: tuple[Second, ...] = t.during(now.windows)
            lines.append(
                f"- {direction}: during today's tests the call lost {pct(loss_of(during))} of "
                f"its datagrams (worst second {pct(t.worst('loss', during))}; whole call "
                f"{pct(t.loss)}) against {pct(b.loss)} alone; worst-second jitter "
                f"{ms(t.worst('jitter_ms', during))} ms against {ms(b.worst('jitter_ms'))} ms "
                "alone.")
    return lines


def section(results: dict[str, ArmResult], pending: dict[str, str], settings: Settings,
            command: str, seconds: float) -> str:
    shape = settings.shape
    out = [
        "## Calls first: a call and the throughput test on one ward uplink\n",
        f"`{command}` ({seconds:.0f} s), {date.today().isoformat()}, on this 2-core machine "
        "(needs root; issue 21).\n",
        "The link (`lab.netlab.TwoHostWardLink`): ward hosts A and B on one ward LAN (a bridge "
        "in a switch namespace) behind the router, which shapes the ward's uplink to "
        f"{settings.rate_mbit:g} Mbit/s each way with tbf (50 ms of queue); the rate, loss "
        "and delay rules sit on the router's interfaces, so both hosts share them. "
        f"{DELAY}\n",
        f"The call (`lab.callstream`): host A ↔ the city, both directions at once, "
        f"{shape.rate_mbit:g} Mbit/s each way of {shape.datagram_bytes:,}-byte UDP datagrams "
        f"({shape.datagrams_per_second:.0f} a second) sent as {shape.frames_per_second} "
        "frames a second, each a burst of about "
        f"{shape.datagrams_per_second / shape.frames_per_second:.1f} datagrams (iperf3 "
        f"`-u -b {shape.rate_mbit:g}M -l {shape.datagram_bytes} --pacing-timer "
        f"{round(1e6 / shape.frames_per_second)}`): a video call's frames, packetized below "
        "the MTU as WebRTC does, rather than 6,500-byte datagrams that IP would fragment. "
        f"It lasts {settings.call_seconds} s. Loss and jitter are iperf3's at each receiver "
        "(the ward for download, the city for upload): lost datagrams by sequence number, "
        "and the RFC 3550 jitter estimate, read each second; *whole call* jitter is the mean "
        "of the seconds' readings (iperf3's own end figure is only the last one).\n",
        "Arms, each on a fresh link and server: *baseline*, the call alone; *today*, the "
        "call while host B runs today's throughput test (`python -m wardready.checks "
        "bandwidth`, defaults: 4 TCP streams, download then upload, at most 10 s each) "
        f"{', '.join(f'{o:g}' for o in settings.test_offsets)} s into the call, as it would "
        "whenever it falls due, then once more after the call; *plan*, issue 21's plan: "
        "host A's agent reports the call, host B's test falls due during it and must be "
        "deferred (each deferral and its reason listed), the call's figures must equal the "
        "baseline's within noise, and the test must run once the call is over. A second "
        "counts as one with a test running when it shares at least 0.25 s with the test; "
        "*tbf drops* are the kernel's count of what the router's shaper dropped during the "
        "call (all traffic: the test's and the call's).\n",
        "| arm | call direction | datagrams | loss, whole call | worst second loss | "
        "jitter ms, whole call | worst second jitter ms | seconds with a test running | "
        "loss in those seconds | worst jitter ms in those seconds | loss in the other "
        "seconds | tbf drops (all traffic) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, arm in results.items():
        out += call_rows(name, arm)
    for name, reason in pending.items():
        out.append(f"| {name} | not measured yet: {reason} | | | | | | | | | | |")
    out += [
        "",
        f"The throughput test's figures against the link's TCP goodput ceiling, "
        f"{settings.ceiling_mbit:.2f} Mbit/s (`goodput_ceiling_mbit({settings.rate_mbit:g})`"
        "), which is what it should report for the ward:\n",
        "| arm | test | took s | download Mbit/s (vs ceiling) | upload Mbit/s (vs ceiling) "
        "| RTT under load, median ms | stopped by |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, arm in results.items():
        out += test_rows(name, arm, settings)
    with_tests = [(n, a) for n, a in results.items() if a.tests]
    if with_tests:
        name, arm = with_tests[0]
        out += ["", f"Second by second around *{name}*'s first test (each second's loss and "
                "the jitter reading at its end):\n", *timeline(arm)]
    found = verdicts(results, settings)
    if found:
        out += ["", *found]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CALL_SECONDS} s calls, one test (a smoke run)")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma separated, of {', '.join(ARMS)} (default: all)")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="added city→ward by the delayer (default 0; see DELAY)")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    problem = netlab.require_netlab()
    if problem:
        print(f"bench.calls_first: {problem}", file=sys.stderr)
        return 2
    settings = Settings(
        call_seconds=QUICK_CALL_SECONDS if args.quick else CALL_SECONDS,
        test_offsets=QUICK_TEST_OFFSETS if args.quick else TEST_OFFSETS,
        delay_ms=args.delay_ms)
    results: dict[str, ArmResult] = {}
    pending: dict[str, str] = {}
    started = time.monotonic()
    for name in arms:
        print(f"arm {name}: a {settings.call_seconds} s call ...", file=sys.stderr, flush=True)
        with lab_for(settings) as lab:
            try:
                results[name] = ARMS[name](lab)
            except NotImplementedError as e:
                pending[name] = str(e)
                print(f"  not measured: {e}", file=sys.stderr)
                continue
            if settings.delay_ms:
                print(f"  delayer: {lab.link.delayer_stats()}", file=sys.stderr)
        summary = "; ".join(
            f"{t.direction} loss {pct(t.loss)}, worst second {pct(t.worst('loss'))}, "
            f"worst jitter {ms(t.worst('jitter_ms'))} ms"
            for t in (results[name].call.trace(d) for d in DIRECTIONS))
        print(f"  {summary}", file=sys.stderr, flush=True)
    command = shlex.join(["sudo", ".venv/bin/python", "-m", "bench.calls_first",
                          *(sys.argv[1:] if argv is None else argv)])
    print(section(results, pending, settings, command, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
