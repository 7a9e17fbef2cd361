"""The server's HTTP connections: how many it holds, how long one may wait for a request,
and what a request the HTTP parser refuses gets back.

Every connection costs an open file. Without a bound, idle or half-sent connections
(headers never finished) used up the open-files limit and the agents' reports could no
longer get in. The guard holds at most `capacity` connections: a new one past it closes the
connection that has waited longest for a request (never one whose request is being read,
handled or answered), so that an agent connecting now always gets in. A connection must
bring its request line and headers within `header_timeout` of opening or of the request's
first byte, and may idle `keepalive_timeout` after an answer.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import (
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from multidict import CIMultiDict, CIMultiDictProxy

from wardready.core.metrics import MetricSpec, Sample
from wardready.server.config import ServerConfig

log = logging.getLogger(__name__)

MIN_BACKLOG, MAX_BACKLOG = 128, 1024
"""Connections the kernel queues for accepting: aiohttp's default at least, more when there
are files for them (after a restart every agent reconnects; a queue that overflows drops
connection attempts, which retry only after 1 s, 3 s, ...)."""
HANDSHAKE_SECONDS = 60.0
"""asyncio's limit on a TLS handshake."""
OTHER_FILES = 64
"""Files for SQLite, the logs, the UDP echo and the event loop."""
MAX_LINE_BYTES = 8190
"""aiohttp's limit on the request line and on each header."""

SHED_REASONS = ("capacity", "refused", "silent", "slow_request")
"""Why the server closed a connection: `capacity` (it had waited longest for a request when
a new one came past capacity), `refused` (a new one past capacity while every other was busy
with a request), `silent` (sent nothing within the header timeout of opening),
`slow_request` (began a request and did not finish its headers in time)."""
MALFORMED_REASONS = ("too_long", "request_line", "header", "body")

OPEN = MetricSpec("wardready_server_open_connections", "HTTP connections open now.")
CAPACITY = MetricSpec("wardready_server_max_connections",
                      "HTTP connections the server holds at most: max_connections, or less "
                      "when the open-files limit is lower.")
SHED = MetricSpec("wardready_server_connections_shed_total",
                  "HTTP connections the server closed before they brought a request, by "
                  "reason (capacity, refused, silent, slow_request); kept-alive connections "
                  "closed when idle are not counted.", ("reason",), kind="counter")
MALFORMED = MetricSpec("wardready_server_malformed_requests_total",
                       "Requests the HTTP parser refused with 400, by what was wrong "
                       "(too_long, request_line, header, body).", ("reason",), kind="counter")
METRICS = (OPEN, CAPACITY, SHED, MALFORMED)


def open_files_limit() -> int:
    """The process's soft limit on open files."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def backlog_for(files: int) -> int:
    """The listening socket's backlog for an open-files limit of `files`."""
    return max(MIN_BACKLOG, min(MAX_BACKLOG, files // 64))


def reserved_files(files: int) -> int:
    """Open files kept out of the connections' share: asyncio accepts up to a backlog of
    sockets in one go and the guard sees them a loop turn later, as many it closed to make
    room for them may wait a loop turn to be released, one more backlog for margin, and
    OTHER_FILES."""
    return 3 * backlog_for(files) + OTHER_FILES


def capacity_for(max_connections: int, files: int) -> int:
    """Connections to hold: `max_connections`, or fewer when the open-files limit leaves less
    room after the reserved files (and at least a few, so that a tiny limit still serves)."""
    return max(8, min(max_connections, files - reserved_files(files)))


class ConnectionGuard:
    """Counts the open connections and closes the ones past capacity or past their time."""

    def __init__(self, capacity: int, header_timeout: float, keepalive_timeout: float,
                 backlog: int = MIN_BACKLOG) -> None:
        self.capacity = capacity
        self.backlog = backlog
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.open = 0
        self.shed: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()
        self._waiting: dict[GuardedHandler, None] = {}
        """Connections waiting for a request, longest waiting first (dicts keep order)."""
        self._arriving: dict[GuardedHandler, float] = {}
        """Connections accepted and not connected yet, with when, oldest first."""

    def arriving(self, conn: GuardedHandler, now: float) -> bool:
        """A connection was accepted (its protocol is being made; it is connected a loop
        turn later, or after its TLS handshake): make room for it. False if there is none:
        every other connection is mid-request. Counting it from here, not from when it is
        connected, keeps a burst of accepts from running out of files."""
        while self._arriving:  # a failed TLS handshake never connects: forget it
            oldest, since = next(iter(self._arriving.items()))
            if now - since < HANDSHAKE_SECONDS:
                break
            del self._arriving[oldest]
        self._arriving[conn] = now
        if self.open + len(self._arriving) <= self.capacity:
            return True
        waiting = next(iter(self._waiting), None)
        if waiting is None:
            return False
        self.close(waiting, "capacity")
        return True

    def opened(self, conn: GuardedHandler, room: bool) -> None:
        """The connection is made; closed at once if there was no `room` for it."""
        self._arriving.pop(conn, None)
        self.open += 1
        if not room:
            self.close(conn, "refused")
            return
        self.waiting(conn)

    def waiting(self, conn: GuardedHandler) -> None:
        """The connection now waits for a request: last in line to be closed."""
        self._waiting.pop(conn, None)
        self._waiting[conn] = None

    def busy(self, conn: GuardedHandler) -> None:
        """The connection brought a request: it is not closed until it has its answer."""
        self._waiting.pop(conn, None)

    def closed(self, conn: GuardedHandler) -> None:
        self.open -= 1
        self._waiting.pop(conn, None)

    def close(self, conn: GuardedHandler, reason: str | None) -> None:
        """Close a connection now; count it under `reason` (None: an idle keep-alive)."""
        self._waiting.pop(conn, None)
        if reason is not None:
            self.shed[reason] += 1
        conn.drop()

    def samples(self) -> Iterator[Sample]:
        """The guard's figures for the server's /metrics."""
        yield Sample(OPEN, (), self.open)
        yield Sample(CAPACITY, (), self.capacity)
        for reason in SHED_REASONS:
            yield Sample(SHED, (reason,), self.shed[reason])
        for reason in MALFORMED_REASONS:
            yield Sample(MALFORMED, (reason,), self.malformed[reason])


GUARD = web.AppKey("connection_guard", ConnectionGuard)


def setup(app: web.Application, config: ServerConfig) -> ConnectionGuard:
    """Give the app its connection guard, sized for the open-files limit in force now."""
    files = open_files_limit()
    guard = ConnectionGuard(capacity_for(config.max_connections, files),
                            config.header_timeout_seconds, config.keepalive_timeout_seconds,
                            backlog_for(files))
    app[GUARD] = guard
    return guard


def malformed(exc: HttpProcessingError) -> tuple[str, str]:
    """(reason, answer) for a request the parser refused. The parser's own message quotes
    the offending bytes, which may be a bearer token: neither is ever shown or logged."""
    if isinstance(exc, LineTooLong):
        return "too_long", f"request line or header longer than {MAX_LINE_BYTES} bytes"
    if isinstance(exc, BadStatusLine | InvalidURLError):
        return "request_line", "bad request line"
    if isinstance(exc, PayloadEncodingError):
        return "body", "bad request body framing"
    return "header", "bad request header"


class GuardedHandler(RequestHandler):
    """aiohttp's protocol for one connection, reporting to the guard: opened, waiting for a
    request, busy with one, closed; and answering a malformed request without echoing it."""

    __slots__ = ("_guard", "_opened", "_room", "_served", "_started", "_timer")

    def __init__(self, manager: Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        """A request's first bytes arrived (its headers are not complete yet)."""
        self._served = False
        self._opened = False
        self._room = guard.arriving(self, self._loop.time())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._opened = True
        self._wait(self._guard.header_timeout)
        self._guard.opened(self, self._room)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._opened:
            self._opened = False
            self._cancel_timer()
            self._guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None and not self._started and data:
            # A request begins: its headers are due within the header timeout.
            self._started = True
            due = self._loop.time() + self._guard.header_timeout
            if due < self._timer.when():
                self._cancel_timer()
                self._timer = self._loop.call_at(due, self._expire)
        super().data_received(data)

    def begin_request(self) -> None:
        """The request's headers are complete (called as aiohttp makes its request)."""
        self._cancel_timer()
        self._guard.busy(self)

    async def finish_response(self, request: BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        self._served = True
        if self._opened and self.transport is not None:
            self._wait(self._guard.keepalive_timeout)
            self._guard.waiting(self)
        return answered

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 400 and isinstance(exc, HttpProcessingError):
            reason, answer = malformed(exc)
            self._guard.malformed[reason] += 1
            log.debug("refused a malformed request from %s: %s", request.remote, answer)
            resp = web.json_response({"error": answer}, status=400)
            resp.force_close()
            return resp
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError | HttpProcessingError):
            # A body the client sent corrupt, met again as aiohttp drains what the handler
            # did not read (a 415, a 401 first): the client's fault, already answered.
            self._guard.malformed["body"] += 1
            log.debug("dropped the rest of a malformed request body: %s", type(exc).__name__)
            return
        super().log_exception(*args, **kw)

    def drop(self) -> None:
        """Close at once: abort frees the socket now, even a TLS one mid-shutdown."""
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
        self.force_close()

    def _wait(self, seconds: float) -> None:
        self._cancel_timer()
        self._started = False
        self._timer = self._loop.call_at(self._loop.time() + seconds, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._started:
            reason: str | None = "slow_request"
        else:
            reason = None if self._served else "silent"
        self._guard.close(self, reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _without_unknown_expect(message: RawRequestMessage) -> RawRequestMessage:
    """The request without an `Expect` other than 100-continue, which RFC 9110 lets a server
    ignore: aiohttp's own handling of it, on a path or method no route takes, echoes the
    value and fails with 500 on bytes it cannot encode."""
    expect = message.headers.get("Expect")
    if expect is None or expect.strip().lower() == "100-continue":
        return message
    headers = CIMultiDict((k, v) for k, v in message.headers.items() if k.lower() != "expect")
    raw = tuple((k, v) for k, v in message.raw_headers if k.lower() != b"expect")
    return message._replace(headers=CIMultiDictProxy(headers), raw_headers=raw)


class GuardedServer(Server):
    """aiohttp's connection factory, making GuardedHandlers."""

    def __init__(self, guard: ConnectionGuard, plain: Server, loop: asyncio.AbstractEventLoop,
                 **kwargs: Any) -> None:
        super().__init__(plain.request_handler, request_factory=self._begin,
                         handler_cancellation=plain.handler_cancellation, loop=loop, **kwargs)
        self._guard = guard
        self._handler_kwargs = kwargs
        self._make = plain.request_factory

    def _begin(self, message: RawRequestMessage, payload: StreamReader,
               protocol: RequestHandler, writer: AbstractStreamWriter,
               task: asyncio.Task[None]) -> BaseRequest:
        if isinstance(protocol, GuardedHandler):
            protocol.begin_request()
        return self._make(_without_unknown_expect(message), payload, protocol, writer, task)

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, guard=self._guard, **self._handler_kwargs)


class GuardedRunner(web.AppRunner):
    """AppRunner whose connections report to the guard. `handler_kwargs` (keepalive_timeout,
    access_log, ...) go to each connection's handler as AppRunner's would."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, *,
                 shutdown_timeout: float, **handler_kwargs: Any) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout, **handler_kwargs)
        self._guard = guard
        self._handler_kwargs = handler_kwargs

    async def _make_server(self) -> Server:
        plain = await super()._make_server()  # starts the app (on_startup, cleanup_ctx)
        return GuardedServer(self._guard, plain, asyncio.get_running_loop(),
                             **self._handler_kwargs)
