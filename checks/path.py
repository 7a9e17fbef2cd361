"""The path to the server in segments: the gateway, the server, and every hop between.

One run measures, concurrently and over the same time span:
- **gateway**: latency and loss to the ward's gateway on the route toward the server (Linux:
  the longest-prefix match in `/proc/net/route`; policy routing is not followed);
- **server**: the same, to the server's address, with the same method and count, so the
  two compare: loss at the gateway too is the LAN (or the PC); loss only at the server is
  past the gateway;
- **trace**: TTL-limited probes as MTR sends them, TTL 1..`max_hops`, `probes_per_hop` each,
  one round of TTLs every `round_interval_seconds` (so no router is asked for more than one
  ICMP error a round: routers rate-limit them, Linux at 1 a second per peer with a burst of
  6); the first round stops climbing once the server answers.

Methods (`method`): `icmp` sends echo requests through a raw socket (root or CAP_NET_RAW:
the whole ICMP error arrives, with the header of our packet as the hop received it, hence
the DSCP it saw) or else an ICMP datagram ("ping") socket (`net.ipv4.ping_group_range`);
`udp` sends datagrams to high closed ports with `IP_RECVERR` and reads the errors from
`MSG_ERRQUEUE`, as tracepath does: time exceeded names the hop (`SO_EE_OFFENDER`), port
unreachable from the server means it was reached. `auto`: icmp when a socket opens, else
udp. In udp mode the gateway's and the server's answers are ICMP errors too, drawn from the
same per-peer budget as the trace's, so the target probes and the trace rounds both go at
half the rate.

Reading the trace (MTR's rule): loss at a hop that does not carry on to the later hops is
that router's ICMP rate limit or its low priority for ICMP, not loss. `loss_start_hop` is the
first hop from which every later answering hop, the server included, lost probes; a hop that
never answers is skipped. The trace probes carry DSCP `dscp` (EF, 46, by default); where a
hop's quoted header shows another value, that hop or one before it cleared the marking.

Statistics as the `latency` check's: median and p95 interpolated between closest ranks,
jitter the mean |difference| of consecutive answered RTTs. RTTs are timed in user space
around non-blocking calls, in a thread of the check's own.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import os
import random
import select
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    InventoryItem,
    ResultModel,
    in_thread,
)
from wardready.checks.latency import inet_checksum, summarise
from wardready.core.errors import ResolutionError
from wardready.core.metrics import MetricSpec, Sample

Method = Literal["icmp", "udp"]
MAX_HOPS = 32
MAX_PROBES_PER_HOP = 100
MAX_COUNT = 200
PAYLOAD_BYTES = 32
IP_HEADER_BYTES = 20
PROBE_IP_BYTES = IP_HEADER_BYTES + 8 + PAYLOAD_BYTES
"""Every probe is one 60-byte IPv4 packet: ICMP or UDP header (8 bytes) and 32 bytes."""
BASE_PORT = 33434
"""udp mode: probe i goes to port BASE_PORT + i (traceroute's range; nothing listens)."""
RESOLVE_TIMEOUT_SECONDS = 5.0
PROC_ROOT = Path("/proc")
RTF_UP, RTF_GATEWAY = 0x1, 0x2
# Linux values Python does not name everywhere.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP = 2
ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_PENDING_ERRORS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                   errno.EPROTO, errno.EMSGSIZE, errno.ETIMEDOUT}
"""The errors an ICMP error sets on a socket (ip_icmp_error), reported again by send."""


class Config(CheckConfig):
    """Counts, pacing and marking of one run; `interval_seconds` spaces the runs."""

    interval_seconds: float = Field(default=300.0, gt=0)
    method: Literal["auto", "icmp", "udp"] = "auto"
    target: str | None = Field(default=None, min_length=1, max_length=253,
                               pattern=r"^[A-Za-z0-9._-]+$")
    """Host name or IPv4 address; None means the host of the agent's server URL."""
    count: int = Field(default=10, ge=1, le=MAX_COUNT)
    """Probes to the gateway, and as many to the server."""
    probe_interval_seconds: float = Field(default=1.0, ge=0.01, le=60)
    """Spacing of the gateway and server probes (doubled in udp mode)."""
    max_hops: int = Field(default=16, ge=1, le=MAX_HOPS)
    probes_per_hop: int = Field(default=10, ge=1, le=MAX_PROBES_PER_HOP)
    round_interval_seconds: float = Field(default=1.0, ge=0.01, le=60)
    """One round of TTLs per this many seconds (doubled in udp mode): at the default, each
    router is asked for about one ICMP error a second, what routers allow."""
    hop_spacing_seconds: float = Field(default=0.05, ge=0, le=1)
    """Between two TTLs of a round: the first round stops climbing once the server answered."""
    probe_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    dscp: int = Field(default=46, ge=0, le=63)
    """DSCP of the trace probes (EF by default); the gateway and server probes carry 0."""

    @model_validator(mode="after")
    def _fits(self) -> Config:
        if self.hop_spacing_seconds * self.max_hops > self.round_interval_seconds:
            raise ValueError("hop_spacing_seconds * max_hops must fit in round_interval_seconds "
                             "(rounds would overlap and routers see more than one probe a "
                             "round)")
        needed = span_seconds(self, "udp") + self.probe_timeout_seconds + RESOLVE_TIMEOUT_SECONDS
        if needed > self.timeout_seconds:
            raise ValueError(f"count, probes_per_hop and their pacing need up to {needed:g} s "
                             f"(udp mode, name resolution included), more than "
                             f"timeout_seconds ({self.timeout_seconds:g})")
        return self


def span_seconds(config: Config, method: Method) -> float:
    """How long the sending lasts with `method` (the last probe then waits its timeout)."""
    slow = 2.0 if method == "udp" else 1.0
    return max((config.count - 1) * config.probe_interval_seconds * slow,
               (config.probes_per_hop - 1) * config.round_interval_seconds * slow
               + (config.max_hops - 1) * config.hop_spacing_seconds)


def cost_bound(config: Config) -> tuple[int, int]:
    """The most one run can send: (packets, IP bytes). Two targets of `count` probes, and
    `probes_per_hop` rounds of at most `max_hops` TTLs, each a 60-byte IPv4 packet."""
    packets = 2 * config.count + config.probes_per_hop * config.max_hops
    return packets, packets * PROBE_IP_BYTES


class Target(ResultModel):
    """The gateway or the server."""

    address: str | None
    method: Method | None
    sent: int
    lost: int
    loss_ratio: float | None
    rtt_median_seconds: float | None
    rtt_p95_seconds: float | None
    jitter_seconds: float | None
    """Mean |difference| of consecutive answered RTTs."""


class Hop(ResultModel):
    """One TTL of the trace."""

    ttl: int
    address: str | None
    """The address that answered most often; None: nothing answered at this TTL."""
    sent: int
    lost: int
    loss_ratio: float | None
    rtt_median_seconds: float | None
    received_dscp: int | None
    """The DSCP this hop saw, from the header its ICMP error quotes; None if unknown (the
    server's echo replies and udp mode quote none)."""


class Result(CheckResult):
    gateway: Target
    server: Target
    hops: list[Hop] = Field(max_length=MAX_HOPS)
    reached: bool
    """The trace reached the server."""
    loss_start_hop: int | None
    """TTL from which loss persists to the server; None: no such loss."""
    dscp_sent: int
    dscp_changed_at_hop: int | None
    """First TTL whose quoted header shows a DSCP other than `dscp_sent`."""
    method: Method | None
    packets_sent: int
    """What the run cost: every probe, gateway, server and trace."""
    bytes_sent: int
    """IP bytes of those probes."""
    note: str = ""


# -- The gateway ---------------------------------------------------------------------------

def route_gateway(address: str, proc_root: Path = PROC_ROOT) -> tuple[str | None, str]:
    """The gateway of the IPv4 route toward `address` from `proc_root`/net/route (longest
    prefix, then lowest metric): (gateway, note). None with a note when the route has no
    gateway (the address is on the local link) or there is no route."""
    if ipaddress.IPv4Address(address).is_loopback:
        return None, f"{address} is this machine: no gateway"
    target = struct.unpack("!I", socket.inet_aton(address))[0]
    best: tuple[int, int, int] | None = None  # (prefix length, -metric, gateway)
    lines = (proc_root / "net" / "route").read_text().splitlines()
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            # Little-endian hex: the kernel prints the in-memory (network order) u32.
            dest, gw, mask = (struct.unpack("!I", struct.pack("<I", int(f, 16)))[0]
                              for f in (fields[1], fields[2], fields[7]))
            flags, metric = int(fields[3], 16), int(fields[6])
        except ValueError:
            continue
        if not flags & RTF_UP or target & mask != dest:
            continue
        candidate = (bin(mask).count("1"), -metric, gw if flags & RTF_GATEWAY else 0)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        return None, f"no route to {address}"
    if best[2] == 0:
        return None, f"{address} is on the local link: no gateway"
    return socket.inet_ntoa(struct.pack("!I", best[2])), ""


# -- Probing -------------------------------------------------------------------------------

@dataclass
class _Probe:
    kind: Literal["gateway", "server", "trace"]
    ttl: int
    dst: str
    sent_ns: int = 0
    rtt: float | None = None
    responder: str | None = None
    dscp: int | None = None
    reached: bool = False


def _echo(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, inet_checksum(header + payload), ident,
                       seq) + payload


def open_socket(method: Literal["auto", "icmp", "udp"]) -> tuple[socket.socket, Method, bool]:
    """A socket for `method`: (socket, method, raw). Raises OSError naming what is missing."""
    errors = []
    if method in ("auto", "icmp"):
        for kind, raw in ((socket.SOCK_RAW, True), (socket.SOCK_DGRAM, False)):
            try:
                sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
            except OSError as exc:  # EPERM without CAP_NET_RAW; EACCES out of ping_group_range
                errors.append(f"{'raw' if raw else 'datagram'} ICMP: {exc.strerror}")
                continue
            if not raw:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            return sock, "icmp", raw
        if method == "icmp":
            raise OSError(f"icmp: {'; '.join(errors)} (needs CAP_NET_RAW, or "
                          "net.ipv4.ping_group_range to include the agent's group)")
    if sys.platform != "linux":
        raise OSError("udp needs Linux's IP_RECVERR; " + "; ".join(errors))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    return sock, "udp", False


class _Session:
    """One run's probes on one socket, sent on schedule and matched with their answers."""

    def __init__(self, sock: socket.socket, method: Method, raw: bool, config: Config,
                 gateway: str | None, server: str) -> None:
        self.sock, self.method, self.raw, self.config = sock, method, raw, config
        self.gateway, self.server = gateway, server
        self.probes: list[_Probe] = []
        self.by_key: dict[int, int] = {}  # seq (icmp) or port offset (udp) -> probe index
        self.ident = random.randrange(1, 0x10000)
        self.seq0 = random.randrange(0x10000)
        self.nonce = os.urandom(8)
        self.payload = self.nonce + bytes(PAYLOAD_BYTES - len(self.nonce))
        self.reached_ttl: int | None = None
        self.timeout_ns = round(config.probe_timeout_seconds * 1e9)
        sock.setblocking(False)
        if not raw and method == "icmp":
            sock.bind(("0.0.0.0", 0))
            self.ident = sock.getsockname()[1]  # the kernel's echo identifier

    def schedule(self) -> list[tuple[float, int, _Probe]]:
        """Every probe that may be sent, (offset seconds, order, probe), in time order."""
        c = self.config
        slow = 2.0 if self.method == "udp" else 1.0
        plan: list[tuple[float, int, _Probe]] = []
        for i in range(c.count):
            for kind, dst in (("gateway", self.gateway), ("server", self.server)):
                if dst is not None:
                    plan.append((i * c.probe_interval_seconds * slow, len(plan),
                                 _Probe(kind, 64, dst)))  # type: ignore[arg-type]
        for r in range(c.probes_per_hop):
            for ttl in range(1, c.max_hops + 1):
                plan.append((r * c.round_interval_seconds * slow
                             + (ttl - 1) * c.hop_spacing_seconds, len(plan),
                             _Probe("trace", ttl, self.server)))
        plan.sort(key=lambda p: (p[0], p[1]))
        return plan

    def run(self, halt: threading.Event) -> None:
        plan = self.schedule()
        start = time.perf_counter()
        last_sent = start
        i = 0
        while not halt.is_set():
            now = time.perf_counter()
            while i < len(plan) and start + plan[i][0] <= now:
                probe = plan[i][2]
                i += 1
                if probe.kind == "trace" and self.reached_ttl is not None \
                        and probe.ttl > self.reached_ttl:
                    continue  # past the server: never sent
                if self._send(probe):
                    last_sent = time.perf_counter()
            if i >= len(plan):
                now_ns = time.perf_counter_ns()
                if not any(p.rtt is None and now_ns - p.sent_ns < self.timeout_ns
                           for p in self.probes):
                    break  # every probe answered or past its timeout
            due = start + plan[i][0] if i < len(plan) else \
                last_sent + self.config.probe_timeout_seconds
            wait = min(max(due - time.perf_counter(), 0.0), 0.1)  # 0.1: heed `halt`
            if select.select([self.sock], [], [], wait)[0]:
                self._receive()

    def _send(self, probe: _Probe) -> bool:
        index = len(self.probes)
        trace = probe.kind == "trace"
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, probe.ttl)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS,
                             (self.config.dscp << 2) if trace else 0)
        if self.method == "udp":
            key = index
            packet, port = self.payload, BASE_PORT + index
        else:
            key = (self.seq0 + index) & 0xFFFF
            packet, port = _echo(self.ident, key, self.payload), 0
        for attempt in range(2):
            probe.sent_ns = time.perf_counter_ns()
            try:
                self.sock.sendto(packet, (probe.dst, port))
                break
            except OSError as exc:
                # With IP_RECVERR an earlier probe's ICMP error is also reported (once) by
                # the next send, which then sends nothing: try again. Other errors (no
                # route, a full buffer): the probe is not sent, not counted.
                if attempt or exc.errno not in _PENDING_ERRORS:
                    return False
        self.probes.append(probe)
        self.by_key[key] = index
        return True

    def _answer(self, key: int, responder: str, reached: bool, dscp: int | None) -> None:
        got = time.perf_counter_ns()
        index = self.by_key.get(key)
        if index is None:
            return
        probe = self.probes[index]
        if probe.rtt is not None or got - probe.sent_ns > self.timeout_ns:
            return  # a duplicate, or too late: the probe is lost
        if probe.kind != "trace" and responder != probe.dst:
            return  # a router's "unreachable" is no answer from the gateway or the server
        probe.rtt = (got - probe.sent_ns) / 1e9
        probe.responder, probe.dscp = responder, dscp
        probe.reached = reached and responder == probe.dst
        if probe.kind == "trace" and probe.reached:
            self.reached_ttl = min(probe.ttl, self.reached_ttl or probe.ttl)

    def _receive(self) -> None:
        for _ in range(256):  # bounded; select calls again while data is queued
            if not self.raw and not self._receive_error():
                try:
                    data, source = self.sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    continue  # the error is in the queue: read next time round
                if self.method == "icmp":
                    self._icmp_datagram(data, source[0])
                else:  # something listened on that port and answered: the server is reached
                    self._answer(source[1] - BASE_PORT, source[0], True, None)
                continue
            if self.raw:
                try:
                    data = self.sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    return
                self._icmp_raw(data)

    def _receive_error(self) -> bool:
        """One error from the queue (udp and ping sockets); False when it is empty."""
        try:
            data, ancdata, _, original = self.sock.recvmsg(512, 512, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return False
        for level, kind, value in ancdata:
            if level != socket.IPPROTO_IP or kind != IP_RECVERR \
                    or len(value) < _EXTENDED_ERR.size + 8:
                continue
            _, origin, icmp_type, _, _, _, _ = _EXTENDED_ERR.unpack_from(value)
            if origin != SO_EE_ORIGIN_ICMP:
                continue
            offender = socket.inet_ntoa(value[_EXTENDED_ERR.size + 4:_EXTENDED_ERR.size + 8])
            reached = icmp_type == ICMP_UNREACH  # from the server itself (checked in _answer)
            if self.method == "udp":
                self._answer(original[1] - BASE_PORT, offender, reached, None)
            elif len(data) >= 8:  # ping socket: our echo request's header comes back
                self._answer(struct.unpack_from("!H", data, 6)[0], offender, reached, None)
        return True

    def _icmp_datagram(self, data: bytes, source: str) -> None:
        if len(data) >= 8 + len(self.nonce) and data[0] == ICMP_ECHO_REPLY \
                and data[8:8 + len(self.nonce)] == self.nonce:
            self._answer(struct.unpack_from("!H", data, 6)[0], source, True, None)

    def _icmp_raw(self, data: bytes) -> None:
        """A whole IPv4 packet: an echo reply of ours, or an ICMP error quoting our probe."""
        if len(data) < 20:
            return
        outer = (data[0] & 0x0F) * 4
        source = socket.inet_ntoa(data[12:16])
        icmp = data[outer:]
        if len(icmp) < 8:
            return
        if icmp[0] == ICMP_ECHO_REPLY:
            ident, seq = struct.unpack_from("!HH", icmp, 4)
            if ident == self.ident and icmp[8:8 + len(self.nonce)] == self.nonce:
                self._answer(seq, source, True, None)
            return
        if icmp[0] not in (ICMP_TIME_EXCEEDED, ICMP_UNREACH) or len(icmp) < 8 + 20:
            return
        quoted = icmp[8:]
        inner = (quoted[0] & 0x0F) * 4
        if quoted[9] != socket.IPPROTO_ICMP or len(quoted) < inner + 8:
            return
        echo = quoted[inner:]
        ident, seq = struct.unpack_from("!HH", echo, 4)
        if echo[0] != ICMP_ECHO or ident != self.ident:
            return
        self._answer(seq, source, icmp[0] == ICMP_UNREACH, quoted[1] >> 2)


# -- Summaries -----------------------------------------------------------------------------

def target_summary(address: str | None, method: Method | None, probes: list[_Probe]) -> Target:
    """Loss, RTT median and p95, jitter of one target's probes in sending order."""
    stats = summarise([p.rtt for p in probes])
    return Target(address=address, method=method if probes else None, sent=stats.sent,
                  lost=stats.sent - stats.received, loss_ratio=stats.loss_ratio,
                  rtt_median_seconds=stats.rtt_median_seconds,
                  rtt_p95_seconds=stats.rtt_p95_seconds, jitter_seconds=stats.jitter_seconds)


def hop_summaries(trace: list[_Probe], reached_ttl: int | None) -> list[Hop]:
    """One Hop per TTL up to the server (or, not reached, one past the last hop that
    answered)."""
    by_ttl: dict[int, list[_Probe]] = collections.defaultdict(list)
    for p in trace:
        by_ttl[p.ttl].append(p)
    if reached_ttl is not None:
        last = reached_ttl
    else:
        answered = [ttl for ttl, ps in by_ttl.items() if any(p.rtt is not None for p in ps)]
        last = min(max(answered, default=0) + 1, max(by_ttl, default=0))
    hops = []
    for ttl in range(1, last + 1):
        probes = by_ttl.get(ttl, [])
        answers = [p for p in probes if p.rtt is not None]
        rtts = [p.rtt for p in answers if p.rtt is not None]
        dscps = [p.dscp for p in answers if p.dscp is not None]
        address = collections.Counter(p.responder for p in answers).most_common(1)
        hops.append(Hop(ttl=ttl, address=address[0][0] if address else None, sent=len(probes),
                        lost=len(probes) - len(answers),
                        loss_ratio=(len(probes) - len(answers)) / len(probes) if probes else None,
                        rtt_median_seconds=statistics.median(rtts) if rtts else None,
                        received_dscp=collections.Counter(dscps).most_common(1)[0][0]
                        if dscps else None))
    return hops


def loss_start(hops: list[Hop], reached: bool) -> int | None:
    """The first TTL from which every answering hop to the server lost probes (MTR's rule);
    None when the server lost none, or the trace did not reach it."""
    if not reached or not hops or hops[-1].lost == 0:
        return None
    start = None
    for hop in reversed(hops):
        if hop.address is None:
            continue  # never answers (ICMP off): says nothing either way
        if hop.lost == 0:
            break
        start = hop.ttl
    return start


def dscp_change(hops: list[Hop], sent: int) -> int | None:
    """The first TTL whose quoted header shows a DSCP other than the one sent."""
    return next((h.ttl for h in hops if h.received_dscp is not None
                 and h.received_dscp != sent), None)


# -- The check -----------------------------------------------------------------------------

async def _resolve(host: str) -> str:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, family=socket.AF_INET,
                                                        type=socket.SOCK_DGRAM),
                                       RESOLVE_TIMEOUT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ResolutionError(f"{host}: does not resolve to an IPv4 address "
                              f"({exc or 'timed out'})") from exc
    return str(infos[0][4][0])


def _empty(address: str | None) -> Target:
    return Target(address=address, method=None, sent=0, lost=0, loss_ratio=None,
                  rtt_median_seconds=None, rtt_p95_seconds=None, jitter_seconds=None)


async def run(config: Config, context: Context, proc_root: Path = PROC_ROOT) -> Result:
    """Probe the gateway, the server and the hops between, concurrently."""
    host = config.target or (urlsplit(context.server.url).hostname if context.server else None)
    if not host:
        raise ValueError("no target configured and no server URL to take one from")
    server = await _resolve(host)
    notes = []
    gateway: str | None = None
    if sys.platform == "linux":
        gateway, why = route_gateway(server, proc_root)
        if why:
            notes.append(why)
    else:
        system = "Windows" if sys.platform == "win32" else sys.platform
        notes.append(f"gateway unknown on {system}: not supported yet")
    try:
        sock, method, raw = open_socket(config.method)
    except OSError as exc:
        notes.append(f"cannot probe: {exc}")
        return Result(gateway=_empty(gateway), server=_empty(server), hops=[], reached=False,
                      loss_start_hop=None, dscp_sent=config.dscp, dscp_changed_at_hop=None,
                      method=None, packets_sent=0, bytes_sent=0, note="; ".join(notes))
    with sock:
        session = _Session(sock, method, raw, config, gateway, server)
        await in_thread(session.run, "path-probes")
    probes = session.probes
    hops = hop_summaries([p for p in probes if p.kind == "trace"], session.reached_ttl)
    reached = session.reached_ttl is not None
    if not reached:
        notes.append(f"the trace did not reach {server} within {config.max_hops} hops")
    return Result(
        gateway=target_summary(gateway, method, [p for p in probes if p.kind == "gateway"]),
        server=target_summary(server, method, [p for p in probes if p.kind == "server"]),
        hops=hops, reached=reached, loss_start_hop=loss_start(hops, reached),
        dscp_sent=config.dscp, dscp_changed_at_hop=dscp_change(hops, config.dscp),
        method=method, packets_sent=len(probes), bytes_sent=len(probes) * PROBE_IP_BYTES,
        note="; ".join(notes))


# -- Metrics and inventory -----------------------------------------------------------------

LOSS = MetricSpec("wardready_path_loss_ratio",
                  "Share of the latest run's probes to the gateway or the server left "
                  "unanswered.", ("target",))
RTT = MetricSpec("wardready_path_rtt_seconds",
                 "Round-trip time to the gateway or the server in the latest run, by "
                 "statistic: median or p95.", ("target", "statistic"))
JITTER = MetricSpec("wardready_path_jitter_seconds",
                    "Mean absolute difference of consecutive round-trip times to the gateway "
                    "or the server.", ("target",))
HOP_LOSS = MetricSpec("wardready_path_hop_loss_ratio",
                      "Share of the trace probes at this TTL left unanswered.", ("hop",))
HOP_RTT = MetricSpec("wardready_path_hop_rtt_seconds",
                     "Median round-trip time of the trace probes at this TTL.", ("hop",))
HOPS = MetricSpec("wardready_path_hops", "Hops of the latest trace (to the server if reached).")
LOSS_START = MetricSpec("wardready_path_loss_start_hop",
                        "TTL from which loss persists to the server; absent when there is "
                        "no such loss.")
DSCP_CHANGED = MetricSpec("wardready_path_dscp_changed_at_hop",
                          "First TTL that saw a DSCP other than the one sent; absent when "
                          "none did or it is unknown.")
REACHED = MetricSpec("wardready_path_reached", "1 if the latest trace reached the server.")
SENT_PACKETS = MetricSpec("wardready_path_sent_packets",
                          "Probes the latest run sent: gateway, server and trace.")
SENT_BYTES = MetricSpec("wardready_path_sent_bytes", "IP bytes of the latest run's probes.")
METHOD = MetricSpec("wardready_path_method_info",
                    "The probing method of the latest run: icmp or udp.", ("method",))
METRICS = (LOSS, RTT, JITTER, HOP_LOSS, HOP_RTT, HOPS, LOSS_START, DSCP_CHANGED, REACHED,
           SENT_PACKETS, SENT_BYTES, METHOD)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one path result (hops labelled by TTL, at most MAX_HOPS)."""
    for name, target in (("gateway", result.gateway), ("server", result.server)):
        if target.loss_ratio is not None:
            yield Sample(LOSS, (name,), target.loss_ratio)
        for statistic, value in (("median", target.rtt_median_seconds),
                                 ("p95", target.rtt_p95_seconds)):
            if value is not None:
                yield Sample(RTT, (name, statistic), value)
        if target.jitter_seconds is not None:
            yield Sample(JITTER, (name,), target.jitter_seconds)
    for hop in result.hops:
        if hop.loss_ratio is not None:
            yield Sample(HOP_LOSS, (str(hop.ttl),), hop.loss_ratio)
        if hop.rtt_median_seconds is not None:
            yield Sample(HOP_RTT, (str(hop.ttl),), hop.rtt_median_seconds)
    yield Sample(HOPS, (), len(result.hops))
    if result.loss_start_hop is not None:
        yield Sample(LOSS_START, (), result.loss_start_hop)
    if result.dscp_changed_at_hop is not None:
        yield Sample(DSCP_CHANGED, (), result.dscp_changed_at_hop)
    yield Sample(REACHED, (), 1 if result.reached else 0)
    yield Sample(SENT_PACKETS, (), result.packets_sent)
    yield Sample(SENT_BYTES, (), result.bytes_sent)
    if result.method is not None:
        yield Sample(METHOD, (result.method,), 1)


def inventory(result: Result) -> Mapping[str, list[InventoryItem]]:
    """The path's hops by TTL (`path-hop`, the address as the fact, `*` for a hop that never
    answers), so the server records when the path changed. Only from a trace that reached
    the server: a cut-off trace says nothing about the hops it did not see."""
    if not result.reached:
        return {}
    return {"path-hop": [InventoryItem("path-hop", str(h.ttl), (("address", h.address or "*"),))
                         for h in result.hops]}


CHECK = CheckSpec(name="path", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, inventory=inventory)

__all__ = ["CHECK", "Config", "Hop", "Result", "Target", "cost_bound", "route_gateway"]
