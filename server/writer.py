"""Group commit: reports that arrive while a transaction is being written share the next one.

Each report is still acknowledged only once it is durably committed (synchronous=FULL), but
one fsync serves every report waiting at that moment instead of one each. An idle server
commits a lone report at once. A server that is busy with reports one after another (the
previous commit ended less than `STREAM_SECONDS` ago) first waits `COMMIT_DELAY_SECONDS` for
the next few to join, as PostgreSQL's `commit_delay` does: a commit costs about as much CPU
as the rest of a routine report's handling, and at 1,000 reports/s, arriving a millisecond
apart, each would otherwise pay for its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

from wardready.core.serial import SerialThread
from wardready.model.report import Report
from wardready.server.store import Store

MAX_BATCH = 256
"""Reports per transaction at most, so one commit stays short."""
COMMIT_DELAY_SECONDS = 0.002
"""How long a busy server holds a transaction open for more reports."""
STREAM_SECONDS = 0.01
"""A report arriving this soon after the previous commit means reports are streaming in."""

Item = tuple[Report, float, Mapping[str, float | None]]


class ReportWriter:
    """Stores reports through `Store.add_reports`, batching those that arrive together."""

    def __init__(self, store: Store, io: SerialThread) -> None:
        self.store, self.io = store, io
        self._pending: list[tuple[Item, asyncio.Future[bool]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions committed (a batch of one counts as one)."""
        self._last_commit = -math.inf

    async def add(self, report: Report, received_at: float,
                  ward_link: Mapping[str, float | None]) -> bool:
        """Store one report durably; False if its id was already stored. Raises what the
        store raised for it (e.g. sqlite3.Error on a full disk). A batch that fails is
        written again report by report, so a report that cannot be stored fails alone."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((report, received_at, ward_link), done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_commit < STREAM_SECONDS:
            await asyncio.sleep(COMMIT_DELAY_SECONDS)
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                stored = await self.io.call(self.store.add_reports, [item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    if not batch[0][1].done():
                        batch[0][1].set_exception(exc)
                else:  # nothing was stored: each report alone, so only the one at fault fails
                    await self._one_by_one(batch)
                continue
            self._committed(loop)
            for (_, done), ok in zip(batch, stored, strict=True):
                if not done.done():
                    done.set_result(ok)

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[bool]]]) -> None:
        for item, done in batch:
            try:
                (ok,) = await self.io.call(self.store.add_reports, [item])
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                continue
            self._committed(asyncio.get_running_loop())
            if not done.done():
                done.set_result(ok)

    def _committed(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transactions += 1
        self._last_commit = loop.time()
