"""Delivers spooled reports to the server in order, with exponential backoff and jitter.

A report is committed to the spool before any attempt to send it and removed only once the
server has acknowledged it (or refused it for good), so a crash, a lost reply or a day
without a link loses nothing; the server stores each report id once, so replays are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import random
import socket
import ssl
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from wardready.agent.spool import Spool, Spooled
from wardready.checks.base import server_tls
from wardready.core.api import REPORTS_PATH, clock_offset_seconds, retry_after_seconds
from wardready.core.errors import AttemptFailed
from wardready.core.serial import SerialThread
from wardready.model.report import CLOCK_AHEAD_SECONDS, clock_drift

log = logging.getLogger(__name__)

REJECTED = {400, 413, 422}
"""The server will never accept these reports: retrying cannot help."""
FAILURE_REASONS = ("dns", "connect", "tls", "timeout", "disconnect", "unauthorized",
                   "server_error", "http")
"""Why a delivery attempt failed: the bounded values of the `reason` label."""
MEMORY_FALLBACK = 100
"""Reports kept in memory while the spool cannot be written (a full or failing disk)."""
REUSE_SECONDS = 10.0
"""A connection idle for longer is not reused: the server may have closed it meanwhile
(aiohttp after 75 s), and a report sent on it would fail for nothing. A backlog being
replayed goes over one connection; a report every few minutes opens its own."""
MAX_ANSWER_BYTES = 64 << 10
CLOCK_WARNING_EVERY_SECONDS = 3600.0


class Answer(NamedTuple):
    """What the server said to one report."""

    status: int
    text: str
    retry_after: float | None
    """`Retry-After` in seconds, None without one."""
    clock_offset: float | None
    """This PC's clock minus the server's, from the answer's `Date` (None without one)."""


def failure_reason(exc: BaseException, connecting: bool) -> str:
    """Classify a failed attempt into one of FAILURE_REASONS."""
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "connect" if connecting else "disconnect"


class Sender:
    """POSTs reports over one kept-alive HTTP(S) connection, with the standard library
    (blocking: called on the delivery's own thread)."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float,
                 tls: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self.host, self.path = parts.hostname or "", parts.path
        self.port = parts.port or (443 if tls else 80)
        self._headers, self._timeout, self._tls = headers, timeout, tls
        self._conn: http.client.HTTPConnection | None = None
        self._used_at = 0.0

    def post(self, body: bytes) -> Answer:
        """The server's answer; raises AttemptFailed if it gave none."""
        if self._conn is None or time.monotonic() - self._used_at > REUSE_SECONDS:
            self.close()
            self._conn = self._connect()
        try:
            self._conn.request("POST", self.path, body=body, headers=self._headers)
            resp = self._conn.getresponse()
            text = resp.read(MAX_ANSWER_BYTES).decode(errors="replace")
            offset = clock_offset_seconds(resp.getheader("Date"), time.time())
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise AttemptFailed(failure_reason(exc, connecting=False), exc) from exc
        self._used_at = time.monotonic()
        if resp.will_close or not resp.isclosed():  # not read to the end: not reusable
            self.close()
        return Answer(resp.status, text, retry_after_seconds(resp.getheader("Retry-After")),
                      offset)

    def _connect(self) -> http.client.HTTPConnection:
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self._timeout,
                                            context=self._tls) if self._tls
                else http.client.HTTPConnection(self.host, self.port, timeout=self._timeout))
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise AttemptFailed(failure_reason(exc, connecting=True), exc) from exc
        return conn

    def abort(self) -> None:
        """Cut an attempt in progress short (from another thread): the agent is stopping."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):  # already closed
                conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Delivery:
    """The spool, a small in-memory fallback, and the loop that empties them."""

    def __init__(self, url: str, token: str, timeout: float, spool: Spool, io: SerialThread,
                 ca_file: Path | None = None, backoff_max: float = 60.0) -> None:
        self.url = url.rstrip("/") + REPORTS_PATH
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        tls = server_tls(ca_file) if self.url.startswith("https:") else None
        self._sender = Sender(self.url, headers, timeout, tls)
        self._network = SerialThread("delivery")  # a slow server never holds up the spool
        self.spool, self.io = spool, io
        self._memory: deque[Spooled] = deque()
        self._backoff_max = backoff_max
        self._wake = asyncio.Event()
        self.stats = spool.stats()
        self.delivered = 0
        self.rejected = 0
        self.spool_errors = 0
        self.memory_dropped = 0
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self._retry_after: float | None = None
        """The last refusal's `Retry-After`: the next attempt waits at least that long."""
        self.clock_offset: float | None = None
        """This PC's clock minus the server's, from the server's last answer."""
        self._clock_warned_at = -CLOCK_WARNING_EVERY_SECONDS

    @property
    def pending(self) -> int:
        return self.stats.reports + len(self._memory)

    @property
    def dropped_total(self) -> int:
        return self.stats.dropped_total + self.memory_dropped

    async def submit(self, report_id: str, body: bytes) -> None:
        """Make a report durable (in memory only if the disk fails), then wake the sender."""
        try:
            await self.io.call(self.spool.put, report_id, body)
            await self._refresh()
        except OSError as exc:
            self.spool_errors += 1
            log.error("cannot write report %s to the spool %s (%s); keeping it in memory",
                      report_id, self.spool.path, exc)
            if len(self._memory) >= MEMORY_FALLBACK:
                self._memory.popleft()
                self.memory_dropped += 1
            self._memory.append(Spooled(0, report_id, body))
        self._wake.set()

    async def _refresh(self) -> None:
        self.stats = await self.io.call(self.spool.stats)

    async def run(self) -> None:
        """Send waiting reports forever, oldest first."""
        backoff = 1.0
        try:
            while True:
                item = await self.io.call(self.spool.oldest)
                in_memory = item is None and bool(self._memory)
                if in_memory:
                    item = self._memory[0]
                if item is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if await self._send(item):
                    if in_memory:
                        self._memory.popleft()
                    else:
                        await self.io.call(self.spool.remove, item.seq)
                        await self._refresh()
                    backoff = 1.0
                    continue
                wait = random.uniform(0.5, 1.0) * backoff
                if self._retry_after is not None:  # the server said when; agents spread out
                    wait = max(wait, self._retry_after * random.uniform(1.0, 1.25))
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self._backoff_max)
        finally:
            # An attempt in flight is cut short and its report stays in the spool (the
            # server stores each id once); the connection is closed on its own thread.
            self._sender.abort()
            await asyncio.shield(self._network.call(self._sender.close))

    def close(self) -> None:
        """Stop the delivery thread without waiting for an attempt in flight (cut short)."""
        self._sender.abort()
        self._network.shutdown(wait=False)

    async def _send(self, item: Spooled) -> bool:
        """True when the report is done with (stored, or refused for good)."""
        self._retry_after = None
        try:
            answer = await self._network.call(self._sender.post, item.body)
        except AttemptFailed as exc:
            self.failures[exc.reason] += 1
            log.warning("cannot deliver report %s to %s (%s): %s", item.id, self.url,
                        exc.reason, exc)
            return False
        status, text, self._retry_after = answer.status, answer.text, answer.retry_after
        self._heed_clock(answer.clock_offset)
        if status in (200, 201):
            self.delivered += 1
            return True
        if status in REJECTED:
            self.rejected += 1
            log.error("server refused report %s for good (%d): %s", item.id, status, text[:300])
            return True
        reason = ("unauthorized" if status in (401, 403)
                  else "server_error" if status >= 500 else "http")
        self.failures[reason] += 1
        log.warning("report %s not accepted (%d %s): %s", item.id, status, reason, text[:300])
        return False

    def _heed_clock(self, offset: float | None) -> None:
        """Keep the clock offset and, once an hour, warn of a clock far from the server's:
        the server refuses reports dated over `CLOCK_AHEAD_SECONDS` ahead of its own clock."""
        if offset is None:
            return
        self.clock_offset = offset
        drift, now = clock_drift(offset), time.monotonic()
        if drift == "right" or now - self._clock_warned_at < CLOCK_WARNING_EVERY_SECONDS:
            return
        self._clock_warned_at = now
        if drift == "refused":
            log.error("this PC's clock is %.0f s ahead of the server's %s: the server refuses "
                      "reports over %.0f s ahead, so they are lost; set the clock (turn on time "
                      "synchronisation)", offset, self.url, CLOCK_AHEAD_SECONDS)
        else:
            log.warning("this PC's clock is %.0f s %s the server's %s: turn on time "
                        "synchronisation (reports over %.0f s ahead are refused)", abs(offset),
                        "ahead of" if offset > 0 else "behind", self.url, CLOCK_AHEAD_SECONDS)
