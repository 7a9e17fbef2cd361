"""An emulated ward link for tests and benchmarks: ward -- router -- city in network namespaces.

    with WardLink(LinkSpec(rate_mbit=20, loss_percent=2, delay_ms=40, jitter_ms=10)) as link:
        link.run(link.ward_ns, ["ping", "-c", "3", link.city_ip], timeout=10)

The kernel here has no netem (see /work/shared/TESTBENCH.md), so the link is built from:
- rate: a tbf qdisc on each of the ROUTER's egress interfaces (toward the ward = download,
  toward the city = upload). A qdisc on an endpoint would slow its sender instead of
  queueing and dropping like a real bottleneck.
- loss: an nftables rule in the router's forward hook, ``numgen random mod N < k drop``,
  which sees both directions.
- blocked UDP: an nftables rule in the same chain, before the loss rules, that drops every
  forwarded UDP packet both ways (a ward firewall that lets only TCP out).
- delay and jitter: lab/delayer.py, an NFQUEUE program in the router namespace fed by
  ``iptables -A FORWARD -o <ward side> -j NFQUEUE --queue-bypass`` (city -> ward only).
Offloads (gro/gso/tso) are off on every veth end so that loss and tbf see real
wire-sized packets instead of 64 KB aggregates.

`TwoHostWardLink` puts two ward hosts (A, B) on a bridged ward LAN behind the same router,
so both share one shaped uplink: a call on A and a speed test on B meet in its queues.

Needs root and iproute2, nftables, iptables, ethtool (scripts/setup.sh installs them).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from lab import REPO

DELAYER = Path(__file__).with_name("delayer.py")
# The router's interfaces; each endpoint's interface is called eth0.
TOWARD_WARD = "toward"
TOWARD_CITY = "tocity"
LAN_BRIDGE = "br0"  # TwoHostWardLink's ward switch
NFT_TABLE = "wardlink"
QUEUE_NUM = 0
# TCP over Ethernet with timestamps: 1448 payload bytes in a 1514-byte frame (tbf counts
# the whole skb, Ethernet header included).
TCP_MSS = 1448
FRAME = 1514
LOSS_SCALE = 1_000_000  # numgen modulus: loss resolution of 0.0001 %


@dataclass(frozen=True)
class LinkSpec:
    """What the emulated link does; the default is an unshaped, lossless, undelayed link."""

    rate_mbit: float | None = None  # tbf rate each direction; None = unshaped
    loss_percent: float = 0.0  # independent random drop in EACH direction
    delay_ms: float = 0.0  # added city -> ward only
    jitter_ms: float = 0.0  # delay uniform in [delay - jitter, delay + jitter], order kept
    block_udp: bool = False  # drop all forwarded UDP, both directions

    def __post_init__(self) -> None:
        if self.rate_mbit is not None and not 0.01 <= self.rate_mbit <= 10_000:
            raise ValueError(f"rate_mbit {self.rate_mbit} outside 0.01..10000")
        if not 0 <= self.loss_percent <= 100:
            raise ValueError(f"loss_percent {self.loss_percent} outside 0..100")
        if not 0 <= self.jitter_ms <= self.delay_ms <= 10_000:
            raise ValueError("need 0 <= jitter_ms <= delay_ms <= 10000")


@dataclass(frozen=True)
class LinkTruth:
    """What a correct measurement of a LinkSpec should find (see `truth`)."""

    goodput_mbit: float | None  # TCP goodput ceiling, None when unshaped
    round_trip_loss: float  # fraction of echo requests that get no reply
    rtt_ms: float  # median round-trip time
    jitter_ms: float  # mean |RTT(i+1) - RTT(i)| of consecutive probes


def goodput_ceiling_mbit(rate_mbit: float) -> float:
    """TCP goodput ceiling through tbf at `rate_mbit`: rate x 1448/1514.

    tbf charges each whole frame (1514 bytes with the Ethernet header) while TCP with
    timestamps carries 1448 payload bytes in it; acks travel the other direction's shaper.
    20 Mbit/s -> 19.13 Mbit/s.
    """
    return rate_mbit * TCP_MSS / FRAME


def round_trip_loss(loss_percent: float) -> float:
    """Probability an echo gets no reply: 1 - (1 - p)^2, the loss applying each way."""
    p = loss_percent / 100
    return 1 - (1 - p) ** 2


def uniform_jitter_ms(jitter_ms: float) -> float:
    """Mean |a - b| of two independent U(-j, j) delays: 2j/3.

    Valid when probes are spaced more than 2j apart; closer probes are held back to keep
    order, which shrinks the jitter (see `simulate_delays`).
    """
    return 2 * jitter_ms / 3


def simulate_delays(spec: LinkSpec, interval_ms: float, count: int = 20_000,
                    seed: int = 1) -> list[float]:
    """Added one-way delays (ms) the delayer gives probes sent every `interval_ms`.

    Same rule as lab/delayer.py: due = max(sent + U(delay - j, delay + j), previous due).
    Assumes strictly periodic probes, as `one_way_delays` sends them (measured within
    0.1-0.3 ms of this at 1-25 ms spacing). ping is not periodic at short intervals (it
    schedules with a millisecond token bucket): at -i 0.005 its RTT jitter read 5.6-5.8 ms
    where this predicts 4.6, so with ping keep probes at least 2 x jitter apart.
    """
    rng = random.Random(seed)
    last_due = float("-inf")
    out = []
    for i in range(count):
        sent = i * interval_ms
        due = max(sent + spec.delay_ms + rng.uniform(-spec.jitter_ms, spec.jitter_ms), last_due)
        last_due = due
        out.append(due - sent)
    return out


def truth(spec: LinkSpec, base_rtt_ms: float = 0.0,
          probe_interval_ms: float | None = None) -> LinkTruth:
    """The figures a correct measurement of `spec` should find.

    `base_rtt_ms` is the RTT of the same link without delay (measure it: a few tenths of
    a ms on veth, plus serialization at the shaped rate). Delay is added one way, so the
    median RTT is base + delay. Jitter is 2j/3 for probes spaced more than 2j apart;
    with `probe_interval_ms` given and closer than that, median and jitter come from
    `simulate_delays` instead.
    """
    rtt, jitter = base_rtt_ms + spec.delay_ms, uniform_jitter_ms(spec.jitter_ms)
    if probe_interval_ms is not None and probe_interval_ms < 2 * spec.jitter_ms:
        delays = simulate_delays(spec, probe_interval_ms)
        rtt = base_rtt_ms + statistics.median(delays)
        jitter = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(delays))
    return LinkTruth(
        goodput_mbit=None if spec.rate_mbit is None else goodput_ceiling_mbit(spec.rate_mbit),
        round_trip_loss=round_trip_loss(spec.loss_percent), rtt_ms=rtt, jitter_ms=jitter)


def tbf_args(rate_mbit: float) -> list[str]:
    """tbf parameters that deliver `rate_mbit` for TCP.

    burst: the classic rule is at least rate/HZ (HZ=250 here: 4 ms of traffic), as a
    jiffy-driven tbf cannot send more than a bucket per tick. This kernel's tbf runs on
    hrtimers (/proc/net/psched shows a 1 GHz clock) and measured the same goodput at
    100 Mbit/s with a 2-frame bucket as with 16 ms of traffic; we still use 4 ms and at
    least 4 frames so other kernels get the rate too. A larger bucket only lets bursts
    through above the rate.
    limit: 50 ms of queue at the rate (at least 16 frames), like a modest real bottleneck
    buffer, and enough for TCP to fill the pipe at 40-50 ms RTT. A deeper floor (64 KB,
    262 ms at 2 Mbit/s) made 5 s iperf3 runs read up to 3 % above the rate: what is still
    queued when the sender stops arrives afterwards and is counted.
    """
    bytes_per_s = rate_mbit * 1e6 / 8
    burst = max(int(bytes_per_s * 0.004), 4 * FRAME)
    limit = max(int(bytes_per_s * 0.050), 16 * FRAME)
    return ["rate", f"{rate_mbit * 1000:.3f}kbit", "burst", str(burst), "limit", str(limit)]


@dataclass
class PingResult:
    """Echo replies by sequence number (RTT in ms) out of `sent` requests."""

    sent: int
    rtts: dict[int, float] = field(default_factory=dict)

    @property
    def received(self) -> int:
        return len(self.rtts)

    @property
    def loss(self) -> float:
        """Fraction of requests without a reply."""
        return 1 - self.received / self.sent if self.sent else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rtts.values())

    @property
    def jitter_ms(self) -> float:
        """Mean |RTT(i+1) - RTT(i)| over consecutive sequence numbers both answered."""
        diffs = [abs(self.rtts[s + 1] - r) for s, r in self.rtts.items() if s + 1 in self.rtts]
        return statistics.fmean(diffs) if diffs else 0.0


class Namespaces:
    """A lab of network namespaces as a context manager: `_build()` on entry (and `close()`
    if it fails), `close()` on exit; commands run inside its own namespaces only, and the
    processes started are kept in `_procs` for `close()` to stop."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        """Namespaces made so far, for `close()` to delete."""

    @property
    def namespaces(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sh(self, ns: str | None, argv: Sequence[str], input: str | None = None,
            ok_codes: Sequence[int] = (0,)) -> str:
        cmd = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
        out = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=20,
                             check=False)
        if out.returncode not in ok_codes:
            raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        # tee, not sysctl: procps is missing from slim Debian images. /proc/sys/net shows
        # the namespace of the process that opens it.
        self._sh(ns, ["tee", f"/proc/sys/{key}"], input=value + "\n")

    def _delete_namespaces(self) -> None:
        """Kill what still runs inside the namespaces made (a grandchild of a command run
        here) and delete them; raises, naming each, if any would not go."""
        errors = []
        for ns in self._created:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True, timeout=10, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in list(self._created):
            out = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                                 timeout=10, check=False)
            if out.returncode == 0 or not Path("/run/netns", ns).exists():
                self._created.remove(ns)
            else:
                errors.append(f"{ns}: {out.stderr.strip()}")
        if errors:
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside namespace `ns`; it is killed on exit if still running."""
        self._check_ns(ns)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], timeout: float,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` inside namespace `ns` to completion; output captured as text."""
        self._check_ns(ns)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("check", False)
        return subprocess.run(["ip", "netns", "exec", ns, *argv], timeout=timeout, **kw)

    def _check_ns(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise ValueError(f"{ns!r} is not one of this lab's namespaces {self.namespaces}")


class CutOffHost(Namespaces):
    """Context manager: one namespace with only its loopback up, a PC with no network at all.

    `resolv_conf`: the namespace's own /etc/resolv.conf (`ip netns exec` binds
    /etc/netns/NAME/resolv.conf over /etc/resolv.conf for what it runs), e.g.
    "nameserver 127.0.0.1" for a resolver that is not there: every lookup fails at once and
    no packet leaves the namespace. Everything is removed on exit, also when the body raises.
    Needs root and iproute2.
    """

    def __init__(self, resolv_conf: str | None = None) -> None:
        super().__init__()
        self.ns = f"wr-{secrets.token_hex(4)}-pc"
        self._resolv_conf = resolv_conf
        self._etc = Path("/etc/netns") / self.ns

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.ns,)

    def _build(self) -> None:
        if self._resolv_conf is not None:
            self._etc.mkdir(parents=True)
            (self._etc / "resolv.conf").write_text(self._resolv_conf)
        out = subprocess.run(["ip", "netns", "add", self.ns], capture_output=True, text=True,
                             timeout=20, check=False)
        if out.returncode:
            raise RuntimeError(f"ip netns add {self.ns}: {out.stderr.strip()}")
        self._created.append(self.ns)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], capture_output=True,
                       timeout=20, check=True)

    def close(self) -> None:
        """Stop what runs inside, delete the namespace and its /etc/netns folder."""
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        for ns in list(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20,
                           check=False)
            self._created.remove(ns)
        shutil.rmtree(self._etc, ignore_errors=True)


class WardLink(Namespaces):
    """Context manager: three namespaces ward -- router -- city joined by veth pairs.

    Names and addresses are random per instance so that parallel instances (tests,
    other engineers) never meet. Everything is torn down on exit, also when the body
    raises.
    """

    def __init__(self, spec: LinkSpec | None = None, *, delayer_seed: int | None = None,
                 delayer_args: Sequence[str] = ()) -> None:
        super().__init__()
        suffix = secrets.token_hex(4)
        self.ward_ns, self.router_ns, self.city_ns = (
            f"wr-{suffix}-{role}" for role in ("ward", "router", "city"))
        rng = random.SystemRandom()
        # 10.a.b.0/30 ward side, 10.a.b.4/30 city side; a, b random per instance.
        net = f"10.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}"
        self.ward_ip, self.router_ward_ip = f"{net}.2", f"{net}.1"
        self.city_ip, self.router_city_ip = f"{net}.6", f"{net}.5"
        self.spec = spec or LinkSpec()
        self._delayer_seed = delayer_seed
        self._delayer_args = list(delayer_args)  # e.g. ["--no-batch"] to compare costs
        self._delayer: subprocess.Popen[bytes] | None = None
        self._delayer_log: Any = None
        self._queue_rule = False

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.ward_ns, self.router_ns, self.city_ns)

    @property
    def ward_host_namespaces(self) -> tuple[str, ...]:
        """The namespaces of the ward's hosts (the PCs), which route through the router."""
        return (self.ward_ns,)

    # -- running things ------------------------------------------------------------------

    # -- building and tearing down -------------------------------------------------------

    def _build(self) -> None:
        self._build_namespaces()
        self.reconfigure(self.spec)

    def _build_namespaces(self) -> None:
        for ns in self.namespaces:
            self._sh(None, ["ip", "netns", "add", ns])
            self._created.append(ns)
        r = self.router_ns
        self._build_ward_side()
        # Created straight inside the namespaces: no interface name ever appears in the
        # root namespace, where parallel instances would collide.
        self._sh(None, ["ip", "-n", r, "link", "add", TOWARD_CITY, "type", "veth",
                        "peer", "name", "eth0", "netns", self.city_ns])
        self._interface_up(r, TOWARD_CITY, f"{self.router_city_ip}/30")
        self._interface_up(self.city_ns, "eth0", f"{self.city_ip}/30")
        for ns in self.namespaces:
            self._sh(None, ["ip", "-n", ns, "link", "set", "lo", "up"])
            # No IPv6: no router solicitations or DAD packets mixed into measurements.
            for conf in ("all", "default"):
                self._sysctl(ns, f"net/ipv6/conf/{conf}/disable_ipv6", "1")
        self._sysctl(r, "net/ipv4/ip_forward", "1")
        for ns in self.ward_host_namespaces:
            self._sh(None, ["ip", "-n", ns, "route", "add", "default",
                            "via", self.router_ward_ip])
        self._sh(None, ["ip", "-n", self.city_ns, "route", "add", "default",
                        "via", self.router_city_ip])
        # Before the iptables (priority 0) NFQUEUE rule, so dropped packets cost the
        # delayer nothing.
        self._sh(r, ["nft", "-f", "-"], input=(
            f"table inet {NFT_TABLE} {{\n  chain forward {{\n"
            "    type filter hook forward priority -10; policy accept;\n  }\n}\n"))

    def _build_ward_side(self) -> None:
        """The router's `toward` interface and what it reaches: here the ward host itself."""
        self._sh(None, ["ip", "-n", self.router_ns, "link", "add", TOWARD_WARD, "type", "veth",
                        "peer", "name", "eth0", "netns", self.ward_ns])
        self._interface_up(self.ward_ns, "eth0", f"{self.ward_ip}/30")
        self._interface_up(self.router_ns, TOWARD_WARD, f"{self.router_ward_ip}/30")

    def _interface_up(self, ns: str, dev: str, address: str | None = None) -> None:
        """Offloads off (loss and tbf see wire-sized packets), the address if any, up."""
        if address is not None:
            self._sh(None, ["ip", "-n", ns, "addr", "add", address, "dev", dev])
        self._sh(ns, ["ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off"])
        self._sh(None, ["ip", "-n", ns, "link", "set", dev, "up"])

    def close(self) -> None:
        """Stop every process started here and delete the namespaces (idempotent)."""
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        self._stop_delayer()
        self._delete_namespaces()

    # -- changing the link ---------------------------------------------------------------

    def reconfigure(self, spec: LinkSpec) -> None:
        """Apply `spec` to the running link (rate, UDP blocking, loss, delay) without
        rebuilding it."""
        r = self.router_ns
        for dev in (TOWARD_WARD, TOWARD_CITY):
            if spec.rate_mbit is None:
                # Exit 2 when there is no root qdisc to delete.
                self._sh(None, ["tc", "-n", r, "qdisc", "del", "dev", dev, "root"],
                         ok_codes=(0, 2))
            else:
                self._sh(None, ["tc", "-n", r, "qdisc", "replace", "dev", dev, "root", "tbf",
                                *tbf_args(spec.rate_mbit)])
        script = f"flush chain inet {NFT_TABLE} forward\n"
        if spec.block_udp:
            # First, so blocked UDP is not also counted by the loss rules' counters.
            script += f"add rule inet {NFT_TABLE} forward meta l4proto udp counter drop\n"
        if spec.loss_percent > 0:
            threshold = round(spec.loss_percent / 100 * LOSS_SCALE)
            # One rule per direction, each with its own counter (see loss_drops).
            for dev in (TOWARD_WARD, TOWARD_CITY):
                script += (f'add rule inet {NFT_TABLE} forward oifname "{dev}" '
                           f"numgen random mod {LOSS_SCALE} < {threshold} counter drop\n")
        self._sh(r, ["nft", "-f", "-"], input=script)
        delayed = spec.delay_ms > 0 or spec.jitter_ms > 0
        if delayed:
            self._delayer_command(f"set {spec.delay_ms} {spec.jitter_ms}")
            if not self._queue_rule:
                self._sh(r, ["iptables", "-A", *self._queue_rule_args()])
                self._queue_rule = True
        elif self._queue_rule:
            # Rule off first: packets already held still leave on time.
            self._sh(r, ["iptables", "-D", *self._queue_rule_args()])
            self._queue_rule = False
            self._delayer_command("set 0 0")
        self.spec = spec

    def _queue_rule_args(self) -> list[str]:
        # --queue-bypass: should the delayer die, packets flow undelayed instead of vanishing.
        return ["FORWARD", "-o", TOWARD_WARD, "-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM),
                "--queue-bypass"]

    # -- the delayer ---------------------------------------------------------------------

    def _start_delayer(self) -> None:
        argv = [sys.executable, str(DELAYER), "--queue-num", str(QUEUE_NUM)]
        if self._delayer_seed is not None:
            argv += ["--seed", str(self._delayer_seed)]
        argv += self._delayer_args
        # Lives as long as the delayer; closed in _stop_delayer.
        self._delayer_log = tempfile.TemporaryFile()  # noqa: SIM115
        self._delayer = subprocess.Popen(
            ["ip", "netns", "exec", self.router_ns, *argv], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._delayer_log)
        line = self._delayer_line(timeout=10)
        if line != "ready":
            raise RuntimeError(f"delayer did not start: {line!r} {self._delayer_stderr()}")

    def _delayer_command(self, command: str) -> str:
        if self._delayer is None:
            self._start_delayer()
        assert self._delayer is not None and self._delayer.stdin is not None
        self._delayer.stdin.write(command.encode() + b"\n")
        self._delayer.stdin.flush()
        reply = self._delayer_line(timeout=5)
        if reply.startswith("error") or not reply:
            raise RuntimeError(f"delayer: {command!r} -> {reply!r} {self._delayer_stderr()}")
        return reply

    def _delayer_line(self, timeout: float) -> str:
        assert self._delayer is not None and self._delayer.stdout is not None
        return _read_line(self._delayer.stdout.fileno(), timeout)

    def _delayer_stderr(self) -> str:
        if self._delayer_log is None:
            return ""
        self._delayer_log.seek(0)
        return str(self._delayer_log.read().decode(errors="replace").strip())

    def delayer_stats(self) -> dict[str, Any]:
        """The delayer's counters plus the kernel's for its queue ({} when not running).

        `late_*_ms`: how long after their due time packets left (the delayer keeping up);
        `queue_dropped`/`user_dropped`: packets the kernel dropped because the queue or
        the netlink socket was full.
        """
        if self._delayer is None:
            return {}
        stats: dict[str, Any] = json.loads(self._delayer_command("stats"))
        if stats["released"]:
            stats["late_mean_ms"] = stats["late_sum_ms"] / stats["released"]
        for line in self._sh(self.router_ns,
                             ["cat", "/proc/net/netfilter/nfnetlink_queue"]).splitlines():
            f = line.split()
            if f and int(f[0]) == QUEUE_NUM:
                stats.update(queue_total=int(f[2]), queue_dropped=int(f[5]),
                             user_dropped=int(f[6]))
        return stats

    def _stop_delayer(self) -> None:
        proc, self._delayer = self._delayer, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # EOF: it releases what it holds and exits
            _stop(proc, term_first=False)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._delayer_log is not None:
            self._delayer_log.close()
            self._delayer_log = None
        self._queue_rule = False

    def add_counter(self, name: str, match: str, after_loss: bool = False) -> None:
        """Count the forwarded packets that `match` (an nftables expression such as
        `udp dport 8471` or `oifname "tocity" meta l4proto tcp`) as they reach the router, or
        with `after_loss` those the loss rules let through. Read them with `counters()`;
        `reconfigure` removes them."""
        verb = "add" if after_loss else "insert"  # insert: ahead of every rule that drops
        self._sh(self.router_ns, ["nft", "-f", "-"], input=(
            f'{verb} rule inet {NFT_TABLE} forward {match} counter comment "{name}"\n'))

    def counters(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) of each `add_counter` counter by name; bytes are whole IP packets
        (headers included, no Ethernet header)."""
        out = json.loads(self._sh(self.router_ns, ["nft", "-j", "list", "chain", "inet",
                                                   NFT_TABLE, "forward"]))
        found = {}
        for item in out["nftables"]:
            rule = item.get("rule")
            if rule is None or "comment" not in rule:
                continue
            for expr in rule["expr"]:
                if "counter" in expr:
                    found[rule["comment"]] = (int(expr["counter"]["packets"]),
                                              int(expr["counter"]["bytes"]))
        return found

    def loss_drops(self) -> dict[str, int]:
        """Packets dropped by the loss rules since the last reconfigure, by direction."""
        out = self._sh(self.router_ns, ["nft", "list", "chain", "inet", NFT_TABLE, "forward"])
        drops = {"download": 0, "upload": 0}
        for dev, packets in re.findall(r'oifname "(\w+)".*counter packets (\d+)', out):
            drops["download" if dev == TOWARD_WARD else "upload"] = int(packets)
        return drops

    def shaper_drops(self) -> dict[str, int]:
        """Packets each direction's rate limiter (tbf) dropped because its queue was full
        (the bottleneck's tail drop), counted since that tbf was installed."""
        drops = {}
        for direction, dev in (("download", TOWARD_WARD), ("upload", TOWARD_CITY)):
            out = self._sh(None, ["tc", "-n", self.router_ns, "-s", "qdisc", "show", "dev", dev])
            found = re.search(r"dropped (\d+)", out)
            drops[direction] = int(found.group(1)) if found else 0
        return drops


class TwoHostWardLink(WardLink):
    """Context manager: two ward hosts, A and B, on one ward LAN behind one shaped uplink.

        host A (ward_ns) --+
                           +-- br0 (switch_ns) -- uplink | toward -- router -- city
        host B (host_b_ns) +

    The ward LAN is a bridge in a namespace of its own (the ward's switch); the router's
    `toward` interface is its uplink port, so the router is exactly WardLink's: the tbf
    on `toward` and `tocity`, the nftables loss rules and the delayer's queue apply to the
    ward's traffic as a whole, both hosts sharing them. Traffic between A and B stays on
    the switch, unshaped, as on a real office LAN. Host A keeps WardLink's names
    (`ward_ns`, `ward_ip`; also `host_a_ns`, `host_a_ip`), so every helper that measures
    from the ward measures from A; host B is `host_b_ns`, `host_b_ip`. The ward LAN is
    10.a.b.8/29: router .9, A .10, B .11 (the city side stays 10.a.b.4/30).
    """

    def __init__(self, spec: LinkSpec | None = None, *, delayer_seed: int | None = None,
                 delayer_args: Sequence[str] = ()) -> None:
        super().__init__(spec, delayer_seed=delayer_seed, delayer_args=delayer_args)
        prefix = self.ward_ns.removesuffix("-ward")
        self.host_b_ns, self.switch_ns = f"{prefix}-wardb", f"{prefix}-lan"
        net = self.ward_ip.rsplit(".", 1)[0]
        self.router_ward_ip, self.ward_ip, self.host_b_ip = (f"{net}.{n}" for n in (9, 10, 11))

    @property
    def host_a_ns(self) -> str:
        return self.ward_ns

    @property
    def host_a_ip(self) -> str:
        return self.ward_ip

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.ward_ns, self.host_b_ns, self.switch_ns, self.router_ns, self.city_ns)

    @property
    def ward_host_namespaces(self) -> tuple[str, ...]:
        return (self.ward_ns, self.host_b_ns)

    def _build_ward_side(self) -> None:
        s = self.switch_ns
        self._sh(None, ["ip", "-n", s, "link", "add", LAN_BRIDGE, "type", "bridge",
                        "stp_state", "0"])  # no STP: ports forward at once
        self._sh(None, ["ip", "-n", self.router_ns, "link", "add", TOWARD_WARD, "type", "veth",
                        "peer", "name", "uplink", "netns", s])
        self._interface_up(self.router_ns, TOWARD_WARD, f"{self.router_ward_ip}/29")
        for port, ns, ip in (("pa", self.ward_ns, self.ward_ip),
                             ("pb", self.host_b_ns, self.host_b_ip)):
            self._sh(None, ["ip", "-n", s, "link", "add", port, "type", "veth",
                            "peer", "name", "eth0", "netns", ns])
            self._interface_up(ns, "eth0", f"{ip}/29")
        for port in ("uplink", "pa", "pb"):
            self._sh(None, ["ip", "-n", s, "link", "set", port, "master", LAN_BRIDGE])
            self._interface_up(s, port)
        self._sh(None, ["ip", "-n", s, "link", "set", LAN_BRIDGE, "up"])


def _read_line(fd: int, timeout: float) -> str:
    """One line from pipe `fd` within `timeout` s ('' if none came)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1)  # one byte at a time: never read past the line
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _stop(proc: subprocess.Popen[Any], *, term_first: bool = True, grace: float = 2.0) -> None:
    """End `proc`: SIGTERM (unless it is already leaving), then SIGKILL after `grace` s."""
    if proc.poll() is not None:
        return
    if term_first:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    if not term_first:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(timeout=5)


# -- measurements with real tools inside the namespaces ------------------------------------

def wait_listening(link: CityLab, ns: str, port: int, timeout: float = 5.0) -> None:
    """Return once something listens on TCP `port` in `ns`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = link.run(ns, ["ss", "-Hltn", f"sport = :{port}"], timeout=5).stdout
        if out.strip():
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} in {ns} after {timeout} s")


def iperf3_goodput(link: WardLink, *, seconds: int = 5, streams: int = 1,
                   download: bool = True, port: int = 5201) -> float:
    """TCP goodput in Mbit/s measured by iperf3 (client in the ward, server in the city).

    `download`: city -> ward (iperf3 -R). The first second is omitted (-O 1): slow start
    and the tbf bucket's initial burst would otherwise inflate short runs.
    """
    server = link.popen(link.city_ns, ["iperf3", "-s", "-1", "-B", link.city_ip,
                                       "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(link, link.city_ns, port)
        argv = ["iperf3", "-c", link.city_ip, "-p", str(port), "-t", str(seconds), "-O", "1",
                "-P", str(streams), "-J", *(["-R"] if download else [])]
        out = link.run(link.ward_ns, argv, timeout=seconds + 30)
        result = json.loads(out.stdout)
        if "error" in result:
            raise RuntimeError(f"iperf3: {result['error']}")
        return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        _stop(server)


# Receiver and sender for one_way_delays, run with this interpreter inside the namespaces.
_OWD_RECEIVER = r"""
import socket, struct, sys, time
count, port, wait = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS (no constant before Python 3.14)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", port))
print("ready", flush=True)
s.settimeout(wait)
for _ in range(count):
    try:
        data, anc, _, _ = s.recvmsg(64, 64)
    except TimeoutError:
        break
    seq, sent = struct.unpack("!Iq", data[:12])
    sec, nsec = struct.unpack("=qq", anc[0][2][:16])
    print(seq, sent, sec * 10**9 + nsec)
"""
_OWD_SENDER = r"""
import socket, struct, sys, time
dst, port, count, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for seq in range(count):
    due = start + seq * interval
    if due - time.monotonic() > 0.001:
        time.sleep(due - time.monotonic() - 0.001)
    while time.monotonic() < due:  # spin the last ms: sleep alone overshoots
        pass
    s.sendto(struct.pack("!Iq", seq, time.time_ns()), (dst, port))
"""


def one_way_delays(link: WardLink, count: int, interval: float,
                   port: int = 9999) -> list[tuple[int, float, float]]:
    """Send `count` UDP probes city -> ward every `interval` s; (seq, sent, received) each.

    Times in ms on the shared wall clock (all namespaces share the host's clocks), the
    receive time stamped by the kernel (SO_TIMESTAMPNS), so receiver scheduling adds
    nothing. Listed in arrival order; lost probes are missing.
    """
    rx = link.popen(link.ward_ns, [sys.executable, "-c", _OWD_RECEIVER, str(count), str(port),
                                   "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        if _read_line(rx.stdout.fileno(), timeout=10) != "ready":
            raise RuntimeError("one-way-delay receiver did not start")
        link.run(link.city_ns, [sys.executable, "-c", _OWD_SENDER, link.ward_ip, str(port),
                                str(count), str(interval)], timeout=count * interval + 30,
                 check=True)
        out, _ = rx.communicate(timeout=30)
    finally:
        _stop(rx)
    return [(int(seq), int(sent) / 1e6, int(recv) / 1e6)
            for seq, sent, recv in (line.split() for line in out.splitlines())]


PING_LINE = re.compile(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms")


def ping(link: WardLink, count: int, interval: float, *, size: int = 56,
         wait_s: float = 1.0) -> PingResult:
    """Ping the city from the ward; per-sequence RTTs (duplicates ignored).

    `interval` >= 0.002 s (ping's floor for root). Replies later than `wait_s` after the
    last request count as lost.
    """
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-s", str(size),
            "-W", str(wait_s), link.city_ip]
    out = link.run(link.ward_ns, argv, timeout=count * interval + wait_s + 30)
    rtts: dict[int, float] = {}
    for m in PING_LINE.finditer(out.stdout):
        rtts.setdefault(int(m.group(1)), float(m.group(2)))
    if not rtts and out.returncode not in (0, 1):
        raise RuntimeError(f"ping failed ({out.returncode}): {out.stderr.strip()}")
    return PingResult(sent=count, rtts=rtts)


def require_netlab() -> str | None:
    """Why a WardLink cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [b for b in ("ip", "tc", "nft", "iptables", "ethtool", "iperf3", "ping", "ss")
               if shutil.which(b) is None]
    if missing:
        return f"missing {', '.join(missing)} (scripts/setup.sh installs them as root)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "PyPI netfilterqueue is not installed (pip install -e '.[test]')"
    return None


LAB_PLAN: dict[str, Any] = {"throughput": {"daily_budget_mb": 1_000_000, "test_max_mb": 1000}}
"""The measurement plan of a lab server: no quiet window, no budget to speak of, so a test
that measures a link's accuracy runs whenever it is asked to (the plan's own behaviour on
emulated links has tests of its own)."""


class CityLab(Protocol):
    """A lab with a city namespace to run the server in (`WardLink`, `SegmentLab`)."""

    city_ns: str
    city_ip: str

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]: ...

    def run(self, ns: str, argv: Sequence[str], timeout: float,
            **kw: Any) -> subprocess.CompletedProcess[Any]: ...


def start_city_server(link: CityLab, workdir: Path, port: int = 8470,
                      echo_port: int = 8471, inventory: Path | None = None,
                      plan: dict[str, Any] | None = None,
                      echo: dict[str, Any] | None = None,
                      settings: dict[str, Any] | None = None) -> Path:
    """A real wardready server in the city namespace (stopped with the link); returns the
    path of an agent token for ward sai-gon, host bench-pc. `inventory`: the server's
    inventory file, the repository's inventory.yml by default, with `plan` (LAB_PLAN by
    default) as its measurement plan; `echo`: settings of its `udp_echo` section (caps)
    besides the port; `settings`: more of server.yml (`tls`)."""
    import yaml

    from wardready.server.store import Store

    doc = yaml.safe_load((inventory or REPO / "inventory.yml").read_text())
    doc["measurement_plan"] = LAB_PLAN if plan is None else plan
    (workdir / "inventory.yml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    config = workdir / "server.yml"
    config.write_text(yaml.safe_dump({
        "listen_host": link.city_ip, "listen_port": port, "database": "city.db",
        "inventory": "inventory.yml",
        "udp_echo": {"listen_port": echo_port, **(echo or {})}, **(settings or {})}))
    store = Store(workdir / "city.db")
    token = workdir / "agent.token"
    token.write_text(store.issue_token("sai-gon", "bench-pc"))
    store.close()
    link.popen(link.city_ns, [str(Path(sys.executable).parent / "wardready-server"), "serve",
                              "--config", str(config)],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    wait_listening(link, link.city_ns, port, timeout=20)
    return token


def run_check(link: WardLink, name: str, config: dict[str, Any], token: Path,
              timeout: float, port: int = 8470, ns: str | None = None) -> dict[str, Any]:
    """Run one wardready check in the ward (`python -m wardready.checks`) against the city's
    server; `ns`: on that ward host (a TwoHostWardLink's `host_b_ns`), the ward's by default."""
    argv = [sys.executable, "-m", "wardready.checks", name, "--config", json.dumps(config),
            "--server", f"http://{link.city_ip}:{port}", "--token-file", str(token)]
    out = link.run(ns or link.ward_ns, argv, timeout=timeout, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"python -m wardready.checks {name} failed: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def fetch(link: Namespaces, ns: str, url: str, token: Path | None = None,
          timeout: float = 10.0) -> bytes:
    """GET `url` from inside namespace `ns` (the server listens in the city's)."""
    script = ("import sys, urllib.request\n"
              "headers = {'Authorization': 'Bearer ' + open(sys.argv[2]).read().strip()} "
              "if len(sys.argv) > 2 else {}\n"
              "request = urllib.request.Request(sys.argv[1], headers=headers)\n"
              "sys.stdout.buffer.write(urllib.request.urlopen(request, timeout=10).read())\n")
    argv = [sys.executable, "-c", script, url, *([str(token)] if token else [])]
    out = link.run(ns, argv, timeout=timeout, text=False)
    if out.returncode:
        raise RuntimeError(f"GET {url} in {ns} failed: {out.stderr.decode()[-300:]}")
    body: bytes = out.stdout
    return body


def server_metrics(link: WardLink, port: int = 8470) -> dict[str, float]:
    """The city server's /metrics, as `name{labels}` -> value."""
    from lab.fleet import metric_values

    return metric_values(fetch(link, link.city_ns, f"http://{link.city_ip}:{port}/metrics"))


def start_ward_agent(link: WardLink, ns: str, workdir: Path, host: str, token: Path,
                     port: int = 8470, role: str | None = None,
                     checks: dict[str, Any] | None = None) -> subprocess.Popen[Any]:
    """A real `wardready-agent run` on a ward host (ward sai-gon), following the server's
    plan; only the host check and the throughput test (unless `checks` says otherwise), so
    the link carries what the test is about. Its log is `workdir/<host>/agent.log`."""
    import yaml

    from wardready.checks import REGISTRY

    home = workdir / host
    home.mkdir(parents=True, exist_ok=True)
    config = home / "agent.yml"
    config.write_text(yaml.safe_dump({
        "server_url": f"http://{link.city_ip}:{port}", "ward": "sai-gon", "host": host,
        "role": role, "token_file": str(token), "start_jitter_seconds": 0,
        "checks": {**{n: {"enabled": False} for n in REGISTRY},
                   "host": {"interval_seconds": 600}, "bandwidth": {}, **(checks or {})}}))
    with (home / "agent.log").open("ab") as log:  # the agent keeps its own copy of the file
        return link.popen(ns, [str(Path(sys.executable).parent / "wardready-agent"), "run",
                               "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                          cwd=home)


_PROBE_INTERVALS = r"""
import asyncio, sys
from wardready.checks import probe
from wardready.checks.base import Context, ServerLink
config = probe.Config.model_validate_json(sys.argv[1])
server = ServerLink(sys.argv[3], sys.stdin.read().strip())
async def main():
    for _ in range(int(sys.argv[2])):
        print((await probe.run(config, Context(server=server))).model_dump_json(), flush=True)
asyncio.run(main())
"""


def probe_intervals(link: WardLink, config: Any, count: int, token: Path,
                    port: int = 8470) -> list[Any]:
    """`count` intervals of the continuous probe (`checks.probe.Config` `config`), back to
    back in the ward against the city's server: their results (`checks.probe.Result`)."""
    from wardready.checks import probe

    out = link.run(link.ward_ns, [sys.executable, "-c", _PROBE_INTERVALS,
                                  config.model_dump_json(), str(count),
                                  f"http://{link.city_ip}:{port}"],
                   timeout=count * config.timeout_seconds, input=token.read_text(), cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"probe intervals failed: {out.stderr.strip()[-2000:]}")
    return [probe.Result.model_validate_json(line) for line in out.stdout.splitlines()]
