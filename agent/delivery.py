"""Delivers spooled reports to the server in order, with exponential backoff and jitter.

A report is committed to the spool before any attempt to send it and removed only once the
server has acknowledged it (or refused it for good), so a crash, a lost reply or a day
without a link loses nothing; the server stores each report id once, so replays are harmless.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import ssl
from collections import deque
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver

from agent.spool import Spool, Spooled
from checks.base import server_tls
from wardready.serial import SerialThread

log = logging.getLogger(__name__)

REJECTED = {400, 413, 422}
"""The server will never accept these reports: retrying cannot help."""
FAILURE_REASONS = ("dns", "connect", "tls", "timeout", "disconnect", "unauthorized",
                   "server_error", "http")
"""Why a delivery attempt failed: the bounded values of the `reason` label."""
MEMORY_FALLBACK = 100
"""Reports kept in memory while the spool cannot be written (a full or failing disk)."""


def failure_reason(exc: BaseException) -> str:
    """Classify a failed attempt into one of FAILURE_REASONS."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError |
                  ssl.SSLError):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    return "disconnect"


class Delivery:
    """The spool, a small in-memory fallback, and the loop that empties them."""

    def __init__(self, url: str, token: str, timeout: float, spool: Spool, io: SerialThread,
                 ca_file: Path | None = None, backoff_max: float = 60.0,
                 resolver: AbstractResolver | None = None) -> None:
        self.url = url.rstrip("/") + "/api/v1/reports"
        self._headers = {"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = server_tls(ca_file) if self.url.startswith("https:") else None
        self.spool, self.io = spool, io
        self._memory: deque[Spooled] = deque()
        self._backoff_max = backoff_max
        self._resolver = resolver  # tests inject one; the default asks the system
        self._wake = asyncio.Event()
        self.stats = spool.stats()
        self.delivered = 0
        self.rejected = 0
        self.spool_errors = 0
        self.memory_dropped = 0
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)

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
        except (sqlite3.Error, OSError) as exc:
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
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True,
                                         resolver=self._resolver)
        async with aiohttp.ClientSession(timeout=self._timeout, headers=self._headers,
                                         connector=connector) as session:
            while True:
                item = await self.io.call(self.spool.oldest)
                in_memory = item is None and bool(self._memory)
                if in_memory:
                    item = self._memory[0]
                if item is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if await self._send(session, item):
                    if in_memory:
                        self._memory.popleft()
                    else:
                        await self.io.call(self.spool.remove, item.seq)
                        await self._refresh()
                    backoff = 1.0
                    continue
                await asyncio.sleep(random.uniform(0.5, 1.0) * backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _send(self, session: aiohttp.ClientSession, item: Spooled) -> bool:
        """True when the report is done with (stored, or refused for good)."""
        try:
            async with session.post(self.url, data=item.body) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            reason = failure_reason(exc)
            self.failures[reason] += 1
            log.warning("cannot deliver report %s to %s (%s): %s", item.id, self.url, reason,
                        exc or type(exc).__name__)
            return False
        if resp.status in (200, 201):
            self.delivered += 1
            return True
        if resp.status in REJECTED:
            self.rejected += 1
            log.error("server refused report %s for good (%d): %s", item.id, resp.status,
                      text[:300])
            return True
        reason = ("unauthorized" if resp.status in (401, 403)
                  else "server_error" if resp.status >= 500 else "http")
        self.failures[reason] += 1
        log.warning("report %s not accepted (%d %s): %s", item.id, resp.status, reason,
                    text[:300])
        return False
