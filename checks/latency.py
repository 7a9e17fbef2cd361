"""Latency, jitter and loss to configured targets, by raw ICMP, unprivileged ICMP or TCP connect.

Each target gets `count` probes sent on a fixed schedule (probe i leaves at start + i * interval,
whatever the replies do). A probe with no reply within `probe_timeout_seconds` is lost.

Methods:
- `icmp-raw`: echo requests through a raw ICMP socket (needs root or CAP_NET_RAW). The kernel
  builds the IP header; the check builds the echo header, picks a random identifier and
  attaches a BPF filter so only echo replies carrying it are queued to the socket.
- `icmp-dgram`: the unprivileged ICMP datagram socket (Linux: allowed when the process's group
  is in `net.ipv4.ping_group_range`; macOS always). The kernel picks the echo identifier and
  delivers only this socket's replies.
- `tcp`: connect time, SYN to SYN-ACK. A refused connection (RST) is an answer as good as any;
  only silence is a loss. As with ICMP, an answer to a retransmitted SYN (the kernel resends
  after 1 s) does not save the probe: its first SYN went unanswered.
- `auto`: the first of these the process may use, in that order.

Both ICMP methods share one non-blocking loop: a random nonce in every payload, and a reply
counts only if its source, identifier, sequence number (of a probe still outstanding) and
nonce match, so strays, duplicates and replies to an earlier run are ignored. All methods
time with `time.perf_counter_ns` around non-blocking calls, then prefer a kernel figure
(SO_TIMESTAMPNS receive time minus the wall clock read just before the send, TCP_INFO's
first RTT sample) when it is consistent with that bound, so a busy event loop (a bandwidth
test running alongside) does not inflate RTTs. ICMP probes are IPv4 only; under `auto`, a
target without an IPv4 address is probed by TCP.

Statistics (see `summarise`): quantiles interpolate linearly between the closest ranks (rank
(n - 1) * q, as numpy's default); jitter is the mean absolute difference between the RTTs of
consecutive answered probes, in sending order, which is the quantity RFC 3550's interarrival
jitter J estimates (it smooths |D| with gain 1/16; here every pair weighs the same).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import itertools
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, model_validator

from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    ResultModel,
)
from wardready.core.errors import ResolutionError
from wardready.core.metrics import MetricSpec, Sample

Method = Literal["icmp-raw", "icmp-dgram", "tcp"]
MethodChoice = Literal["auto", "icmp-raw", "icmp-dgram", "tcp"]

MAX_TARGETS = 16
MAX_PROBES = 1000
"""Bounds on label cardinality and on the per-probe RTT list in a result."""
RESOLVE_TIMEOUT_SECONDS = 5.0
PAYLOAD_BYTES = 56
"""ICMP payload size, as ping's default."""
KERNEL_CLOCK_SLACK_NS = 100_000
"""How far a kernel-timestamped RTT may exceed the user-space bound before it is distrusted
(the two stamps of each end are not taken at the same instant)."""

TargetName = Annotated[str, StringConstraints(min_length=1, max_length=253,
                                              pattern=r"^[A-Za-z0-9._:%-]+$")]


class Config(CheckConfig):
    """Where and how to probe. `interval_seconds` (inherited) is how often the check runs;
    `probe_interval_seconds` spaces the probes within one run."""

    targets: list[TargetName] = Field(default_factory=list, max_length=MAX_TARGETS)
    """Host names or IP addresses; empty means the host of the agent's server URL."""
    count: int = Field(default=20, ge=1, le=MAX_PROBES)
    probe_interval_seconds: float = Field(default=0.2, ge=0.01, le=60)
    probe_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    method: MethodChoice = "auto"
    tcp_port: int | None = Field(default=None, ge=1, le=65535)
    """Port for the `tcp` method; None means the server URL's port (or its scheme's), else 443."""

    @model_validator(mode="after")
    def _check(self) -> Config:
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("targets repeat: each is a metric label and must be unique")
        needed = budget_seconds(self.count, self.probe_interval_seconds,
                                self.probe_timeout_seconds) + RESOLVE_TIMEOUT_SECONDS
        if needed > self.timeout_seconds:
            raise ValueError(f"count, probe_interval_seconds and probe_timeout_seconds need up "
                             f"to {needed:g} s (name resolution included), more than "
                             f"timeout_seconds ({self.timeout_seconds:g})")
        return self


def budget_seconds(count: int, interval: float, timeout: float) -> float:
    """The longest one target's probing can take once its address is known."""
    return (count - 1) * interval + timeout


class Stats(ResultModel):
    """Summary of one series of probes (see the module docstring for the definitions). RTT
    fields are None when no probe was answered; the loss ratio is None when no probe could
    be sent (e.g. the name did not resolve)."""

    sent: int
    received: int
    loss_ratio: float | None
    rtt_min_seconds: float | None
    rtt_median_seconds: float | None
    rtt_p95_seconds: float | None
    rtt_max_seconds: float | None
    rtt_mean_seconds: float | None
    jitter_seconds: float | None
    """Mean absolute difference of consecutive answered probes' RTTs; None below 2 answers."""


class TargetResult(Stats):
    """One target's figures."""

    target: str
    address: str | None
    method: Method
    port: int | None
    """The TCP port probed (tcp method only)."""
    rtts_seconds: list[float | None] = Field(max_length=MAX_PROBES)
    """Each probe's RTT in sending order; None for a lost probe."""
    error: str | None = None


class Result(CheckResult):
    """One result per target, in configuration order."""

    targets: list[TargetResult] = Field(max_length=MAX_TARGETS)


def summarise(rtts: Sequence[float | None]) -> Stats:
    """Loss, RTT quantiles and jitter of probes in sending order (None = lost)."""
    answered = [r for r in rtts if r is not None]
    ordered = sorted(answered)
    n = len(ordered)
    return Stats(
        sent=len(rtts), received=n,
        loss_ratio=(len(rtts) - n) / len(rtts) if rtts else None,
        rtt_min_seconds=ordered[0] if n else None,
        rtt_median_seconds=quantile(ordered, 0.5),
        rtt_p95_seconds=quantile(ordered, 0.95),
        rtt_max_seconds=ordered[-1] if n else None,
        rtt_mean_seconds=sum(ordered) / n if n else None,
        jitter_seconds=(sum(abs(b - a) for a, b in itertools.pairwise(answered))
                        / (n - 1) if n >= 2 else None),
    )


def quantile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile of sorted values, interpolating linearly at rank (n - 1) * q."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def choose_method() -> Method:
    """What `auto` means for this process: the most precise method it is allowed to use."""
    if sys.platform == "linux" and _can_open(socket.SOCK_RAW):
        return "icmp-raw"
    if _can_open(socket.SOCK_DGRAM):
        return "icmp-dgram"
    return "tcp"


def _can_open(kind: int) -> bool:
    try:
        socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
    except OSError:  # EPERM without CAP_NET_RAW; EACCES outside ping_group_range
        return False
    return True


@dataclass(frozen=True)
class Probed:
    """What `measure` did: the method and address it used and each probe's RTT (None = lost)."""

    method: Method
    address: str
    port: int | None
    rtts: list[float | None]


async def measure(target: str, method: MethodChoice = "auto", count: int = 20,
                  interval: float = 0.2, timeout: float = 1.0, port: int = 443,
                  stop: asyncio.Event | None = None) -> Probed:
    """Probe one target `count` times, `interval` s apart; each probe waits up to `timeout` s.

    Setting `stop` sends no further probes (those in flight still get their time), so a caller
    can probe for as long as something else runs; the list then holds only the probes sent.
    Raises ResolutionError when the name does not resolve.
    """
    if count < 1 or interval <= 0 or timeout <= 0:
        raise ValueError("count must be at least 1, interval and timeout positive")
    chosen = choose_method() if method == "auto" else method
    infos = await _resolve(target, port)
    if chosen != "tcp":  # ICMP here is IPv4 only; TCP takes the system's preferred address
        ipv4 = [info for info in infos if info[0] == socket.AF_INET]
        if ipv4:
            infos = ipv4
        elif method == "auto":
            chosen = "tcp"
        else:
            raise ResolutionError(f"{target}: no IPv4 address, which {chosen} needs")
    family, sockaddr = infos[0][0], infos[0][4]
    stop = stop or asyncio.Event()
    if chosen != "tcp":
        kind = socket.SOCK_RAW if chosen == "icmp-raw" else socket.SOCK_DGRAM
        rtts = await _icmp(kind, sockaddr[0], count, interval, timeout, stop)
    else:
        rtts = await _tcp(family, sockaddr, count, interval, timeout, stop)
    return Probed(chosen, sockaddr[0], port if chosen == "tcp" else None, rtts)


async def probe(target: str, method: MethodChoice = "auto", count: int = 20,
                interval: float = 0.2, timeout: float = 1.0, port: int = 443,
                stop: asyncio.Event | None = None) -> list[float | None]:
    """Each probe's RTT in seconds (None = lost); `measure` also says which method it used."""
    return (await measure(target, method, count, interval, timeout, port, stop)).rtts


async def _resolve(target: str, port: int) -> list[Any]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ResolutionError(f"{target}: does not resolve ({exc or 'timed out'})") from exc
    infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise ResolutionError(f"{target}: no IP address")
    return infos


async def _wait_until(loop: asyncio.AbstractEventLoop, when: float, stop: asyncio.Event) -> bool:
    """Sleep until loop time `when`; True if `stop` was set meanwhile."""
    delay = when - loop.time()
    if delay > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()


def _rtt(sent_perf: int, got_perf: int, sent_wall: int | None, got_kernel: int | None,
         timeout: float) -> float | None:
    """Seconds from the user-space bound, or the kernel figure when it fits inside it."""
    rtt = got_perf - sent_perf
    if sent_wall is not None and got_kernel is not None:
        kernel = got_kernel - sent_wall
        if 0 < kernel <= rtt + KERNEL_CLOCK_SLACK_NS:  # otherwise the wall clock stepped
            rtt = kernel
    return rtt / 1e9 if rtt / 1e9 <= timeout else None


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    checksum = inet_checksum(header + payload)
    return struct.pack("!BBHHH", 8, 0, checksum, ident, seq) + payload


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ICMP messages."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _payload(nonce: bytes) -> bytes:
    return nonce + bytes(PAYLOAD_BYTES - len(nonce))


# --- icmp-raw and icmp-dgram: one non-blocking socket in the event loop ----------------------

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python lacks the name
_ANCILLARY_BYTES = socket.CMSG_SPACE(16)
_IP_SOURCE = slice(12, 16)


async def _icmp(kind: int, address: str, count: int, interval: float, timeout: float,
                stop: asyncio.Event) -> list[float | None]:
    """Echo requests through a SOCK_RAW (`icmp-raw`) or SOCK_DGRAM (`icmp-dgram`) socket."""
    loop = asyncio.get_running_loop()
    raw = kind == socket.SOCK_RAW
    linux = sys.platform == "linux"
    source = socket.inet_aton(address)
    nonce = os.urandom(8)
    payload = _payload(nonce)
    sent: dict[int, tuple[int, int]] = {}  # seq -> (perf ns, wall ns) at send
    rtts: list[float | None] = []
    outstanding: set[int] = set()
    finished = asyncio.Event()
    sending_done = False
    with socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        if linux:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        if raw:  # every ICMP packet of the host reaches a raw socket: the filter sorts them
            ident = random.randrange(1, 0x10000)
            if linux:
                _attach_echo_reply_filter(sock, ident)
        else:
            sock.bind(("0.0.0.0", 0))  # the kernel picks the echo identifier now
            ident = sock.getsockname()[1]

        def on_readable() -> None:
            for _ in range(256):  # bounded; the loop calls again while data is queued
                try:
                    data, ancdata, _, _ = sock.recvmsg(2048, _ANCILLARY_BYTES)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue  # an ICMP error queued on the socket: not an echo reply
                got_perf = time.perf_counter_ns()
                # raw sockets (and macOS's datagram ones) get the IP header; Linux's do not
                if raw or data[:1] == b"\x45":
                    if data[_IP_SOURCE] != source:
                        continue  # a reply from elsewhere (e.g. to a probe of another target)
                    data = data[(data[0] & 0x0F) * 4:]
                if len(data) < 8 + len(nonce) or data[0] != 0:
                    continue
                _, _, _, reply_id, seq = struct.unpack("!BBHHH", data[:8])
                if ((raw or linux) and reply_id != ident) or seq not in outstanding \
                        or data[8:8 + len(nonce)] != nonce:
                    continue  # stray, duplicate or from an earlier run
                outstanding.discard(seq)
                sent_perf, sent_wall = sent[seq]
                rtts[seq] = _rtt(sent_perf, got_perf, sent_wall, _kernel_time(ancdata),
                                 timeout)
                if sending_done and not outstanding:
                    finished.set()

        loop.add_reader(sock.fileno(), on_readable)
        try:
            start = loop.time()
            for seq in range(count):
                if await _wait_until(loop, start + seq * interval, stop):
                    break
                rtts.append(None)
                try:
                    sent[seq] = _send(sock, _echo_request(ident, seq, payload), address)
                except OSError:
                    continue  # no route, buffer full: the probe is lost
                outstanding.add(seq)
            sending_done = True
            if outstanding:  # the last probe has just left: give it its full timeout
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), timeout)
        finally:
            loop.remove_reader(sock.fileno())
    return rtts


def _send(sock: socket.socket, packet: bytes, address: str) -> tuple[int, int]:
    """Send one echo request; its (perf, wall) send times in ns, stamped just before."""
    sent_wall, sent_perf = time.time_ns(), time.perf_counter_ns()
    sock.sendto(packet, (address, 0))
    return sent_perf, sent_wall


def _kernel_time(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            if len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
            elif len(data) >= 8:
                sec, nsec = struct.unpack("ii", data[:8])
            else:
                continue
            return sec * 1_000_000_000 + nsec
    return None


_SO_ATTACH_FILTER = 26
_SKF_NET_OFF = -0x100000  # offsets from the network header, whatever the link layer


def _attach_echo_reply_filter(sock: socket.socket, ident: int) -> None:
    """Let through only IPv4 ICMP echo replies carrying `ident` (classic BPF), so a busy
    host's other ICMP (a ping flood, unreachables) neither wakes Python nor fills the
    socket's buffer. Offsets count from the network header: on a raw IPv4 socket that is
    where the data starts anyway."""
    net = _SKF_NET_OFF & 0xFFFFFFFF
    program = [
        (0x30, 0, 0, net + 9),          # ldb [net + 9]        IP protocol
        (0x15, 0, 9, 1),                # jeq #ICMP, next, drop
        (0x30, 0, 0, net),              # ldb [net]            version and header length
        (0x54, 0, 0, 0x0F),             # and #0xf
        (0x64, 0, 0, 2),                # lsh #2
        (0x07, 0, 0, 0),                # tax                  X = IP header length
        (0x50, 0, 0, net),              # ldb [x + net]        ICMP type
        (0x15, 0, 3, 0),                # jeq #echo-reply, next, drop
        (0x48, 0, 0, net + 4),          # ldh [x + net + 4]    ICMP identifier
        (0x15, 0, 1, ident),            # jeq #ident, accept, drop
        (0x06, 0, 0, 0x40000),          # ret #262144          accept
        (0x06, 0, 0, 0),                # ret #0               drop
    ]
    # array's buffer_info() gives the address the kernel reads the program from, without
    # ctypes (~0.3 MiB resident); `code` lives until setsockopt has copied it.
    code = array.array("B", b"".join(struct.pack("HBBI", *i) for i in program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                    struct.pack("HL", len(program), code.buffer_info()[0]))
    # packets queued before the filter was attached are not filtered: drain them
    with contextlib.suppress(BlockingIOError, InterruptedError):
        for _ in range(10_000):
            sock.recv(1, socket.MSG_DONTWAIT)


# --- tcp: one connection per probe, closed with RST ------------------------------------------

_LINGER_RST = struct.pack("ii", 1, 0)
_U32 = struct.Struct("=I")
_TCP_INFO_BYTES = 104
"""struct tcp_info: 8 one-byte fields, then u32s: tcpi_rtt (µs) at 68, tcpi_total_retrans
at 100."""


async def _tcp(family: int, sockaddr: Any, count: int, interval: float, timeout: float,
               stop: asyncio.Event) -> list[float | None]:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[float | None]] = []
    try:
        start = loop.time()
        for seq in range(count):
            if await _wait_until(loop, start + seq * interval, stop):
                break
            tasks.append(asyncio.create_task(_tcp_once(family, sockaddr, timeout)))
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def _tcp_once(family: int, sockaddr: Any, timeout: float) -> float | None:
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        # RST on close: no TIME_WAIT pile-up here, no half-open connection left on the server
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        sent = time.perf_counter_ns()
        err = sock.connect_ex(sockaddr)
        got = time.perf_counter_ns()
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            answered: asyncio.Future[int] = loop.create_future()

            def on_writable() -> None:
                if not answered.done():
                    answered.set_result(time.perf_counter_ns())

            loop.add_writer(sock.fileno(), on_writable)
            try:
                got = await asyncio.wait_for(answered, timeout)
            except TimeoutError:
                return None
            finally:
                loop.remove_writer(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err not in (0, errno.ECONNREFUSED):
            return None  # unreachable (e.g. an ICMP error from a router): not the target
        kernel_rtt, retransmitted = _tcp_info(sock)
        if retransmitted:
            return None  # the answer came to a resent SYN: the probe itself was lost
        rtt = got - sent
        if err == 0 and kernel_rtt is not None and 0 < kernel_rtt <= rtt:
            rtt = kernel_rtt
        return rtt / 1e9 if rtt / 1e9 <= timeout else None


def _tcp_info(sock: socket.socket) -> tuple[int | None, bool]:
    """From TCP_INFO: the kernel's RTT in ns (after the handshake its first sample, exactly
    SYN to SYN-ACK) and whether a SYN was retransmitted (readable after a RST too)."""
    if not hasattr(socket, "TCP_INFO"):
        return None, False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return None, False
    if len(info) < _TCP_INFO_BYTES:
        return None, False
    rtt_us, total_retrans = _U32.unpack_from(info, 68)[0], _U32.unpack_from(info, 100)[0]
    return int(rtt_us) * 1000, total_retrans > 0


# --- the check --------------------------------------------------------------------------------


async def run(config: Config, context: Context) -> Result:
    """Probe every target concurrently."""
    targets = list(config.targets)
    if not targets:
        host = urlsplit(context.server.url).hostname if context.server else None
        if not host:
            raise ValueError("no targets configured and no server URL to take one from")
        targets = [host]
    port = config.tcp_port or _server_port(context)
    results = await asyncio.gather(*(_measure_target(t, config, port) for t in targets))
    return Result(targets=list(results))


def _server_port(context: Context) -> int:
    if context.server is None:
        return 443
    url = urlsplit(context.server.url)
    try:
        explicit = url.port
    except ValueError:
        explicit = None
    return explicit or {"http": 80, "https": 443}.get(url.scheme, 443)


async def _measure_target(target: str, config: Config, port: int) -> TargetResult:
    try:
        probed = await measure(target, config.method, config.count,
                               config.probe_interval_seconds, config.probe_timeout_seconds, port)
    except ResolutionError as exc:
        method = choose_method() if config.method == "auto" else config.method
        return TargetResult(target=target, address=None, method=method,
                            port=port if method == "tcp" else None, rtts_seconds=[],
                            error=str(exc), **vars(summarise([])))
    return TargetResult(target=target, address=probed.address, method=probed.method,
                        port=probed.port, rtts_seconds=probed.rtts,
                        **vars(summarise(probed.rtts)))


LABELS = ("target", "method")
RTT = MetricSpec("wardready_latency_rtt_seconds",
                 "Round-trip time of the latest run's answered probes, by statistic: min, "
                 "median, p95, max or mean.", (*LABELS, "statistic"))
"""Not a summary, whose `quantile` label promtool reserves: these describe one run only."""
JITTER = MetricSpec("wardready_latency_jitter_seconds",
                    "Mean absolute difference of consecutive probes' round-trip times.", LABELS)
LOSS = MetricSpec("wardready_latency_loss_ratio",
                  "Share of the latest run's probes left unanswered.", LABELS)
SENT = MetricSpec("wardready_latency_probes_sent",
                  "Probes sent in the latest run (0 when the target did not resolve).", LABELS)
RECEIVED = MetricSpec("wardready_latency_probes_received",
                      "Probes answered in the latest run.", LABELS)
METRICS = (RTT, JITTER, LOSS, SENT, RECEIVED)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one latency result."""
    for t in result.targets:
        labels = (t.target, t.method)
        yield Sample(SENT, labels, t.sent)
        yield Sample(RECEIVED, labels, t.received)
        if t.loss_ratio is not None:
            yield Sample(LOSS, labels, t.loss_ratio)
        for stat, value in (("min", t.rtt_min_seconds), ("median", t.rtt_median_seconds),
                            ("p95", t.rtt_p95_seconds), ("max", t.rtt_max_seconds),
                            ("mean", t.rtt_mean_seconds)):
            if value is not None:
                yield Sample(RTT, (*labels, stat), value)
        if t.jitter_seconds is not None:
            yield Sample(JITTER, labels, t.jitter_seconds)


CHECK = CheckSpec(name="latency", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples)
