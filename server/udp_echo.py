"""Authenticated, capped UDP echo: the far end of the media check (`checks.media`).

An agent asks over HTTPS for a session (`POST /api/v1/udp-sessions`), then sends UDP probes
carrying the session key to the port named in the reply. The server echoes each probe of a
live session within its caps, exactly as long as it came (never larger: no amplification),
with its own receive time and count written in, and (wire version 2, `wardready.core.echo`)
the DS field (DSCP and ECN) the probe arrived with and the one the echo is sent back with,
so a router that rewrites a call's marking shows in the echo. Version-1 probes get version-1
echoes, as before. Anything else is dropped silently and counted. A session is bound to the
token's (ward, host), one per agent and purpose (the media test's, and the continuous
probe's, `checks.probe`, so that neither ends the other), and to the UDP source address of
its first probe, so a key seen on the wire cannot be used from elsewhere to reflect traffic
at someone else.

`setup(app, EchoConfig(...))` gives the app the service, whose UDP endpoint lives as long as
the app; the caps are `EchoConfig`, the `udp_echo` section of the server config.

The endpoint is a plain non-blocking socket read with `recvmsg` from the event loop's reader
callback (`loop.add_reader`), not an asyncio datagram transport: a transport does not hand
over ancillary data, and the received DS field comes only as ancillary data (`IP_RECVTOS`,
`IPV6_RECVTCLASS`). Each wake-up reads up to `READ_BATCH` datagrams into one reused buffer.
An echo the kernel cannot take at once (a full send buffer) is dropped and counted
(`backlog`): nothing queues in user space, so memory stays bounded under any flood.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from wardready.core.echo import (
    COS,
    COS_OFFSET,
    ECHO,
    HEADER,
    KEY_BYTES,
    MAGIC,
    PROBE,
    RECEIVED_KNOWN,
    V2_BYTES,
)
from wardready.core.errors import SessionsFull
from wardready.core.metrics import MetricSpec, Sample
from wardready.server.auth import authenticate, fail
from wardready.server.bodies import parse_json, read_body, validated
from wardready.server.config import EchoConfig
from wardready.server.context import CONFIG

log = logging.getLogger(__name__)

OUTCOMES = ("echoed", "malformed", "unknown_session", "expired", "foreign_source",
            "oversize", "over_packets", "over_rate", "backlog")
"""What the service did with a datagram: the bounded values of the `outcome` label."""
SESSION_DROPS = ("expired", "foreign_source", "oversize", "over_packets", "over_rate",
                 "backlog")
"""Drops that can be told apart per session (the key was valid)."""
RECEIVE_BUFFER_BYTES = 1 << 20
"""A burst of probes from many agents must not overflow the socket and read as path loss."""
RETAIN_SECONDS = 600.0
"""How long an expired session stays readable through `GET .../current`."""
SERVER_FIELDS = struct.Struct("!QI")
"""The server's part of the header, its last 12 bytes: receive time (ns, monotonic clock) and
count."""
SERVER_FIELDS_OFFSET = HEADER.size - SERVER_FIELDS.size
READ_BATCH = 64
"""Datagrams read per wake-up at most, so a flood cannot starve the HTTP side of the loop."""
MAX_DATAGRAM = 65535
"""The receive buffer: any UDP payload fits whole (a larger-than-allowed probe is counted as
oversize with its true length)."""
ANCILLARY_BYTES = 2 * socket.CMSG_SPACE(4)
"""Room for the DS field's control message (IPv4: 1 byte; IPv6: an int), with a spare."""
TOS_MESSAGES = {(socket.IPPROTO_IP, socket.IP_TOS), (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)}
DSCP_MASK = 0xFC
"""The echo is sent with the DSCP the probe asks for, never with ECN bits: the server does
not speak ECN, so it must not claim an ECN-capable transport (RFC 3168)."""
MIN_BUCKET_PACKETS = 10.0
"""The rate cap's bucket holds at least this many probes: at the continuous probe's 1 a
second, a bucket of `burst_seconds` (one probe) refused every probe that came a little early
after one that came a little late, about half of them on loopback: loss the path never had."""
SWEEP_SECONDS = 1.0
"""Expired sessions are looked for at most this often (or when a cap is reached): with a
probe session per PC, a look at every session on every request would cost O(PCs) each."""
Purpose = Literal["media", "probe"]
PURPOSES: tuple[Purpose, ...] = ("media", "probe")


class SessionRequest(BaseModel):
    """An agent's wishes; each is capped by `EchoConfig`, absent means the cap."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    packets: int | None = Field(default=None, ge=1)
    packet_rate: float | None = Field(default=None, gt=0)
    packet_bytes: int | None = Field(default=None, ge=HEADER.size)
    purpose: Purpose = "media"
    """An agent holds one session per purpose: a media test does not end its probe's."""


@dataclass
class Session:
    """One agent's echo session and what the server saw of it."""

    key: bytes
    agent: tuple[str, str]
    purpose: Purpose
    max_packets: int
    packet_rate: float
    max_packet_bytes: int
    expires: float
    """On the monotonic clock."""
    bucket_size: float
    tokens: float
    refilled: float
    source: Any = None
    """The UDP source address the session latched on to with its first probe."""
    received: int = 0
    """Probes accepted and echoed, copies included (the count written into each echo)."""
    unique: int = 0
    duplicates: int = 0
    reordered: int = 0
    highest_seq: int = -1
    seen: bytearray = field(default_factory=bytearray)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SESSION_DROPS, 0))

    def take_token(self, now: float) -> bool:
        """Whether the rate cap lets one more probe through now."""
        self.tokens = min(self.bucket_size,
                          self.tokens + (now - self.refilled) * self.packet_rate)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def accept(self, seq: int) -> None:
        """Account for an accepted probe."""
        self.received += 1
        byte, bit = divmod(seq, 8)
        if self.seen[byte] & (1 << bit):
            self.duplicates += 1
            return
        self.seen[byte] |= 1 << bit
        self.unique += 1
        if seq < self.highest_seq:
            self.reordered += 1
        else:
            self.highest_seq = seq

    def summary(self, now: float) -> dict[str, Any]:
        """The session as `GET /api/v1/udp-sessions/current` shows it."""
        return {"session": self.key.hex(), "purpose": self.purpose,
                "expired": now >= self.expires,
                "expires_in": round(max(0.0, self.expires - now), 3),
                "max_packets": self.max_packets, "packet_rate": self.packet_rate,
                "max_packet_bytes": self.max_packet_bytes,
                "received": self.received, "unique": self.unique,
                "duplicates": self.duplicates, "reordered": self.reordered,
                "dropped": dict(self.dropped)}


def received_tos(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The DS field (TOS or Traffic Class byte) in a datagram's ancillary data, if there."""
    for level, kind, data in ancdata:
        if (level, kind) in TOS_MESSAGES and data:
            # IPv4 gives one byte, IPv6 an int in host order: the DS field is its low byte.
            return data[0] if len(data) == 1 else int.from_bytes(data[:4], sys.byteorder) & 0xFF
    return None


def ask_for_tos(sock: socket.socket) -> None:
    """Have the kernel hand over each datagram's DS field. On an IPv6 socket both: IPv4
    datagrams to a dual-stack socket come with IP_TOS, IPv6 ones with IPV6_TCLASS."""
    options = [(socket.IPPROTO_IP, socket.IP_RECVTOS)]
    if sock.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS))
    for level, option in options:
        try:
            sock.setsockopt(level, option, 1)
        except OSError as exc:  # then echoes say "unknown", not a wrong value
            log.warning("UDP echo cannot read the DS field (%s/%s): %s", level, option, exc)


def tos_message(family: int, address: Any, tos: int) -> list[tuple[int, int, bytes]]:
    """The control message that sends one datagram with DS field `tos`."""
    ipv6 = family == socket.AF_INET6 and not str(address[0]).startswith("::ffff:")
    return _tos_message(ipv6, tos)


@functools.lru_cache(maxsize=128)
def _tos_message(ipv6: bool, tos: int) -> list[tuple[int, int, bytes]]:
    # Cached: a handful of values, built once rather than per echo (never mutated).
    if ipv6:
        return [(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos.to_bytes(4, sys.byteorder))]
    return [(socket.IPPROTO_IP, socket.IP_TOS, bytes([tos]))]


class EchoService:
    """The sessions, the UDP endpoint and its counters (for the server to expose)."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.port = 0
        """The bound UDP port, once started."""
        self.sock: socket.socket | None = None
        self._buffer = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        self.by_key: dict[bytes, Session] = {}
        """Sessions that may still be live (expired ones go at the next sweep)."""
        self.keyed = Counter[str]()
        """Sessions in `by_key`, by purpose."""
        self.by_purpose: dict[str, dict[tuple[str, str], Session]] = {p: {} for p in PURPOSES}
        """Each agent's latest session of each purpose, kept RETAIN_SECONDS past its end."""
        self._next_sweep = 0.0
        self.packets = dict.fromkeys(OUTCOMES, 0)
        self.received_bytes = 0
        self.sent_bytes = 0
        self.sessions_opened = 0

    # -- sessions --

    @property
    def by_agent(self) -> dict[tuple[str, str], Session]:
        """Each agent's latest media session."""
        return self.by_purpose["media"]

    def open(self, agent: tuple[str, str], wish: SessionRequest) -> Session:
        """A new session for the agent, replacing (and ending) its previous one of the same
        purpose."""
        now = time.monotonic()
        self._sweep(now)
        sessions = self.by_purpose[wish.purpose]
        old = sessions.pop(agent, None)
        if old is not None:
            self._unkey(old)
        cap = (self.config.max_probe_sessions if wish.purpose == "probe"
               else self.config.max_sessions)
        if self.keyed[wish.purpose] >= cap:
            self._sweep(now, force=True)
            if self.keyed[wish.purpose] >= cap:
                raise SessionsFull
        c = self.config
        max_packets = min(wish.packets or c.max_packets, c.max_packets)
        rate = min(wish.packet_rate or c.max_packet_rate, c.max_packet_rate)
        bucket = max(MIN_BUCKET_PACKETS, rate * c.burst_seconds)
        session = Session(
            key=secrets.token_bytes(KEY_BYTES), agent=agent, purpose=wish.purpose,
            max_packets=max_packets, packet_rate=rate,
            max_packet_bytes=min(wish.packet_bytes or c.max_packet_bytes, c.max_packet_bytes),
            expires=now + c.session_seconds, bucket_size=bucket, tokens=bucket, refilled=now,
            seen=bytearray((max_packets + 7) // 8))
        self.by_key[session.key] = session
        self.keyed[session.purpose] += 1
        sessions[agent] = session
        self.sessions_opened += 1
        return session

    def open_sessions(self, now: float) -> int:
        return sum(1 for s in self.by_key.values() if now < s.expires)

    def _unkey(self, session: Session) -> None:
        if self.by_key.pop(session.key, None) is not None:
            self.keyed[session.purpose] -= 1

    def _sweep(self, now: float, force: bool = False) -> None:
        if now < self._next_sweep and not force:
            return
        self._next_sweep = now + SWEEP_SECONDS
        for sessions in self.by_purpose.values():
            for agent, session in list(sessions.items()):
                if now >= session.expires:
                    self._unkey(session)  # its probes now count as unknown
                    if now >= session.expires + RETAIN_SECONDS:
                        del sessions[agent]

    # -- UDP --

    def _readable(self) -> None:
        """The loop's reader callback: answer what has arrived, a bounded batch at a time."""
        sock = self.sock
        if sock is None:
            return
        view = self._view
        for _ in range(READ_BATCH):
            try:
                size, ancdata, _, addr = sock.recvmsg_into([view], ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error queued for an echo whose sender went away: not a datagram.
                log.debug("UDP echo socket error: %s", exc)
                continue
            self.datagram_received(view[:size], addr, received_tos(ancdata))

    def datagram_received(self, data: bytes | memoryview, addr: Any,
                          tos: int | None = None) -> None:
        """Answer one datagram that arrived from `addr` with DS field `tos` (None: unknown)."""
        self.received_bytes += len(data)
        outcome, echo, reply_tos = self._answer(data, addr, tos)
        if echo is not None and self.sock is not None:
            outcome = self._send(self.sock, echo, addr, reply_tos)
        self.packets[outcome] += 1

    def _send(self, sock: socket.socket, echo: bytearray, addr: Any, tos: int) -> str:
        """Send an echo, with DS field `tos` if not 0; the outcome."""
        try:
            if tos:
                try:
                    sock.sendmsg([echo], tos_message(sock.family, addr, tos), 0, addr)
                except (BlockingIOError, InterruptedError):
                    raise
                except OSError:  # a kernel that refuses the marking: send it unmarked
                    echo[COS_OFFSET + 2] = 0
                    sock.sendto(echo, addr)
            else:
                sock.sendto(echo, addr)
        except (BlockingIOError, InterruptedError):
            # The socket's send buffer is full: drop rather than queue without bound.
            session = self.by_key.get(bytes(echo[4:4 + KEY_BYTES]))
            if session is not None:
                session.dropped["backlog"] += 1
            return "backlog"
        except OSError as exc:
            log.debug("UDP echo cannot answer %s: %s", addr, exc)
            return "backlog"
        self.sent_bytes += len(echo)
        return "echoed"

    def _answer(self, data: bytes | memoryview, addr: Any, tos: int | None = None
                ) -> tuple[str, bytearray | None, int]:
        """What to do with one datagram: an outcome, the echo to send if any, and the DS
        field to send it with."""
        size = len(data)
        if size < HEADER.size or data[:2] != MAGIC or data[3] != PROBE:
            return "malformed", None, 0  # an echo (kind ECHO) is never answered: no loops
        version = data[2]
        if not (version == 1 or (version == 2 and size >= V2_BYTES)):
            return "malformed", None, 0
        session = self.by_key.get(bytes(data[4:4 + KEY_BYTES]))
        if session is None:
            return "unknown_session", None, 0
        received_ns = time.monotonic_ns()
        seq = HEADER.unpack_from(data)[4]
        outcome = self._refusal(session, seq, size, addr, received_ns / 1e9)
        if outcome is not None:
            session.dropped[outcome] += 1
            return outcome, None, 0
        session.accept(seq)
        echo = bytearray(data)  # same length as the probe, never more
        echo[3] = ECHO
        SERVER_FIELDS.pack_into(echo, SERVER_FIELDS_OFFSET, received_ns, session.received)
        if version == 1:
            return "echoed", echo, 0  # as before version 2: no marking, no DS fields
        reply_tos = echo[COS_OFFSET] & DSCP_MASK
        COS.pack_into(echo, COS_OFFSET, echo[COS_OFFSET], tos or 0, reply_tos,
                      RECEIVED_KNOWN if tos is not None else 0)
        return "echoed", echo, reply_tos

    def _refusal(self, session: Session, seq: int, size: int, addr: Any,
                 now: float) -> str | None:
        """Why the session's caps refuse this probe, or None to echo it."""
        if now >= session.expires:
            return "expired"
        if size > session.max_packet_bytes:
            return "oversize"
        if session.source is None:
            session.source = addr
        elif addr != session.source:
            return "foreign_source"
        if seq >= session.max_packets or session.received >= session.max_packets:
            return "over_packets"
        if not session.take_token(now):
            return "over_rate"
        return None

    async def serve(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: the UDP endpoint lives as long as the app."""
        host = self.config.listen_host
        if host is None:
            host = app[CONFIG].listen_host if CONFIG in app else "127.0.0.1"
        loop = asyncio.get_running_loop()
        sock = await bound_socket(host, self.config.listen_port)
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        loop.add_reader(sock.fileno(), self._readable)
        log.info("UDP echo listening on %s port %d", host, self.port)
        try:
            yield
        finally:
            loop.remove_reader(sock.fileno())
            self.sock = None
            sock.close()

    # -- metrics --

    def samples(self) -> Iterator[Sample]:
        """The service's own metrics (counters since the server started)."""
        for outcome, n in self.packets.items():
            yield Sample(PACKETS, (outcome,), n)
        yield Sample(RECEIVED_BYTES, (), self.received_bytes)
        yield Sample(SENT_BYTES, (), self.sent_bytes)
        yield Sample(SESSIONS, (), self.sessions_opened)
        yield Sample(OPEN_SESSIONS, (), self.open_sessions(time.monotonic()))


async def bound_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to the first address of `host` that binds, asking
    for each datagram's DS field (what create_datagram_endpoint does, less the transport)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            ask_for_tos(sock)
            sock.bind(address)
        except OSError as exc:
            error = exc
            sock.close()
            continue
        return sock
    raise error or OSError(f"cannot bind the UDP echo to {host} port {port}")


PACKETS = MetricSpec("wardready_server_udp_echo_packets_total",
                     "UDP datagrams the echo service received, by what it did with them.",
                     ("outcome",), kind="counter")
RECEIVED_BYTES = MetricSpec("wardready_server_udp_echo_received_bytes_total",
                            "UDP payload bytes the echo service received.", kind="counter")
SENT_BYTES = MetricSpec("wardready_server_udp_echo_sent_bytes_total",
                        "UDP payload bytes the echo service sent.", kind="counter")
SESSIONS = MetricSpec("wardready_server_udp_echo_sessions_total",
                      "UDP echo sessions opened.", kind="counter")
OPEN_SESSIONS = MetricSpec("wardready_server_udp_echo_open_sessions",
                           "UDP echo sessions open now.")
METRICS = (PACKETS, RECEIVED_BYTES, SENT_BYTES, SESSIONS, OPEN_SESSIONS)

ECHO_SERVICE = web.AppKey("udp_echo", EchoService)


# -- HTTP --

async def create_session(request: web.Request) -> web.Response:
    """`POST /api/v1/udp-sessions`: a new session for the token's agent."""
    identity = await authenticate(request, "agent")
    body = await read_body(request)
    wish = validated(SessionRequest, parse_json(body) if body.strip() else {})
    service = request.app[ECHO_SERVICE]
    try:
        session = service.open((identity.ward, identity.host), wish)
    except SessionsFull:
        raise fail(web.HTTPServiceUnavailable, "too many UDP echo sessions open; retry later",
                   **{"Retry-After": str(max(1, round(service.config.session_seconds)))}
                   ) from None
    return web.json_response({
        "session": session.key.hex(), "port": service.port,
        "max_packets": session.max_packets, "packet_rate": session.packet_rate,
        "max_packet_bytes": session.max_packet_bytes,
        "expires_in": service.config.session_seconds}, status=201)


async def current_session(request: web.Request) -> web.Response:
    """`GET /api/v1/udp-sessions/current[?purpose=probe]`: what the server saw of the
    agent's session (of that purpose; media by default)."""
    identity = await authenticate(request, "agent")
    purpose = request.query.get("purpose", "media")
    if purpose not in PURPOSES:
        raise fail(web.HTTPBadRequest, f"purpose={purpose!r}: one of {', '.join(PURPOSES)}")
    sessions = request.app[ECHO_SERVICE].by_purpose[purpose]
    session = sessions.get((identity.ward, identity.host))
    if session is None:
        raise fail(web.HTTPNotFound, "no UDP echo session for this agent")
    return web.json_response(session.summary(time.monotonic()))


def setup(app: web.Application, config: EchoConfig) -> None:
    """Add the echo service to the app: the UDP endpoint starts and stops with it."""
    service = EchoService(config)
    app[ECHO_SERVICE] = service
    app.cleanup_ctx.append(service.serve)
