"""Delivers reports to the server in order, retrying with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque

import aiohttp

from wardready.report import Report

log = logging.getLogger(__name__)

REJECTED = {400, 413, 422}
"""The server will never accept these reports: retrying cannot help."""


class Delivery:
    """An ordered queue of reports and the loop that sends them."""

    def __init__(self, url: str, token: str, timeout: float, max_pending: int = 1000,
                 backoff_max: float = 60.0) -> None:
        self.url = url.rstrip("/") + "/api/v1/reports"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pending: deque[Report] = deque()
        self._max_pending = max_pending
        self._backoff_max = backoff_max
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failures = 0
        self.rejected = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, report: Report) -> None:
        """Queue a report; past the bound the oldest is dropped (and counted)."""
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(report)
        self._wake.set()

    async def run(self) -> None:
        """Send queued reports forever, oldest first."""
        backoff = 1.0
        async with aiohttp.ClientSession(timeout=self._timeout, headers=self._headers) as session:
            while True:
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if await self._send(session, self._pending[0]):
                    self._pending.popleft()
                    backoff = 1.0
                    continue
                await asyncio.sleep(random.uniform(0.5, 1.0) * backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _send(self, session: aiohttp.ClientSession, report: Report) -> bool:
        """True when the report is done with (stored, or rejected for good)."""
        try:
            async with session.post(self.url, data=report.model_dump_json(),
                                    headers={"Content-Type": "application/json"}) as resp:
                body = await resp.text()
                if resp.status in (200, 201):
                    self.delivered += 1
                    return True
                if resp.status in REJECTED:
                    self.rejected += 1
                    log.error("server rejected report %s (%d): %s", report.id, resp.status,
                              body[:300])
                    return True
                self.failures += 1
                log.warning("report %s not accepted (%d): %s", report.id, resp.status,
                            body[:300])
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures += 1
            log.warning("cannot deliver report %s to %s: %s", report.id, self.url,
                        exc or type(exc).__name__)
        return False
