"""The UDP media path: can the ward's link carry a video call's steady stream of UDP packets?

The check asks the agent's server for a UDP echo session over HTTPS, sends fixed-size packets
on a fixed schedule to the port the server names, and measures what comes back: reachability,
loss, round-trip time, RFC 3550 jitter, reordering and duplicates. Each echo carries the
server's receive time and count, which split loss, jitter, reordering and duplicates into
the forward (agent to server) and return paths without synchronised clocks.

The wire format is the core's (`wardready.core.echo`); `wardready.server.udp_echo` answers it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import socket
import statistics
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    ResultModel,
    ServerLink,
    server_tls,
)
from wardready.core import emodel
from wardready.core.api import CURRENT_PATH, SESSIONS_PATH
from wardready.core.echo import (
    COS_OFFSET,
    ECHO,
    HEADER,
    KEY_BYTES,
    MAGIC,
    PROBE,
    Packet,
    decode,
    encode,
    version_for,
)
from wardready.core.errors import MediaError
from wardready.core.metrics import MetricSpec, Sample

if TYPE_CHECKING:
    import aiohttp

HTTP_TIMEOUT_SECONDS = 10.0


# -- Statistics (pure) -------------------------------------------------------------------------

@dataclass(frozen=True)
class Echo:
    """An echo as the agent received it."""

    seq: int
    server_received_ns: int
    server_count: int
    received_ns: int
    """Agent's monotonic clock, same clock as the send times."""
    server_tos: int | None = None
    """The DS field (DSCP << 2 | ECN) the probe arrived with at the server, as its echo
    says (wire version 2); None if unknown."""


class WorstWindow(ResultModel):
    """The worst window of a stream: where it starts and how long it is (seconds from the
    first probe's send time), and its figure (a ratio, or seconds of jitter)."""

    start_seconds: float
    length_seconds: float
    value: float


class Stats(ResultModel):
    """What one stream of probes and its echoes say about the path; part of `Result`."""

    packets_sent: int
    packets_received: int
    """Distinct probes whose echo came back."""
    server_received_packets: int | None
    """Distinct probes the server received; None if it could not be asked afterwards."""
    loss_ratio: float
    forward_loss_ratio: float | None
    return_loss_ratio: float | None
    rtt_min_seconds: float | None
    rtt_median_seconds: float | None
    rtt_p95_seconds: float | None
    rtt_max_seconds: float | None
    jitter_forward_seconds: float | None
    jitter_return_seconds: float | None
    reordered_packets: int
    forward_reordered_packets: int
    return_reordered_packets: int
    duplicate_packets: int
    forward_duplicate_packets: int
    return_duplicate_packets: int
    reorder_ratio: float | None = None
    """Reordered packets (RFC 4737 section 3: arrived after a higher-numbered one) over
    the packets received (its Type-P-Reordered-Ratio-Stream, section 4.1), of the worse
    direction; None when no echo came back."""
    window_seconds: float | None = None
    """The length of the windows below (`Config.window_seconds`)."""
    windows: int = 0
    """How many windows the stream was cut into (see `send_windows`)."""
    window_loss: WorstWindow | None = None
    """The window of send times with the highest round-trip loss; None without probes."""
    window_jitter: WorstWindow | None = None
    """The window with the highest RFC 3550 jitter (the worse direction's, averaged over
    the window's packets); None when too few echoes came back."""
    burst_seconds: float | None = None
    """The length of the sliding burst windows (`Config.burst_seconds`)."""
    burst_loss: WorstWindow | None = None
    """The `burst_seconds` span of send times, starting at any probe, with the highest
    round-trip loss; None without probes."""


def jitter(transits_ns: Sequence[int]) -> float | None:
    """RFC 3550 interarrival jitter in seconds, from transit times in arrival order.

    A constant clock offset between sender and receiver adds to every transit time and so
    cancels in the differences; only its drift over the run remains, which is negligible.
    """
    if len(transits_ns) < 2:
        return None
    j = 0.0
    for previous, current in pairwise(transits_ns):
        j += (abs(current - previous) - j) / 16
    return j / 1e9


def late_arrivals(order: Sequence[int]) -> int:
    """Packets that arrived after one with a higher number (RFC 4737's reordered packets)."""
    highest, late = -1, 0
    for n in order:
        if n < highest:
            late += 1
        else:
            highest = n
    return late


def reorder_ratio(reordered: int, received: int) -> float | None:
    """RFC 4737's Type-P-Reordered-Ratio-Stream (section 4.1) as a ratio, not a percent:
    reordered packets over received packets; None when none was received."""
    return reordered / received if received else None


def stream_seconds(sent_ns: Sequence[int]) -> float:
    """How long the stream lasted by its send times: n probes cover n send intervals, the
    last one's included (1 s for 50 probes at 50 a second); 0 for a single probe."""
    n = len(sent_ns)
    return (sent_ns[-1] - sent_ns[0]) / 1e9 * n / (n - 1) if n > 1 else 0.0


def send_windows(sent_ns: Sequence[int], window_seconds: float) -> list[tuple[int, int]]:
    """The stream cut into consecutive windows of `window_seconds` by send time, from the
    first probe on, as [first, last + 1) index ranges into `sent_ns` (in send order).

    A last window shorter than half a window joins the one before it: a few seconds of
    probes at the end would otherwise be judged alone, on a handful of packets (one loss in
    a 1 s tail at 50 a second is 2 %). A stream shorter than a window is one window.
    """
    if not sent_ns:
        return []
    length = stream_seconds(sent_ns)
    count = max(1, math.ceil(length / window_seconds - 1e-9))
    if count > 1 and length - (count - 1) * window_seconds < window_seconds / 2:
        count -= 1
    bounds = [bisect.bisect_left(sent_ns, sent_ns[0] + round(k * window_seconds * 1e9))
              for k in range(count)]
    return list(zip(bounds, [*bounds[1:], len(sent_ns)], strict=True))


def window_losses(sent_ns: Sequence[int], received: Collection[int],
                  window_seconds: float) -> list[WorstWindow]:
    """Each window's round-trip loss: probes of the window (by send time) whose echo never
    came back, over the probes sent in it."""
    out = []
    for first, end in send_windows(sent_ns, window_seconds):
        if end == first:
            continue  # no probe sent in it: the agent stalled, nothing to judge
        lost = sum(seq not in received for seq in range(first, end))
        out.append(_window(sent_ns, first, end, window_seconds, lost / (end - first)))
    return out


def window_jitters(sent_ns: Sequence[int], directions: Sequence[Sequence[tuple[int, int]]],
                   window_seconds: float) -> list[WorstWindow | None]:
    """Each window's RFC 3550 jitter: for each direction, the estimator J runs over the
    whole stream in arrival order (as a receiver keeps it, so no window restarts it from
    zero); a window's figure is the mean of the values J took at the arrivals of its probes
    (by send time), and the worse direction's counts. `directions` holds, per direction,
    (seq, transit ns) in arrival order. None for a window with no value of J."""
    windows = send_windows(sent_ns, window_seconds)
    starts = [first for first, _ in windows]
    per_direction: list[list[float | None]] = []
    for arrivals in directions:
        sums = [[0.0, 0] for _ in windows]
        j = 0.0
        for (_, previous), (seq, current) in pairwise(arrivals):
            j += (abs(current - previous) - j) / 16
            k = bisect.bisect_right(starts, seq) - 1
            sums[k][0] += j
            sums[k][1] += 1
        per_direction.append([total / 1e9 / n if n else None for total, n in sums])
    out: list[WorstWindow | None] = []
    for k, (first, end) in enumerate(windows):
        values = [v for d in per_direction if (v := d[k]) is not None]
        out.append(_window(sent_ns, first, end, window_seconds, max(values)) if values
                   else None)
    return out


def worst_burst(sent_ns: Sequence[int], received: Collection[int],
                burst_seconds: float) -> WorstWindow | None:
    """The highest round-trip loss over any `burst_seconds` of send times: windows
    [t, t + burst) that start at each probe's send time and end within the stream (the
    earliest of equal ones). A stream shorter than a burst is one window. None without
    probes."""
    n = len(sent_ns)
    if n == 0:
        return None
    span = round(burst_seconds * 1e9)
    stream_end = sent_ns[0] + round(stream_seconds(sent_ns) * 1e9)
    lost_before = [0]  # lost_before[i]: probes lost among the first i
    for seq in range(n):
        lost_before.append(lost_before[-1] + (seq not in received))
    best: WorstWindow | None = None
    end = 0
    for first in range(n):
        if first > 0 and sent_ns[first] + span > stream_end:
            break
        while end < n and sent_ns[end] < sent_ns[first] + span:
            end += 1
        ratio = (lost_before[end] - lost_before[first]) / (end - first)
        if best is None or ratio > best.value:
            best = WorstWindow(start_seconds=(sent_ns[first] - sent_ns[0]) / 1e9,
                               length_seconds=min(burst_seconds, stream_seconds(sent_ns)),
                               value=ratio)
    return best


def _window(sent_ns: Sequence[int], first: int, end: int, window_seconds: float,
            value: float) -> WorstWindow:
    start = (sent_ns[first] - sent_ns[0]) / 1e9
    # Whole windows are window_seconds long; the last one runs to the stream's end.
    k = round(start / window_seconds) if window_seconds else 0
    length = (stream_seconds(sent_ns) - k * window_seconds if end == len(sent_ns)
              else window_seconds)
    return WorstWindow(start_seconds=k * window_seconds, length_seconds=length, value=value)


def worst(windows: Iterable[WorstWindow | None]) -> WorstWindow | None:
    """The window with the highest figure (the earliest of equal ones)."""
    best: WorstWindow | None = None
    for w in windows:
        if w is not None and (best is None or w.value > best.value):
            best = w
    return best


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values by the nearest-rank method (an observed value)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def analyse(sent_ns: Sequence[int], echoes: Sequence[Echo],
            server_unique: int | None = None, window_seconds: float = 15.0,
            burst_seconds: float = 0.2) -> Stats:
    """The path's figures from the send time of each sequence number (`sent_ns[seq]`), the
    echoes in the order they arrived, and how many distinct probes the server says it received
    (None if it could not say, then the per-direction loss is unknown); loss and jitter also
    per window of `window_seconds` and loss per burst of `burst_seconds` (by send time)."""
    sent = len(sent_ns)
    first: dict[int, Echo] = {}
    counts_seen: dict[int, set[int]] = {}
    forward_dups = return_dups = 0
    for e in echoes:
        if not 0 <= e.seq < sent:
            continue  # not a probe of this run
        seen = counts_seen.setdefault(e.seq, set())
        if e.seq in first:
            # The server counts every probe it accepts: a second copy of a probe that reached
            # it twice has a new count; a copy made on the way back repeats the count.
            if e.server_count in seen:
                return_dups += 1
            else:
                forward_dups += 1
        else:
            first[e.seq] = e
        seen.add(e.server_count)
    arrived = list(first.values())  # insertion order is arrival order
    by_server = sorted(arrived, key=lambda e: e.server_count)
    rtts = sorted((e.received_ns - sent_ns[e.seq]) / 1e9 for e in arrived)
    received = len(arrived)
    forward_loss = return_loss = None
    if server_unique is not None:
        at_server = min(server_unique, sent)
        forward_loss = 1 - at_server / sent if sent else None
        return_loss = max(0.0, 1 - received / at_server) if at_server else None
    forward_reordered = late_arrivals([e.seq for e in by_server])
    return_reordered = late_arrivals([e.server_count for e in arrived])
    jitters = window_jitters(
        sent_ns, ([(e.seq, e.server_received_ns - sent_ns[e.seq]) for e in by_server],
                  [(e.seq, e.received_ns - e.server_received_ns) for e in arrived]),
        window_seconds)
    windows = window_losses(sent_ns, first, window_seconds)
    return Stats(
        packets_sent=sent,
        packets_received=received,
        server_received_packets=server_unique,
        loss_ratio=1 - received / sent if sent else 1.0,
        forward_loss_ratio=forward_loss,
        return_loss_ratio=return_loss,
        rtt_min_seconds=rtts[0] if rtts else None,
        rtt_median_seconds=statistics.median(rtts) if rtts else None,
        rtt_p95_seconds=nearest_rank(rtts, 0.95) if rtts else None,
        rtt_max_seconds=rtts[-1] if rtts else None,
        jitter_forward_seconds=jitter([e.server_received_ns - sent_ns[e.seq]
                                       for e in by_server]),
        jitter_return_seconds=jitter([e.received_ns - e.server_received_ns for e in arrived]),
        reordered_packets=late_arrivals([e.seq for e in arrived]),
        forward_reordered_packets=forward_reordered,
        return_reordered_packets=return_reordered,
        duplicate_packets=forward_dups + return_dups,
        forward_duplicate_packets=forward_dups,
        return_duplicate_packets=return_dups,
        # The worse direction, as a call hears it (see call_figures).
        reorder_ratio=reorder_ratio(max(forward_reordered, return_reordered), received),
        window_seconds=window_seconds,
        windows=len(windows),
        window_loss=worst(windows),
        window_jitter=worst(jitters),
        burst_seconds=burst_seconds,
        burst_loss=worst_burst(sent_ns, first, burst_seconds),
    )


# -- The check ---------------------------------------------------------------------------------


class Config(CheckConfig):
    """One stream like a video call's: `packet_rate` packets of `packet_bytes` (UDP payload)
    a second for `duration_seconds`, then up to `receive_grace_seconds` for late echoes."""

    interval_seconds: float = Field(default=900.0, gt=0)
    """Every 15 minutes: each run loads a weak link with a call's worth of traffic."""
    packet_rate: float = Field(default=50.0, gt=0, le=1000)
    packet_bytes: int = Field(default=1200, ge=HEADER.size, le=65507)
    duration_seconds: float = Field(default=10.0, gt=0, le=900)
    """Up to 15 minutes, so a run can hold many of the platforms' 15 s windows."""
    receive_grace_seconds: float = Field(default=2.0, ge=0, le=30)
    window_seconds: float = Field(default=15.0, gt=0, le=3600)
    """Loss and jitter are also judged per window of this length (Teams: "during any 15s
    interval", docs/video-presets.md); a run shorter than this is one window."""
    burst_seconds: float = Field(default=0.2, gt=0, le=60)
    """Burst loss is the worst loss over any span of this length (Teams: 200 ms)."""

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.packet_rate * self.duration_seconds < 1:
            raise ValueError("packet_rate * duration_seconds must be at least one packet")
        needed = self.duration_seconds + self.receive_grace_seconds + 2 * HTTP_TIMEOUT_SECONDS
        if self.timeout_seconds < needed:
            raise ValueError(f"timeout_seconds must be at least {needed:g} (duration, grace "
                             "and the two session requests), or every run is cut off")
        return self


class Result(CheckResult, Stats):
    udp_reachable: bool
    """True if any echo came back: UDP to the server works at all."""
    udp_port: int
    packet_rate: float
    """Packets per second the run aimed for (the server may grant less than configured)."""
    packet_bytes: int
    server_dropped_packets: int | None
    """Probes the server refused (over its caps): a sender problem, not the link's."""
    send_rate_packets_per_second: float | None
    """Achieved rate, first to last probe; well under `packet_rate` means a busy agent."""
    send_late_max_seconds: float
    """Worst delay of a probe behind its schedule (a busy agent makes jitter look worse)."""
    socket_errors: int
    """Errors the UDP socket reported: ICMP port or host unreachable from the path, or a
    local firewall refusing the send. A firewall that drops silently reports none."""
    socket_error: str | None
    """The first of them, e.g. `ConnectionRefusedError: [Errno 111] Connection refused`."""
    r_factor: float | None = None
    """ITU-T G.107 E-model rating of this path for a G.711 call (docs/emodel.md): median
    RTT, the worse direction's jitter and loss. None when no echo came back."""
    predicted_mos: float | None = None
    """The mean opinion score (1-4.5) the E-model predicts from `r_factor`."""


@dataclass(frozen=True)
class Grant:
    """The server's answer to a session request."""

    key: bytes
    port: int
    max_packets: int
    packet_rate: float
    max_packet_bytes: int
    expires_in: float

    @classmethod
    def from_json(cls, body: Any) -> Grant:
        try:
            key = bytes.fromhex(body["session"])
            grant = cls(key, int(body["port"]), int(body["max_packets"]),
                        float(body["packet_rate"]), int(body["max_packet_bytes"]),
                        float(body["expires_in"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise MediaError(f"malformed UDP session reply: {exc!r}") from None
        if len(key) != KEY_BYTES or not 0 < grant.port < 65536:
            raise MediaError("malformed UDP session reply: bad session key or port")
        return grant


class _Receiver(asyncio.DatagramProtocol):
    """Collects echoes of this session; counts socket errors (ICMP unreachable, EPERM)."""

    def __init__(self, key: bytes, expected: int) -> None:
        self.key, self.expected = key, expected
        self.echoes: list[Echo] = []
        self.seqs: set[int] = set()
        self.errors = 0
        self.first_error: str | None = None
        self.all_back = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic_ns()
        packet = decode(data)
        if packet is None or packet.kind != ECHO or packet.key != self.key:
            return
        self.echoes.append(Echo(packet.seq, packet.server_received_ns, packet.server_count, now,
                                packet.received_tos))
        self.seqs.add(packet.seq)
        if len(self.seqs) >= self.expected:
            self.all_back.set()

    def error_received(self, exc: Exception) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"[:200]


@dataclass(frozen=True)
class Stream:
    sent_ns: list[int]
    echoes: list[Echo]
    late_max_seconds: float
    errors: int
    first_error: str | None


async def stream(address: tuple[Any, ...], key: bytes, count: int, rate: float, size: int,
                 grace: float, tos: int | Sequence[int] = 0) -> Stream:
    """Send `count` probes at `rate` to `address` and collect echoes until all are back or
    `grace` seconds after the last probe. `tos` is the DS field (DSCP << 2) to mark them
    with: one for all, or one per probe in turn (probe `seq` gets `tos[seq % len(tos)]`);
    each probe also asks for its echo to come back so marked."""
    marks = [tos] if isinstance(tos, int) else list(tos)
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_datagram_endpoint(
        lambda: _Receiver(key, count), remote_addr=address)
    try:
        sock = transport.get_extra_info("socket")
        option = ((socket.IPPROTO_IPV6, socket.IPV6_TCLASS) if sock.family == socket.AF_INET6
                  else (socket.IPPROTO_IP, socket.IP_TOS))
        marked = 0  # a new socket's DS field
        version = version_for(size)
        buffer = bytearray(encode(Packet(PROBE, key, 0, 0, version=version), size))
        sent_ns: list[int] = []
        late_max = 0.0
        start = time.monotonic() + 0.005
        for seq in range(count):
            # Each send time comes from the start, not from the previous send, so sleep
            # overshoot never accumulates into drift; a late probe goes out at once.
            due = start + seq / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ns = time.monotonic_ns()
            late_max = max(late_max, now_ns / 1e9 - due)
            mark = marks[seq % len(marks)]
            if mark != marked:
                # Set between sends: asyncio hands each probe to the kernel at once unless
                # earlier ones wait for a full socket buffer (not at the probe's rates), so
                # each carries the mark set just before it.
                sock.setsockopt(*option, mark)
                marked = mark
            HEADER.pack_into(buffer, 0, MAGIC, version, PROBE, key, seq, now_ns, 0, 0)
            if version == 2:
                buffer[COS_OFFSET] = mark
            transport.sendto(bytes(buffer))
            sent_ns.append(now_ns)
        with contextlib.suppress(TimeoutError):  # what is not back by then counts as lost
            await asyncio.wait_for(receiver.all_back.wait(), grace)
    finally:
        transport.close()
    return Stream(sent_ns, list(receiver.echoes), late_max, receiver.errors,
                  receiver.first_error)


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    import aiohttp  # imported by run() already; see there

    try:
        return str((await resp.json(content_type=None))["error"])[:200]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return resp.reason or ""


async def open_session(http: aiohttp.ClientSession, server: ServerLink, config: Config,
                       packets: int) -> tuple[Grant, tuple[Any, ...]]:
    """Ask the server for a session; also returns the server address the request reached,
    so UDP goes to the same address (a name may resolve to several)."""
    body = {"packets": packets, "packet_rate": config.packet_rate,
            "packet_bytes": config.packet_bytes}
    async with http.post(server.url + SESSIONS_PATH, json=body) as resp:
        peer = None
        if resp.connection is not None and resp.connection.transport is not None:
            peer = resp.connection.transport.get_extra_info("peername")
        if resp.status != 201:
            raise MediaError(f"UDP session refused: HTTP {resp.status}: "
                             f"{await _error_text(resp)}")
        grant = Grant.from_json(await resp.json())
    return grant, echo_address(peer, grant.port, server.url)


def echo_address(peer: Any, port: int, url: str) -> tuple[Any, ...]:
    """Where to send probes: the address the session request reached (`peer`, a socket's
    peer name, if known), at the echo's `port`, else the server URL's host."""
    if peer:
        return (peer[0], port, *peer[2:])  # IPv6 keeps flow info and scope
    host = urlsplit(url).hostname
    if host is None:
        raise MediaError(f"server URL {url!r} has no host")
    return (host, port)


async def server_counts(http: aiohttp.ClientSession, server: ServerLink,
                        key: bytes) -> tuple[int, int] | None:
    """Distinct probes the server received and probes it refused, for this session; None if
    it cannot say (an error, or another run replaced the session meanwhile)."""
    import aiohttp  # imported by run() already; see there

    try:
        async with http.get(server.url + CURRENT_PATH) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
        if body["session"] != key.hex():
            return None
        return int(body["unique"]), sum(int(v) for v in body["dropped"].values())
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError,
            AttributeError):
        return None


async def run(config: Config, context: Context) -> Result:
    """Measure the UDP path to the agent's server."""
    server = context.server
    if server is None:
        raise MediaError("the media check measures against the agent's server; none is set")
    import aiohttp  # here: ~13 MiB, for a check the agent runs in a child process
    wanted = max(1, round(config.packet_rate * config.duration_seconds))
    async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS),
            headers={"Authorization": f"Bearer {server.token}"},
            connector=aiohttp.TCPConnector(ssl=server_tls(server.ca_file))) as http:
        grant, address = await open_session(http, server, config, wanted)
        rate = min(config.packet_rate, grant.packet_rate)
        size = min(config.packet_bytes, grant.max_packet_bytes)
        # Stay within what the server granted: probes it must refuse would read as loss.
        count = min(wanted, grant.max_packets,
                    max(1, math.floor((grant.expires_in - config.receive_grace_seconds) * rate)))
        if size < HEADER.size:
            raise MediaError(f"server allows {size}-byte packets; the header needs {HEADER.size}")
        sent = await stream(address, grant.key, count, rate, size, config.receive_grace_seconds)
        counts = await server_counts(http, server, grant.key)
    stats = analyse(sent.sent_ns, sent.echoes, counts[0] if counts else None,
                    config.window_seconds, config.burst_seconds)
    span = (sent.sent_ns[-1] - sent.sent_ns[0]) / 1e9 if len(sent.sent_ns) > 1 else 0.0
    quality = call_quality(stats)
    return Result(
        r_factor=quality.r if quality else None,
        predicted_mos=quality.mos if quality else None,
        udp_reachable=stats.packets_received > 0,
        udp_port=grant.port,
        packet_rate=rate,
        packet_bytes=size,
        server_dropped_packets=counts[1] if counts else None,
        send_rate_packets_per_second=(len(sent.sent_ns) - 1) / span if span > 0 else None,
        send_late_max_seconds=max(0.0, sent.late_max_seconds),
        socket_errors=sent.errors,
        socket_error=sent.first_error,
        **vars(stats),
    )


def call_figures(path: Stats) -> tuple[float, float, float] | None:
    """What a call over the measured path sees: the median RTT (ms), and the worse
    direction's jitter (ms) and loss (%), as audio flows both ways and the worse side is
    heard. None when no echo came back."""
    if path.rtt_median_seconds is None:
        return None
    jitters = [j for j in (path.jitter_forward_seconds, path.jitter_return_seconds)
               if j is not None]
    losses = [x for x in (path.forward_loss_ratio, path.return_loss_ratio) if x is not None]
    # Without per-direction counts, the round trip's loss is an upper bound on either way's.
    loss = max(losses) if len(losses) == 2 else path.loss_ratio
    return path.rtt_median_seconds * 1e3, max(jitters, default=0.0) * 1e3, loss * 100


def call_quality(stats: Stats) -> emodel.Prediction | None:
    """The E-model's prediction for a call over the measured path (see `call_figures`)."""
    figures = call_figures(stats)
    return emodel.predict(*figures) if figures else None


# -- Metrics -----------------------------------------------------------------------------------

REACHABLE = MetricSpec("wardready_media_udp_reachable",
                       "1 if any UDP echo came back from the server in the latest run.")
SENT = MetricSpec("wardready_media_sent_packets", "UDP probes sent in the latest run.")
RECEIVED = MetricSpec("wardready_media_received_packets",
                      "Distinct UDP probes echoed back in the latest run.")
LOSS = MetricSpec("wardready_media_loss_ratio",
                  "Share of UDP probes lost in the latest run, by path.", ("direction",))
RTT = MetricSpec("wardready_media_rtt_seconds",
                 "UDP round-trip time in the latest run: min, median, p95 or max.", ("statistic",))
"""A `stat` label, not `quantile`: promtool reserves `quantile` for summaries."""
JITTER = MetricSpec("wardready_media_jitter_seconds",
                    "RFC 3550 interarrival jitter in the latest run, by path.", ("direction",))
REORDERED = MetricSpec("wardready_media_reordered_packets",
                       "UDP probes that arrived after a later one in the latest run, by path.",
                       ("direction",))
DUPLICATE = MetricSpec("wardready_media_duplicate_packets",
                       "Extra copies of UDP probes in the latest run, by path.", ("direction",))
SEND_RATE = MetricSpec("wardready_media_send_rate_packets_per_second",
                       "UDP probes per second the agent achieved in the latest run.")
SEND_LATE = MetricSpec("wardready_media_send_late_max_seconds",
                       "Worst delay of a probe behind its schedule in the latest run.")
R_FACTOR = MetricSpec("wardready_media_r_factor",
                      "ITU-T G.107 E-model rating (0-100) of the UDP path for a G.711 call.")
MOS = MetricSpec("wardready_media_predicted_mos",
                 "Mean opinion score (1-4.5) the E-model predicts for a call on the UDP path.")
WINDOW_LOSS = MetricSpec(
    "wardready_media_window_loss_ratio",
    "Round-trip loss of the worst window (wardready_media_window_seconds long, by send time) "
    "of the latest run.")
WINDOW_JITTER = MetricSpec(
    "wardready_media_window_jitter_seconds",
    "RFC 3550 jitter of the worst window of the latest run, the worse direction's.")
WINDOW = MetricSpec("wardready_media_window_seconds",
                    "Length of the windows the window loss and jitter are taken over.")
BURST_LOSS = MetricSpec(
    "wardready_media_burst_loss_ratio",
    "Highest round-trip loss over any wardready_media_burst_seconds of the latest run.")
BURST = MetricSpec("wardready_media_burst_seconds",
                   "Length of the sliding span the burst loss is taken over.")
REORDER = MetricSpec("wardready_media_reorder_ratio",
                     "Reordered over received UDP probes in the latest run (RFC 4737), the "
                     "worse direction's.")
METRICS = (REACHABLE, SENT, RECEIVED, LOSS, RTT, JITTER, REORDERED, DUPLICATE, SEND_RATE,
           SEND_LATE, R_FACTOR, MOS, WINDOW_LOSS, WINDOW_JITTER, WINDOW, BURST_LOSS, BURST,
           REORDER)


class PathFigures(Protocol):
    """Loss by direction and RTT statistics, as media's and the probe's results hold them."""

    @property
    def loss_ratio(self) -> float | None: ...
    @property
    def forward_loss_ratio(self) -> float | None: ...
    @property
    def return_loss_ratio(self) -> float | None: ...
    @property
    def rtt_min_seconds(self) -> float | None: ...
    @property
    def rtt_median_seconds(self) -> float | None: ...
    @property
    def rtt_p95_seconds(self) -> float | None: ...
    @property
    def rtt_max_seconds(self) -> float | None: ...


def path_samples(r: PathFigures, loss: MetricSpec, rtt: MetricSpec) -> Iterator[Sample]:
    """A path's loss (label direction) and RTT (label statistic); unknown ones left out."""
    for direction, ratio in (("round_trip", r.loss_ratio), ("forward", r.forward_loss_ratio),
                             ("return", r.return_loss_ratio)):
        if ratio is not None:
            yield Sample(loss, (direction,), ratio)
    for stat, seconds in (("min", r.rtt_min_seconds), ("median", r.rtt_median_seconds),
                          ("p95", r.rtt_p95_seconds), ("max", r.rtt_max_seconds)):
        if seconds is not None:
            yield Sample(rtt, (stat,), seconds)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one media result; unknown figures are left out, not zeroed."""
    r = result
    yield Sample(REACHABLE, (), 1 if r.udp_reachable else 0)
    yield Sample(SENT, (), r.packets_sent)
    yield Sample(RECEIVED, (), r.packets_received)
    yield from path_samples(r, LOSS, RTT)
    for direction, j in (("forward", r.jitter_forward_seconds),
                         ("return", r.jitter_return_seconds)):
        if j is not None:
            yield Sample(JITTER, (direction,), j)
    for spec, values in (
            (REORDERED, (r.reordered_packets, r.forward_reordered_packets,
                         r.return_reordered_packets)),
            (DUPLICATE, (r.duplicate_packets, r.forward_duplicate_packets,
                         r.return_duplicate_packets))):
        for direction, value in zip(("round_trip", "forward", "return"), values, strict=True):
            yield Sample(spec, (direction,), value)
    if r.send_rate_packets_per_second is not None:
        yield Sample(SEND_RATE, (), r.send_rate_packets_per_second)
    yield Sample(SEND_LATE, (), r.send_late_max_seconds)
    if r.r_factor is not None and r.predicted_mos is not None:
        yield Sample(R_FACTOR, (), r.r_factor)
        yield Sample(MOS, (), r.predicted_mos)
    if not r.udp_reachable:
        return  # no stream came back to cut into windows: that is the udp criterion's finding
    for spec, window in ((WINDOW_LOSS, r.window_loss), (WINDOW_JITTER, r.window_jitter),
                         (BURST_LOSS, r.burst_loss)):
        if window is not None:
            yield Sample(spec, (), window.value)
    if r.window_seconds is not None:
        yield Sample(WINDOW, (), r.window_seconds)
    if r.burst_seconds is not None:
        yield Sample(BURST, (), r.burst_seconds)
    if r.reorder_ratio is not None:
        yield Sample(REORDER, (), r.reorder_ratio)


CHECK = CheckSpec(name="media", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, isolated=True)
