"""Authenticated, capped UDP echo: the far end of the media check (`checks.media`).

An agent asks over HTTPS for a session (`POST /api/v1/udp-sessions`), then sends UDP probes
carrying the session key to the port named in the reply. The server echoes each probe of a
live session within its caps, exactly as long as it came (never larger: no amplification),
with its own receive time and count written in. Anything else is dropped silently and
counted. A session is bound to the token's (ward, host), one per agent and purpose (the
media test's, and the continuous probe's, `checks.probe`, so that neither ends the other),
and to the UDP source address of its first probe, so a key seen on the wire cannot be used
from elsewhere to reflect traffic at someone else.

`setup(app, EchoConfig(...))` gives the app the service, whose UDP endpoint lives as long as
the app; the caps are `EchoConfig`, the `udp_echo` section of the server config.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from wardready.core.echo import ECHO, HEADER, KEY_BYTES, MAGIC, PROBE, VERSION
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


class EchoService(asyncio.DatagramProtocol):
    """The sessions, the UDP endpoint and its counters (for the server to expose)."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.port = 0
        """The bound UDP port, once started."""
        self.transport: asyncio.DatagramTransport | None = None
        self.paused = False
        """Set while echoes wait in user space for a full socket buffer: then new probes are
        dropped, so the backlog stays bounded."""
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport: no isinstance.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received_bytes += len(data)
        outcome, echo = self._answer(data, addr)
        self.packets[outcome] += 1
        if echo is not None and self.transport is not None:
            self.transport.sendto(echo, addr)
            self.sent_bytes += len(echo)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for echoes whose sender went away: nothing to do, nothing to crash.
        log.debug("UDP echo socket error: %s", exc)

    def _answer(self, data: bytes, addr: Any) -> tuple[str, bytes | None]:
        """What to do with one datagram: an outcome, and the echo to send if any."""
        if (len(data) < HEADER.size or data[:2] != MAGIC or data[2] != VERSION
                or data[3] != PROBE):
            return "malformed", None  # an echo (kind ECHO) is never answered: no loops
        session = self.by_key.get(bytes(data[4:4 + KEY_BYTES]))
        if session is None:
            return "unknown_session", None
        received_ns = time.monotonic_ns()
        seq = HEADER.unpack_from(data)[4]
        outcome = self._refusal(session, seq, len(data), addr, received_ns / 1e9)
        if outcome is not None:
            session.dropped[outcome] += 1
            return outcome, None
        session.accept(seq)
        echo = bytearray(data)  # same length as the probe, never more
        echo[3] = ECHO
        SERVER_FIELDS.pack_into(echo, SERVER_FIELDS_OFFSET, received_ns, session.received)
        return "echoed", bytes(echo)

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
        if self.paused:
            return "backlog"
        return None

    async def serve(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: the UDP endpoint lives as long as the app."""
        host = self.config.listen_host
        if host is None:
            host = app[CONFIG].listen_host if CONFIG in app else "127.0.0.1"
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(host, self.config.listen_port))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        self.port = int(transport.get_extra_info("sockname")[1])
        log.info("UDP echo listening on %s port %d", host, self.port)
        try:
            yield
        finally:
            transport.close()
            self.transport = None

    # -- metrics --

    def samples(self) -> Iterator[Sample]:
        """The service's own metrics (counters since the server started)."""
        for outcome, n in self.packets.items():
            yield Sample(PACKETS, (outcome,), n)
        yield Sample(RECEIVED_BYTES, (), self.received_bytes)
        yield Sample(SENT_BYTES, (), self.sent_bytes)
        yield Sample(SESSIONS, (), self.sessions_opened)
        yield Sample(OPEN_SESSIONS, (), self.open_sessions(time.monotonic()))


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
