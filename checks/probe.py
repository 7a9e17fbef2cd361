"""A continuous, cheap probe of the path to the server: RTT, jitter and loss from one small
UDP packet a second, summarised per interval into counts that add up.

As smokeping_prober does, the agent runs it back to back (`CheckSpec.continuous`): one run
is one interval (60 s by default, one UDP echo session of purpose "probe"), and each
interval's result is a report of its own. The result counts the interval's probes (sent,
lost, late), their round-trip times in fixed histogram buckets (`RTT_BUCKETS_SECONDS`) and
what they cost in bytes. The server adds each interval's counts to per-PC counters and a
histogram (`TOTALS`), so Prometheus takes the loss ratio over any window with `increase()`
and RTT quantiles with `histogram_quantile()`; the latest interval's figures are gauges
(`METRICS`), as every check's are.

It speaks the media check's echo protocol and reuses its pieces (`checks.media`: the
session grant, the paced stream, `analyse`), but asks for its sessions with the standard
library's http.client instead of aiohttp: it runs inside the agent, not in a child process,
and adds no tens of MiB to it. Its HTTP(S) connection is kept from one interval to the
next, so the TLS handshake is paid once, not every minute.

Jitter is the latency check's: the mean absolute difference between the RTTs of
consecutive answered probes (`checks.latency.summarise`), here within one interval.

DSCP survival: the probes are marked in turn with the classes of `dscp_classes` (by default
EF 46, a call's audio; AF41 34, its video; and unmarked), and each asks for its echo to come
back marked alike. The echo (wire version 2, `wardready.core.echo`) says which DSCP the probe
arrived with at the server, as RFC 8972's Class-of-Service TLV does, so a router on the way
that rewrites or strips the marking is evidence (`dscp`, `wardready_probe_dscp_preserved`).
Marking costs nothing extra: the same probes, the DS field set on the socket before each.
Windows ignores an application's marking unless a QoS policy sets it, so there the probes
go unmarked and only the default class is reported.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import http.client
import json
import math
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    ResultModel,
    ServerLink,
    in_thread,
    server_tls,
)
from wardready.checks.media import (
    Echo,
    Grant,
    Stream,
    analyse,
    echo_address,
    nearest_rank,
    path_samples,
    stream,
)
from wardready.core.api import CURRENT_PATH, SESSIONS_PATH
from wardready.core.echo import HEADER, V2_BYTES, dscp
from wardready.core.errors import MediaError
from wardready.core.metrics import MetricSpec, Sample, histogram_samples

HTTP_TIMEOUT_SECONDS = 10.0
RTT_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                       0.5, 1.0, 2.5)
"""Upper bounds of the RTT histogram's buckets, fixed once: counts from different intervals,
PCs and agent versions add up only over the same bounds. From a LAN's 1 ms to the default
probe timeout; 0.1 and 0.15 s are the inventory profiles' RTT limits, so the share of probes
over a limit is exact."""
MAX_PACKETS = 1_000_000
"""More probes than any interval sends (the echo caps a session at 1,000,000): a bound on
what a result may claim, so one bad report cannot swell a PC's counters."""
IPV4_UDP_HEADERS = 28
IPV6_UDP_HEADERS = 48
REUSE_SECONDS = 120.0
"""The session connection is kept this long idle (an interval's probes run between its two
requests); older, it is replaced before use rather than found dead."""
MAX_ANSWER_BYTES = 64 << 10
MAX_CONNECTIONS = 4
"""Kept connections, one per server link (an agent has one)."""
DscpClass = Literal["ef", "af41", "default"]
DSCP_CLASSES: dict[str, int] = {"ef": 46, "af41": 34, "default": 0}
"""The DiffServ classes the probe can mark with (RFC 4594: EF for telephony, AF41 for
video conferencing) and their DSCP values (RFC 3246, RFC 2597); the `class` label's values."""
MARKING_WORKS = sys.platform != "win32"
"""Windows ignores IP_TOS from applications unless a QoS policy marks the program."""


# -- Statistics (pure) -------------------------------------------------------------------------

class Summary(ResultModel):
    """What one interval's probes and their echoes say about the path; part of `Result`."""

    packets_sent: int = Field(ge=0, le=MAX_PACKETS)
    packets_received: int = Field(ge=0, le=MAX_PACKETS)
    """Distinct probes whose echo came back within the probe timeout."""
    packets_lost: int = Field(ge=0, le=MAX_PACKETS)
    """Sent less received: dropped either way, or answered too late."""
    packets_late: int = Field(ge=0, le=MAX_PACKETS)
    """Probes whose echo came back, but only after the probe timeout (also in lost)."""
    server_received_packets: int | None = Field(ge=0)
    """Distinct probes the server received; None if it could not be asked afterwards."""
    loss_ratio: float = Field(ge=0, le=1)
    """Round trip: lost / sent (1 when none was sent)."""
    forward_loss_ratio: float | None
    return_loss_ratio: float | None
    reordered_packets: int = Field(ge=0, le=MAX_PACKETS)
    duplicate_packets: int = Field(ge=0, le=MAX_PACKETS)
    rtt_bucket_counts: list[int]
    """Answered probes by RTT: one count per bound of RTT_BUCKETS_SECONDS (RTT <= bound and
    above the previous bound), then one for those above the last bound."""
    rtt_sum_seconds: float = Field(ge=0)
    rtt_min_seconds: float | None
    rtt_median_seconds: float | None
    rtt_p95_seconds: float | None
    """Nearest rank (an observed RTT), as the media check's."""
    rtt_max_seconds: float | None
    jitter_seconds: float | None
    """Mean |RTT difference| of consecutive answered probes (the latency check's)."""
    rtt_difference_sum_seconds: float = Field(ge=0)
    """Sum of those differences: with `rtt_differences` it adds up over intervals."""
    rtt_differences: int = Field(ge=0, le=MAX_PACKETS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Counts that contradict one another would corrupt the server's running totals."""
        if len(self.rtt_bucket_counts) != len(RTT_BUCKETS_SECONDS) + 1:
            raise ValueError(f"rtt_bucket_counts needs {len(RTT_BUCKETS_SECONDS) + 1} counts")
        if any(n < 0 for n in self.rtt_bucket_counts):
            raise ValueError("rtt_bucket_counts must not be negative")
        if not (self.packets_received + self.packets_lost == self.packets_sent
                and sum(self.rtt_bucket_counts) == self.packets_received
                and self.packets_late <= self.packets_lost
                and self.rtt_differences == max(0, self.packets_received - 1)):
            raise ValueError("the probe counts do not add up (received + lost = sent, buckets "
                             "= received, late <= lost, differences = received - 1)")
        return self


def summarise(sent_ns: Sequence[int], echoes: Sequence[Echo], timeout: float,
              server_unique: int | None = None) -> Summary:
    """The interval's figures from the send time of each sequence number (`sent_ns[seq]`),
    the echoes in the order they arrived, the probe timeout in seconds, and how many
    distinct probes the server says it received (None if unknown)."""
    limit_ns = round(timeout * 1e9)
    timely: list[Echo] = []
    late: set[int] = set()
    for e in echoes:
        if not 0 <= e.seq < len(sent_ns):
            continue  # not a probe of this interval
        if e.received_ns - sent_ns[e.seq] <= limit_ns:
            timely.append(e)
        else:
            late.add(e.seq)
    path = analyse(sent_ns, timely, server_unique)
    first: dict[int, float] = {}
    for e in timely:
        first.setdefault(e.seq, (e.received_ns - sent_ns[e.seq]) / 1e9)
    in_sent_order = [first[seq] for seq in sorted(first)]
    buckets = [0] * (len(RTT_BUCKETS_SECONDS) + 1)
    for rtt in in_sent_order:
        buckets[bisect.bisect_left(RTT_BUCKETS_SECONDS, rtt)] += 1  # first bound >= rtt
    differences = [abs(b - a) for a, b in pairwise(in_sent_order)]
    ordered = sorted(in_sent_order)
    received = len(ordered)
    return Summary(
        packets_sent=len(sent_ns), packets_received=received,
        packets_lost=len(sent_ns) - received, packets_late=len(late - first.keys()),
        server_received_packets=server_unique, loss_ratio=path.loss_ratio,
        forward_loss_ratio=path.forward_loss_ratio, return_loss_ratio=path.return_loss_ratio,
        reordered_packets=path.reordered_packets, duplicate_packets=path.duplicate_packets,
        rtt_bucket_counts=list(buckets), rtt_sum_seconds=math.fsum(ordered),
        rtt_min_seconds=ordered[0] if ordered else None,
        rtt_median_seconds=statistics.median(ordered) if ordered else None,
        rtt_p95_seconds=nearest_rank(ordered, 0.95) if ordered else None,
        rtt_max_seconds=ordered[-1] if ordered else None,
        jitter_seconds=math.fsum(differences) / len(differences) if differences else None,
        rtt_difference_sum_seconds=math.fsum(differences), rtt_differences=len(differences))


# -- The check ---------------------------------------------------------------------------------

class Config(CheckConfig):
    """`packet_rate` probes of `packet_bytes` (UDP payload) a second, summarised every
    `interval_seconds`; an echo later than `probe_timeout_seconds` counts as lost."""

    interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    """One run: its probes are summarised into one result and one report. Also one echo
    session: the server's session length less the probe timeout may make it shorter (with
    the default 60-s sessions, 58 probes in 58 s)."""
    timeout_seconds: float = Field(default=90.0, gt=0)
    packet_rate: float = Field(default=1.0, gt=0, le=1000)
    packet_bytes: int = Field(default=V2_BYTES, ge=HEADER.size, le=1472)
    """The echo header alone by default: 48 bytes (version 2, which reports the DSCP the
    server received), a 76-byte IPv4 packet each way. 44 to 47 bytes send version 1."""
    probe_timeout_seconds: float = Field(default=2.5, gt=0, le=30)
    dscp_classes: tuple[DscpClass, ...] = Field(default=("ef", "af41", "default"),
                                                min_length=1, max_length=3)
    """The probes are marked with these classes in turn; `["default"]` leaves them unmarked.
    The DSCP each arrived with is known only from probes of `V2_BYTES` (48) or more."""

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if len(set(self.dscp_classes)) != len(self.dscp_classes):
            raise ValueError("dscp_classes must not repeat a class")
        if self.packet_rate * self.interval_seconds < 1:
            raise ValueError("packet_rate * interval_seconds must be at least one probe")
        needed = (self.interval_seconds + self.probe_timeout_seconds + 1 / self.packet_rate
                  + 2 * HTTP_TIMEOUT_SECONDS)
        if self.timeout_seconds < needed:
            raise ValueError(f"timeout_seconds must be at least {needed:g} (interval, probe "
                             "timeout, a probe's spacing and the two session requests), or "
                             "every run is cut off")
        return self


class DscpCount(ResultModel):
    """Probes of one class sent with one DSCP that the server received with another (or
    the same)."""

    service_class: DscpClass
    """The class the probes were marked as (RFC 4594's service classes)."""
    sent: int = Field(ge=0, le=63)
    """The DSCP the probes were sent with."""
    received: int = Field(ge=0, le=63)
    """The DSCP they arrived with at the server, as its echoes say."""
    packets: int = Field(ge=1, le=MAX_PACKETS)
    """Distinct probes, counted once each whether their echo came in time or late."""


def dscp_counts(classes: Sequence[DscpClass], echoes: Sequence[Echo], sent: int
                ) -> list[DscpCount]:
    """What the server received of each class: probe `seq` (of `sent`) went out marked
    `classes[seq % len(classes)]`; the echoes say what arrived (those that do not are left
    out: version 1, or a server that could not read it). By class, then packets, most first."""
    seen: dict[int, int] = {}
    for e in echoes:
        if e.server_tos is not None and 0 <= e.seq < sent:
            seen.setdefault(e.seq, dscp(e.server_tos))
    pairs = Counter((classes[seq % len(classes)], received) for seq, received in seen.items())
    order = {c: i for i, c in enumerate(classes)}
    return [DscpCount(service_class=c, sent=DSCP_CLASSES[c], received=r, packets=n)
            for (c, r), n in sorted(pairs.items(), key=lambda i: (order[i[0][0]], -i[1]))]


class Result(CheckResult, Summary):
    udp_port: int
    packet_rate: float
    """Probes per second the interval aimed for (the server may grant less than configured)."""
    packet_bytes: int
    send_late_max_seconds: float = Field(ge=0)
    """Worst delay of a probe behind its schedule (a busy agent)."""
    udp_sent_bytes: int = Field(ge=0)
    """The probes as IP packets: UDP payload plus the IP and UDP headers."""
    udp_received_bytes: int = Field(ge=0)
    """The echoes that came back (late ones and copies too), likewise."""
    http_sent_bytes: int = Field(ge=0)
    """The session requests' HTTP messages (request line, headers, body), before TLS: TCP
    and TLS overhead are not counted (docs/benchmarks.md measures them)."""
    http_received_bytes: int = Field(ge=0)
    socket_errors: int = Field(ge=0)
    """Errors the UDP socket reported (ICMP unreachable, a local firewall)."""
    socket_error: str | None
    dscp: list[DscpCount] = Field(default_factory=list, max_length=3 * 64)
    """By class sent, the DSCP values the server received the probes with, e.g.
    `[{"service_class": "ef", "sent": 46, "received": 0, "packets": 20}]`: a router rewrote EF to 0.
    Empty when unknown (version-1 probes, an older server)."""

    def dscp_received(self) -> dict[str, int]:
        """The DSCP most of each class's probes arrived with (classes with none known are
        left out)."""
        most: dict[str, int] = {}
        for c in self.dscp:  # most packets first within a class
            most.setdefault(c.service_class, c.received)
        return most


class _Counting(http.client.HTTPConnection):
    """Counts the bytes of the requests it sends."""

    sent_bytes = 0

    def send(self, data: Any) -> None:
        self.sent_bytes += len(data)
        super().send(data)


class _CountingTLS(http.client.HTTPSConnection):
    sent_bytes = 0

    def send(self, data: Any) -> None:
        self.sent_bytes += len(data)
        super().send(data)


class Channel:
    """The probe's HTTP(S) connection to its server, kept from one interval to the next.
    Blocking: each call runs in a thread of its own."""

    def __init__(self, server: ServerLink) -> None:
        parts = urlsplit(server.url)
        self.tls = server_tls(server.ca_file) if parts.scheme == "https" else None
        self.host, self.base = parts.hostname or "", parts.path.rstrip("/")
        self.port = parts.port or (443 if self.tls else 80)
        self.headers = {"Authorization": f"Bearer {server.token}",
                        "Content-Type": "application/json"}
        self._conn: _Counting | _CountingTLS | None = None
        self._used_at = 0.0
        self.connections = 0
        """Connections opened so far (each a TCP and, over HTTPS, a TLS handshake)."""
        self.sent_bytes = self.received_bytes = 0
        self.peer: Any = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """The server's status and answer. A kept connection the server has closed meanwhile
        is replaced once; other failures raise (OSError, http.client.HTTPException)."""
        if self._conn is not None and time.monotonic() - self._used_at > REUSE_SECONDS:
            self.close()
        while True:
            fresh = self._conn is None
            conn = self._conn = self._conn or self._connect()
            before = conn.sent_bytes
            try:
                conn.request(method, self.base + path, body=body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read(MAX_ANSWER_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                self.sent_bytes += conn.sent_bytes - before
                self.close()
                if fresh or isinstance(exc, TimeoutError):
                    raise
                continue
            self.sent_bytes += conn.sent_bytes - before
            self.received_bytes += (len(f"HTTP/1.1 {resp.status} {resp.reason}\r\n") + 2
                                    + sum(len(k) + len(v) + 4 for k, v in resp.getheaders())
                                    + len(data))
            self._used_at = time.monotonic()
            if resp.will_close or not resp.isclosed():  # not read to the end: not reusable
                self.close()
            return resp.status, data

    def _connect(self) -> _Counting | _CountingTLS:
        conn = (_CountingTLS(self.host, self.port, timeout=HTTP_TIMEOUT_SECONDS,
                             context=self.tls) if self.tls
                else _Counting(self.host, self.port, timeout=HTTP_TIMEOUT_SECONDS))
        try:
            conn.connect()
        except OSError:
            conn.close()
            raise
        self.connections += 1
        assert conn.sock is not None
        self.peer = conn.sock.getpeername()
        return conn

    def close(self) -> None:
        """Close the connection, also cutting short a request in flight on another thread."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()


_channels: dict[ServerLink, Channel] = {}
"""Connections kept between intervals, by server link; a run takes its link's out and puts
it back when done, so two runs at once never share one."""


def _keep(server: ServerLink, channel: Channel) -> None:
    old = _channels.pop(server, None)
    if old is not None:
        old.close()
    while len(_channels) >= MAX_CONNECTIONS:
        _channels.pop(next(iter(_channels))).close()
    _channels[server] = channel


async def _call(channel: Channel, method: str, path: str,
                body: bytes | None = None) -> tuple[int, Any]:
    """A request on `channel` in a thread, and its answer as JSON (None if not JSON)."""
    try:
        status, data = await in_thread(lambda _: channel.request(method, path, body),
                                       "probe-http")
    except (OSError, http.client.HTTPException) as exc:
        raise MediaError(f"cannot reach the server for a UDP session: "
                         f"{type(exc).__name__}: {exc}") from None
    try:
        return status, json.loads(data)
    except ValueError:
        return status, None


def _error_text(answer: Any) -> str:
    return str(answer["error"])[:200] if isinstance(answer, dict) and "error" in answer else ""


async def run(config: Config, context: Context) -> Result:
    """Probe the path to the agent's server for one interval."""
    server = context.server
    if server is None:
        raise MediaError("the probe measures against the agent's server; none is set")
    channel = _channels.pop(server, None) or Channel(server)
    http_before = channel.sent_bytes, channel.received_bytes
    try:
        grant, address, sent, server_unique, classes = await _interval(config, server,
                                                                       channel)
    except BaseException:
        channel.close()  # in an unknown state: the next interval connects anew
        raise
    _keep(server, channel)
    summary = summarise(sent.sent_ns, sent.echoes, config.probe_timeout_seconds, server_unique)
    rate = min(config.packet_rate, grant.packet_rate)
    size = min(config.packet_bytes, grant.max_packet_bytes)
    headers = IPV6_UDP_HEADERS if ":" in str(address[0]) else IPV4_UDP_HEADERS
    return Result(
        **vars(summary),
        udp_port=grant.port, packet_rate=rate, packet_bytes=size,
        send_late_max_seconds=max(0.0, sent.late_max_seconds),
        udp_sent_bytes=len(sent.sent_ns) * (size + headers),
        udp_received_bytes=len(sent.echoes) * (size + headers),
        http_sent_bytes=channel.sent_bytes - http_before[0],
        http_received_bytes=channel.received_bytes - http_before[1],
        socket_errors=sent.errors, socket_error=sent.first_error,
        dscp=dscp_counts(classes, sent.echoes, len(sent.sent_ns)))


async def _interval(config: Config, server: ServerLink, channel: Channel
                    ) -> tuple[Grant, tuple[Any, ...], Stream, int | None,
                               tuple[DscpClass, ...]]:
    """One echo session: its grant, the address probed, the stream, the distinct probes
    the server says it received (None if it could not say), and the classes marked in
    turn."""
    wanted = max(1, round(config.packet_rate * config.interval_seconds))
    body = json.dumps({"packets": wanted, "packet_rate": config.packet_rate,
                       "packet_bytes": config.packet_bytes, "purpose": "probe"}).encode()
    status, answer = await _call(channel, "POST", SESSIONS_PATH, body)
    if status != 201:
        raise MediaError(f"UDP session refused: HTTP {status}: {_error_text(answer)}")
    grant = Grant.from_json(answer)
    address = echo_address(channel.peer, grant.port, server.url)
    rate = min(config.packet_rate, grant.packet_rate)
    size = min(config.packet_bytes, grant.max_packet_bytes)
    if size < HEADER.size:
        raise MediaError(f"server allows {size}-byte packets; the header needs {HEADER.size}")
    # Within the grant: probes the server must refuse would read as loss. The last probe
    # goes out a probe timeout before the session ends, so its echo can still come.
    fits = math.floor((grant.expires_in - config.probe_timeout_seconds) * rate) + 1
    count = max(1, min(wanted, grant.max_packets, fits))
    classes: tuple[DscpClass, ...] = config.dscp_classes if MARKING_WORKS else ("default",)
    sent = await stream(address, grant.key, count, rate, size, config.probe_timeout_seconds,
                        tos=[DSCP_CLASSES[c] << 2 for c in classes])
    server_unique: int | None = None
    with contextlib.suppress(MediaError, KeyError, TypeError, ValueError):  # then no split
        status, seen = await _call(channel, "GET", CURRENT_PATH + "?purpose=probe")
        if status == 200 and seen["session"] == grant.key.hex():
            server_unique = int(seen["unique"])
    # The interval lasts `count / rate`: the next one's first probe follows this one's last
    # a probe's spacing later, not at once, so back-to-back intervals keep to `rate`.
    await asyncio.sleep(max(0.0, sent.sent_ns[-1] / 1e9 + 1 / rate - time.monotonic()))
    return grant, address, sent, server_unique, classes


def close_connections() -> None:
    """Close the connections kept between intervals (tests, a stopping agent)."""
    while _channels:
        _channels.popitem()[1].close()


# -- Metrics -----------------------------------------------------------------------------------

SENT = MetricSpec("wardready_probe_sent_total",
                  "UDP probes the continuous probe sent to the server's echo.", kind="counter")
LOST = MetricSpec("wardready_probe_lost_total",
                  "UDP probes without an echo within the probe timeout (either way).",
                  kind="counter")
LATE = MetricSpec("wardready_probe_late_total",
                  "UDP probes whose echo came after the probe timeout (counted as lost too).",
                  kind="counter")
RTT = MetricSpec("wardready_probe_rtt_seconds",
                 "Round-trip times of the UDP probes answered within the probe timeout.",
                 kind="histogram")
RTT_DIFFERENCE = MetricSpec(
    "wardready_probe_rtt_difference_seconds_total",
    "Sum of |RTT difference| of consecutive answered probes; over "
    "wardready_probe_rtt_differences_total, the jitter.", kind="counter")
RTT_DIFFERENCES = MetricSpec("wardready_probe_rtt_differences_total",
                             "Pairs of consecutive answered probes summed in "
                             "wardready_probe_rtt_difference_seconds_total.", kind="counter")
BYTES = MetricSpec("wardready_probe_bytes_total",
                   "Bytes the probe moved: UDP with IP and UDP headers, HTTP session requests "
                   "before TLS.", ("direction", "protocol"), kind="counter")
TOTALS = (SENT, LOST, LATE, RTT, RTT_DIFFERENCE, RTT_DIFFERENCES, BYTES)
"""Added up by the server over every interval a PC reports (`counts`)."""

LATEST_SENT = MetricSpec("wardready_probe_latest_sent_packets",
                         "UDP probes sent in the latest interval.")
LATEST_LOST = MetricSpec("wardready_probe_latest_lost_packets",
                         "UDP probes lost in the latest interval.")
LATEST_LOSS = MetricSpec("wardready_probe_latest_loss_ratio",
                         "Share of UDP probes lost in the latest interval, by path.",
                         ("direction",))
LATEST_RTT = MetricSpec("wardready_probe_latest_rtt_seconds",
                        "UDP probe round-trip time in the latest interval: min, median, p95 "
                        "or max.", ("statistic",))
LATEST_JITTER = MetricSpec("wardready_probe_latest_jitter_seconds",
                           "Mean |RTT difference| of consecutive answered probes in the "
                           "latest interval.")
DSCP_PRESERVED = MetricSpec(
    "wardready_probe_dscp_preserved",
    "1 if most probes of the class reached the server with the DSCP they were sent with, "
    "0 if it was rewritten on the way; absent if unknown.", ("class",))
DSCP_RECEIVED = MetricSpec("wardready_probe_dscp_received",
                           "The DSCP most probes of the class reached the server with.",
                           ("class",))
METRICS = (LATEST_SENT, LATEST_LOST, LATEST_LOSS, LATEST_RTT, LATEST_JITTER, DSCP_PRESERVED,
           DSCP_RECEIVED)


def samples(result: Result) -> Iterator[Sample]:
    """The latest interval's figures; unknown ones are left out, not zeroed."""
    r = result
    yield Sample(LATEST_SENT, (), r.packets_sent)
    yield Sample(LATEST_LOST, (), r.packets_lost)
    yield from path_samples(r, LATEST_LOSS, LATEST_RTT)
    if r.jitter_seconds is not None:
        yield Sample(LATEST_JITTER, (), r.jitter_seconds)
    for name, received in r.dscp_received().items():
        yield Sample(DSCP_PRESERVED, (name,), 1 if received == DSCP_CLASSES[name] else 0)
        yield Sample(DSCP_RECEIVED, (name,), received)


def counts(result: Result) -> Iterator[Sample]:
    """What one interval adds to the running totals (`TOTALS`)."""
    r = result
    yield Sample(SENT, (), r.packets_sent)
    yield Sample(LOST, (), r.packets_lost)
    yield Sample(LATE, (), r.packets_late)
    yield from histogram_samples(RTT, (), RTT_BUCKETS_SECONDS, r.rtt_bucket_counts,
                                 r.rtt_sum_seconds)
    yield Sample(RTT_DIFFERENCE, (), r.rtt_difference_sum_seconds)
    yield Sample(RTT_DIFFERENCES, (), r.rtt_differences)
    for direction, protocol, n in (("sent", "udp", r.udp_sent_bytes),
                                   ("received", "udp", r.udp_received_bytes),
                                   ("sent", "http", r.http_sent_bytes),
                                   ("received", "http", r.http_received_bytes)):
        yield Sample(BYTES, (direction, protocol), n)


CHECK = CheckSpec(name="probe", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, continuous=True, totals=TOTALS,
                  counts=counts)
