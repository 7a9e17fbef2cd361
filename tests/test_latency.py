"""The latency check: its statistics, each method on loopback, and loss against ground truth
on emulated links (network namespaces joined by veth, loss from nftables)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import REPO, as_nobody, exposition, promtool_check_metrics, require_binary
from wardready.checks import latency
from wardready.checks.base import Context, ServerLink

# Runs the check in whatever network namespace `ip netns exec` put it in; prints JSON.
NS_SCRIPT = """
import asyncio, json, sys, time
from wardready.checks import latency
from wardready.checks.base import Context
config = latency.Config.model_validate_json(sys.argv[1])
t0 = time.monotonic()
result = asyncio.run(latency.run(config, Context()))
print(json.dumps({"elapsed": time.monotonic() - t0, "auto": latency.choose_method(),
                  "result": result.model_dump(mode="json")}))
"""


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: raw ICMP, network namespaces and nftables")


@pytest.fixture
def listener() -> Iterator[int]:
    """A listening TCP port on 127.0.0.1 (the kernel completes handshakes; nobody accepts)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1024)
        yield srv.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing listening (connects are refused with RST)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_own_round_trips(t: latency.TargetResult, interval: float) -> None:
    """Each RTT is its own probe's round trip. How fast a loopback or veth answers is the
    machine's; what the check controls is what it times. An RTT timed from the schedule
    rather than the send, paired with another probe's answer, or read in the wrong unit
    (ms as s) is about one probe interval or more, and the test sets the interval; a real
    answer here comes back orders of magnitude sooner, also on a loaded machine (p95 at most
    1 ms, with three busy loops on two cores, against 10 to 20 ms intervals)."""
    assert t.rtt_min_seconds is not None and t.rtt_max_seconds is not None
    assert 0 < t.rtt_min_seconds <= t.rtt_median_seconds <= t.rtt_p95_seconds  # type: ignore[operator]
    assert t.rtt_p95_seconds <= t.rtt_max_seconds  # type: ignore[operator]
    assert t.rtt_p95_seconds < interval, t.rtts_seconds  # type: ignore[operator]
    # the mean difference of consecutive RTTs: never more than their range
    assert t.jitter_seconds is not None
    assert 0 <= t.jitter_seconds <= t.rtt_max_seconds - t.rtt_min_seconds
    assert t.jitter_seconds < interval


def assert_clean_loopback(t: latency.TargetResult, count: int, method: str,
                          interval: float) -> None:
    assert t.error is None and t.method == method
    assert (t.sent, t.received, t.loss_ratio) == (count, count, 0.0), t
    assert_own_round_trips(t, interval)
    assert len(t.rtts_seconds) == count


# --- statistics ------------------------------------------------------------------------------

def test_summarise_quantiles_jitter_and_loss() -> None:
    ms = 1e-3
    stats = latency.summarise([10 * ms, None, 12 * ms, 11 * ms, None, 15 * ms])
    assert (stats.sent, stats.received, stats.loss_ratio) == (6, 4, 2 / 6)
    assert stats.rtt_min_seconds == 10 * ms and stats.rtt_max_seconds == 15 * ms
    assert stats.rtt_median_seconds == pytest.approx(11.5 * ms)  # between 11 and 12
    assert stats.rtt_p95_seconds == pytest.approx(12 * ms + 0.85 * 3 * ms)  # rank 2.85
    assert stats.rtt_mean_seconds == pytest.approx(12 * ms)
    # consecutive answered probes in sending order: |12-10|, |11-12|, |15-11|
    assert stats.jitter_seconds == pytest.approx((2 + 1 + 4) / 3 * ms)


def test_summarise_edge_cases() -> None:
    empty = latency.summarise([])
    assert (empty.sent, empty.loss_ratio, empty.rtt_median_seconds) == (0, None, None)
    lost = latency.summarise([None, None])
    assert (lost.loss_ratio, lost.rtt_min_seconds, lost.jitter_seconds) == (1.0, None, None)
    one = latency.summarise([0.02])
    assert one.rtt_p95_seconds == 0.02 and one.jitter_seconds is None
    steady = latency.summarise([0.03] * 20)
    assert steady.jitter_seconds == 0 and steady.rtt_p95_seconds == pytest.approx(0.03)


# --- configuration ---------------------------------------------------------------------------

def test_config_rejects_what_would_break_labels_or_the_timeout() -> None:
    assert latency.Config().method == "auto"
    with pytest.raises(ValidationError, match="repeat"):
        latency.Config(targets=["10.0.0.1", "10.0.0.1"])
    with pytest.raises(ValidationError, match="timeout_seconds"):
        latency.Config(count=1000, probe_interval_seconds=1.0)
    with pytest.raises(ValidationError):
        latency.Config(targets=["a b"])
    with pytest.raises(ValidationError):
        latency.Config.model_validate_json('{"method": "udp"}')
    with pytest.raises(ValidationError):
        latency.Config(targets=[f"10.0.0.{i}" for i in range(latency.MAX_TARGETS + 1)])
    ok = latency.Config.model_validate_json(
        '{"targets": ["::1", "city.example"], "count": 5, "probe_interval_seconds": 1, '
        '"tcp_port": 8470}')
    assert ok.probe_interval_seconds == 1.0 and ok.tcp_port == 8470


# --- each method on loopback -----------------------------------------------------------------

async def test_icmp_raw_on_loopback() -> None:
    require_root()
    config = latency.Config(targets=["127.0.0.1"], method="icmp-raw", count=20,
                            probe_interval_seconds=0.02, probe_timeout_seconds=0.5)
    result = await latency.run(config, Context())
    assert_clean_loopback(result.targets[0], 20, "icmp-raw", config.probe_interval_seconds)
    assert result.targets[0].port is None and result.targets[0].address == "127.0.0.1"


async def test_auto_picks_raw_icmp_as_root() -> None:
    require_root()
    assert latency.choose_method() == "icmp-raw"
    probed = await latency.measure("127.0.0.1", "auto", count=3, interval=0.02, timeout=0.5)
    assert probed.method == "icmp-raw" and None not in probed.rtts


async def test_tcp_connect_time_on_loopback(listener: int) -> None:
    config = latency.Config(targets=["127.0.0.1"], method="tcp", tcp_port=listener, count=20,
                            probe_interval_seconds=0.02, probe_timeout_seconds=0.5)
    result = await latency.run(config, Context())
    assert_clean_loopback(result.targets[0], 20, "tcp", config.probe_interval_seconds)
    assert result.targets[0].port == listener


async def test_tcp_to_a_closed_port_still_measures_the_rst() -> None:
    config = latency.Config(targets=["127.0.0.1"], method="tcp", tcp_port=closed_port(),
                            count=20, probe_interval_seconds=0.02, probe_timeout_seconds=0.5)
    result = await latency.run(config, Context())
    assert_clean_loopback(result.targets[0], 20, "tcp", config.probe_interval_seconds)


async def test_default_target_and_port_come_from_the_server_url(listener: int) -> None:
    context = Context(server=ServerLink(f"http://127.0.0.1:{listener}", "token"))
    result = await latency.run(latency.Config(method="tcp", count=3,
                                              probe_interval_seconds=0.02), context)
    [t] = result.targets
    assert (t.target, t.port, t.received) == ("127.0.0.1", listener, 3)
    assert latency._server_port(Context(server=ServerLink("http://city.example", ""))) == 80
    assert latency._server_port(Context(server=ServerLink("https://city.example", ""))) == 443
    assert latency._server_port(Context()) == 443
    with pytest.raises(ValueError, match="no targets"):
        await latency.run(latency.Config(), Context())


async def test_a_name_that_does_not_resolve_is_reported_and_the_rest_measured(
        monkeypatch: pytest.MonkeyPatch, listener: int) -> None:
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "wr-nowhere.invalid":  # fails here: no DNS query leaves the machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    config = latency.Config(targets=["wr-nowhere.invalid", "127.0.0.1"], method="tcp",
                            tcp_port=listener, count=3, probe_interval_seconds=0.02)
    result = await latency.run(config, Context())
    bad, good = result.targets
    assert bad.error and "wr-nowhere.invalid" in bad.error
    assert (bad.sent, bad.loss_ratio, bad.address, bad.rtt_median_seconds) == (0, None, None, None)
    assert good.received == 3 and good.error is None
    names = {s.spec.name for s in latency.samples(result) if s.labels[0] == bad.target}
    assert names == {"wardready_latency_probes_sent", "wardready_latency_probes_received"}


async def test_auto_probes_an_ipv6_only_target_by_tcp() -> None:
    probed = await latency.measure("::1", "auto", count=3, interval=0.02, timeout=0.5,
                                   port=closed_port())
    assert probed.method == "tcp" and probed.address == "::1" and None not in probed.rtts


# --- schedule, stop, strays ------------------------------------------------------------------

Wait = Callable[[asyncio.AbstractEventLoop, float, asyncio.Event], Awaitable[bool]]


def watch_waits(monkeypatch: pytest.MonkeyPatch,
                before: Callable[[int, asyncio.AbstractEventLoop], None] | None = None
                ) -> list[float]:
    """The loop time each probe is meant to leave at, as the code asks to wait for it;
    `before(n, loop)` runs as the code turns to its n-th probe (1-based)."""
    intended: list[float] = []
    real: Wait = latency._wait_until

    async def spy(loop: asyncio.AbstractEventLoop, when: float, stop: asyncio.Event) -> bool:
        intended.append(when)
        if before is not None:
            before(len(intended), loop)
        return await real(loop, when, stop)

    monkeypatch.setattr(latency, "_wait_until", spy)
    return intended


def assert_on_schedule(intended: list[float], sent: list[float], count: int,
                       interval: float) -> None:
    """The code's schedule, not the machine's punctuality: probe i is meant for exactly
    start + i * interval (a schedule counted from the previous send or reply would drift),
    and none leaves before its time. How late a busy machine lets one leave is the machine's.
    Times are the event loop's; asyncio may run a timer up to its clock's resolution early."""
    assert len(intended) == len(sent) == count
    assert [w - intended[0] for w in intended] == pytest.approx(
        [i * interval for i in range(count)], abs=1e-9)
    resolution = time.get_clock_info("monotonic").resolution
    early = [(i, w - s) for i, (w, s) in enumerate(zip(intended, sent, strict=True))
             if s < w - resolution]
    assert early == []


async def test_tcp_probes_follow_a_fixed_schedule(monkeypatch: pytest.MonkeyPatch,
                                                  listener: int) -> None:
    """Replies must not delay sends: here none comes until every probe has left (as if each
    took longer than the whole run), so a schedule that waited for replies would stall."""
    count, interval = 20, 0.02
    intended = watch_waits(monkeypatch)
    sent: list[float] = []
    all_sent = asyncio.Event()
    real = latency._tcp_once

    loop = asyncio.get_running_loop()
    give_up = loop.time() + 60  # a guard for a code that waits for replies: it would hang

    async def held(family: int, sockaddr: Any, timeout: float) -> float | None:
        sent.append(loop.time())
        if len(sent) == count:
            all_sent.set()
        await asyncio.wait_for(all_sent.wait(), give_up - loop.time())
        return await real(family, sockaddr, timeout)

    monkeypatch.setattr(latency, "_tcp_once", held)
    rtts = await latency.probe("127.0.0.1", "tcp", count=count, interval=interval,
                               timeout=0.5, port=listener)
    assert len(rtts) == count and None not in rtts
    assert_on_schedule(intended, sent, count, interval)


async def test_icmp_raw_probes_follow_a_fixed_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    count, interval = 20, 0.02
    intended = watch_waits(monkeypatch)
    sent: list[float] = []
    real = latency._send

    def spy(sock: socket.socket, packet: bytes, address: str) -> tuple[int, int]:
        sent.append(asyncio.get_running_loop().time())
        return real(sock, packet, address)

    monkeypatch.setattr(latency, "_send", spy)
    rtts = await latency.probe("127.0.0.1", "icmp-raw", count=count, interval=interval,
                               timeout=0.5)
    assert len(rtts) == count and None not in rtts
    assert_on_schedule(intended, sent, count, interval)


@pytest.mark.parametrize("method", ["icmp-raw", "tcp"])
async def test_stop_ends_probing_early_and_keeps_what_was_measured(
        method: str, listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop is set as the code turns to the fifth of 1,000 probes (an event, not a moment):
    no probe leaves after it, and the four sent keep their RTTs."""
    if method == "icmp-raw":
        require_root()
    stop = asyncio.Event()

    def at_the_fifth(n: int, loop: asyncio.AbstractEventLoop) -> None:
        if n == 5:
            stop.set()

    watch_waits(monkeypatch, at_the_fifth)
    rtts = await latency.probe("127.0.0.1", method, count=1000, interval=0.05,  # type: ignore[arg-type]
                               timeout=0.5, port=listener, stop=stop)
    assert len(rtts) == 4 and None not in rtts


@pytest.mark.parametrize("method", ["icmp-raw", "tcp"])
async def test_stop_cuts_the_wait_for_the_next_probe_short(
        method: str, listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop set while the code waits an hour for the second probe ends the wait: it returns
    with the first probe's RTT. The guard below is an order of magnitude, not a timing: a
    stop that did not end the wait would take the hour."""
    if method == "icmp-raw":
        require_root()
    stop = asyncio.Event()

    def during_the_second_wait(n: int, loop: asyncio.AbstractEventLoop) -> None:
        if n == 2:
            loop.call_soon(stop.set)  # runs once the code waits: the hour is still ahead

    watch_waits(monkeypatch, during_the_second_wait)
    rtts = await asyncio.wait_for(latency.probe(
        "127.0.0.1", method, count=10, interval=3600, timeout=0.5,  # type: ignore[arg-type]
        port=listener, stop=stop), 60)
    assert len(rtts) == 1 and None not in rtts


async def test_a_cancelled_raw_probe_closes_its_socket() -> None:
    require_root()
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(latency.probe("127.0.0.1", "icmp-raw", count=1000,
                                             interval=0.05, timeout=0.5), 0.3)
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_raw_filter_queues_only_our_echo_replies() -> None:
    """On loopback a raw ICMP socket also sees every request and everyone's replies: with the
    filter attached, only replies carrying its identifier reach it."""
    require_root()
    ident = 0x5EED
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as ours, \
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as other:
        latency._attach_echo_reply_filter(ours, ident)
        for seq, sender_ident in enumerate((ident + 1, ident, ident + 2, ident)):
            other.sendto(latency._echo_request(sender_ident, seq, bytes(8)), ("127.0.0.1", 0))
        ours.settimeout(1.0)
        got = [ours.recv(2048) for _ in range(2)]
        ours.settimeout(0.2)
        with pytest.raises(TimeoutError):  # the two requests and the two other replies
            ours.recv(2048)
    for seq, packet in zip((1, 3), got, strict=True):
        icmp = packet[(packet[0] & 0x0F) * 4:]
        assert (icmp[0], int.from_bytes(icmp[4:6]), int.from_bytes(icmp[6:8])) == (0, ident, seq)


def test_raw_icmp_needs_no_scapy() -> None:
    """scapy costs the agent ~30 MiB: the raw method must not import it."""
    require_root()
    code = ("import asyncio, sys\n"
            "from wardready.checks import latency\n"
            "from wardready.checks.base import Context\n"
            "config = latency.Config(targets=['127.0.0.1'], method='icmp-raw', count=3,\n"
            "                        probe_interval_seconds=0.02)\n"
            "result = asyncio.run(latency.run(config, Context()))\n"
            "assert result.targets[0].received == 3, result\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scapy'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_concurrent_raw_probes_and_a_ping_do_not_take_each_others_replies() -> None:
    require_root()
    ping = subprocess.Popen([require_binary("ping"), "-q", "-c", "100", "-i", "0.01",
                             "127.0.0.1"], stdout=subprocess.DEVNULL)
    try:
        runs = await asyncio.gather(*(latency.probe("127.0.0.1", "icmp-raw", count=30,
                                                    interval=0.01, timeout=0.5)
                                      for _ in range(3)))
    finally:
        ping.kill()
        ping.wait()
    for rtts in runs:
        assert len(rtts) == 30 and None not in rtts


# --- namespaces ------------------------------------------------------------------------------

def run(*cmd: str, stdin: str | None = None, timeout: float = 30) -> str:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout,
                         check=False)
    if out.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


@contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    """Fresh network namespaces (loopback up), deleted afterwards whatever happens."""
    require_root()
    ip = require_binary("ip")
    names: list[str] = []
    try:
        for _ in range(count):
            name = f"wr-{secrets.token_hex(4)}"
            run(ip, "netns", "add", name)
            names.append(name)
            run(ip, "-n", name, "link", "set", "lo", "up")
        yield names
    finally:
        for name in names:
            subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)


@contextmanager
def ward_and_city(city_nft: str) -> Iterator[tuple[str, str]]:
    """Two namespaces joined by veth, ward 10.213.0.1/30 and city 10.213.0.2/30; `city_nft`
    is an nft statement applied to what enters the city from the ward."""
    nft = require_binary("nft")
    with namespaces(2) as (ward, city):
        run("ip", "-n", ward, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            "netns", city)
        for ns, dev, addr in ((ward, "v0", "10.213.0.1/30"), (city, "v1", "10.213.0.2/30")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        ruleset = ("table inet wr {\n chain input {\n"
                   "  type filter hook input priority 0; policy accept;\n"
                   f'  iifname "v1" meta nfproto ipv4 {city_nft}\n }}\n}}\n')
        run("ip", "netns", "exec", city, nft, "-f", "-", stdin=ruleset)
        run("ip", "netns", "exec", ward, "sysctl", "-qw",
            "net.ipv4.ping_group_range=0 2147483647")
        yield ward, city


@contextmanager
def listening_in(ns: str, address: str, port: int) -> Iterator[None]:
    """A TCP listener (nobody accepts: the kernel completes handshakes) in namespace `ns`."""
    listen = (f"import socket, time; s = socket.socket(); s.bind(({address!r}, {port})); "
              "s.listen(); print('up', flush=True); time.sleep(60)")
    with subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", listen],
                          stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None and server.stdout.readline() == "up\n"
            yield
        finally:
            server.kill()


def check_in(ns: str, config: dict[str, Any], *, unprivileged: bool = False,
             timeout: float = 60) -> dict[str, Any]:
    """Run the latency check in namespace `ns` (as nobody, without capabilities, if asked)."""
    argv = [sys.executable, "-c", NS_SCRIPT, json.dumps(config)]
    out = subprocess.run(["ip", "netns", "exec", ns, *(as_nobody(argv) if unprivileged
                                                       else argv)],
                         cwd=REPO, capture_output=True, text=True, timeout=timeout,
                         check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_icmp_dgram_on_loopback_in_a_namespace_that_allows_it() -> None:
    with namespaces(1) as (ns,):
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        out = check_in(ns, {"targets": ["127.0.0.1"], "method": "icmp-dgram", "count": 20,
                            "probe_interval_seconds": 0.02, "probe_timeout_seconds": 0.5})
    t = latency.TargetResult.model_validate(out["result"]["targets"][0])
    assert_clean_loopback(t, 20, "icmp-dgram", 0.02)


def test_auto_falls_back_to_dgram_then_tcp_without_privileges() -> None:
    config = {"targets": ["127.0.0.1"], "count": 3, "probe_interval_seconds": 0.02,
              "probe_timeout_seconds": 0.5, "tcp_port": 9}
    with namespaces(1) as (ns,):
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        allowed = check_in(ns, config, unprivileged=True)
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0")
        forbidden = check_in(ns, config, unprivileged=True)
    assert allowed["auto"] == "icmp-dgram"
    assert allowed["result"]["targets"][0]["method"] == "icmp-dgram"
    assert forbidden["auto"] == "tcp"
    [t] = forbidden["result"]["targets"]
    assert t["method"] == "tcp" and t["received"] == 3  # the RST from closed port 9


@pytest.mark.parametrize("method", ["icmp-raw", "icmp-dgram", "tcp"])
def test_a_blackholed_target_is_total_loss_within_the_time_budget(method: str) -> None:
    count, interval, timeout = 10, 0.05, 0.5
    with ward_and_city("drop") as (ward, _):
        run("ip", "-n", ward, "route", "add", "blackhole", "10.213.9.9")
        out = check_in(ward, {"targets": ["10.213.0.2", "10.213.9.9"], "method": method,
                              "count": count, "probe_interval_seconds": interval,
                              "probe_timeout_seconds": timeout, "tcp_port": 8470})
    for t in out["result"]["targets"]:
        assert (t["sent"], t["received"], t["loss_ratio"]) == (count, 0, 1.0), t
        assert t["rtts_seconds"] == [None] * count and t["rtt_median_seconds"] is None
    budget = latency.budget_seconds(count, interval, timeout)
    assert out["elapsed"] < budget + 0.3, (out["elapsed"], budget)


def test_loss_matches_ground_truth_and_ping() -> None:
    """20 % of what enters the city is dropped (requests only, so that is the loss rate)."""
    truth, n, interval = 0.2, 400, 0.01
    tolerance = 4.5 * math.sqrt(truth * (1 - truth) / n)  # binomial; ~1e-5 chance to fail
    config = {"targets": ["10.213.0.2"], "count": n, "probe_interval_seconds": interval,
              "probe_timeout_seconds": 1.0, "tcp_port": 8470, "timeout_seconds": 60}
    ping = require_binary("ping")
    with ward_and_city("numgen random mod 100 < 20 drop") as (ward, _):
        # all at once: drops are independent per packet, and this keeps the test short
        procs = [subprocess.Popen(
            ["ip", "netns", "exec", ward, sys.executable, "-c", NS_SCRIPT,
             json.dumps({**config, "method": method})], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for method in ("icmp-raw", "icmp-dgram", "tcp")]
        ping_out = run("ip", "netns", "exec", ward, ping, "-q", "-n", "-c", str(n), "-i",
                       str(interval), "-W", "1", "10.213.0.2", timeout=60)
        outputs = [p.communicate(timeout=60) for p in procs]
    match = re.search(r"(\d+) packets transmitted, (\d+) received", ping_out)
    assert match, ping_out
    ping_loss = 1 - int(match[2]) / int(match[1])
    assert abs(ping_loss - truth) < tolerance, ping_loss
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        [t] = json.loads(stdout)["result"]["targets"]
        assert t["sent"] == n
        assert abs(t["loss_ratio"] - truth) < tolerance, (t["method"], t["loss_ratio"])
        assert abs(t["loss_ratio"] - ping_loss) < tolerance * math.sqrt(2), t["method"]
        # a veth between namespaces: each RTT its own probe's (see assert_own_round_trips)
        assert_own_round_trips(latency.TargetResult.model_validate(t), interval)


def test_an_answer_to_a_retransmitted_syn_is_a_lost_tcp_probe() -> None:
    """Every first SYN is dropped; the kernel's resend 1 s later is answered, before the
    probe's 1.5 s timeout. Like an ICMP probe whose request was lost, the probe is lost."""
    config = {"targets": ["10.213.0.2"], "method": "tcp", "count": 1,
              "probe_timeout_seconds": 1.5}
    # the counter alternates drop, pass: one probe at a time keeps it in step
    with ward_and_city("tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop") as (
            ward, city), listening_in(city, "10.213.0.2", 8470):
        answered = check_in(ward, {**config, "tcp_port": 8470})
        refused = check_in(ward, {**config, "tcp_port": 8471})
    for out in (answered, refused):
        [t] = out["result"]["targets"]
        assert (t["sent"], t["received"], t["rtts_seconds"]) == (1, 0, [None]), t
        assert out["elapsed"] > 1.0  # it did wait for the resend's answer


# --- metrics ---------------------------------------------------------------------------------

async def test_metrics_pass_promtool(listener: int) -> None:
    config = latency.Config(targets=["127.0.0.1", "localhost"], method="tcp",
                            tcp_port=listener, count=5, probe_interval_seconds=0.02)
    result = await latency.run(config, Context())
    lost = latency.TargetResult(target="10.213.0.2", address="10.213.0.2", method="icmp-raw",
                                port=None, rtts_seconds=[None] * 3,
                                **vars(latency.summarise([None] * 3)))
    unresolved = latency.TargetResult(target="city.invalid", address=None, method="icmp-raw",
                                      port=None, rtts_seconds=[], error="no address",
                                      **vars(latency.summarise([])))
    result = latency.Result(targets=[*result.targets, lost, unresolved])
    body = exposition(latency.METRICS, latency.samples(result))
    assert promtool_check_metrics(body) == ""
    text = body.decode()
    for stat in ("min", "median", "p95", "max", "mean"):
        assert (f'wardready_latency_rtt_seconds{{method="tcp",statistic="{stat}",'
                f'target="127.0.0.1"}}') in text
    assert 'wardready_latency_loss_ratio{method="icmp-raw",target="10.213.0.2"} 1.0' in text
    assert 'wardready_latency_probes_sent{method="icmp-raw",target="city.invalid"} 0.0' in text
    assert latency.CHECK.name == "latency" and latency.CHECK.samples is latency.samples
    # a result survives the JSON trip the report makes
    assert latency.Result.model_validate_json(result.model_dump_json()) == result
