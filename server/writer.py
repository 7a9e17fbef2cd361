"""Group commit: reports that arrive while a transaction is being written share the next one.

Each report is still acknowledged only once it is durably committed (synchronous=FULL), but
one fsync serves every report waiting at that moment instead of one each. Nothing waits on a
timer: an idle server commits a lone report at once, a busy one in batches as large as the
queue that built up during the previous commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from server.store import Store
from wardready.report import Report
from wardready.serial import SerialThread

MAX_BATCH = 256
"""Reports per transaction at most, so one commit stays short."""

Item = tuple[Report, float, Mapping[str, float | None]]


class ReportWriter:
    """Stores reports through `Store.add_reports`, batching those that arrive together."""

    def __init__(self, store: Store, io: SerialThread) -> None:
        self.store, self.io = store, io
        self._pending: list[tuple[Item, asyncio.Future[bool]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions committed (a batch of one counts as one)."""

    async def add(self, report: Report, received_at: float,
                  ward_link: Mapping[str, float | None]) -> bool:
        """Store one report durably; False if its id was already stored. Raises what the
        store raised for its batch (e.g. sqlite3.Error on a full disk)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((report, received_at, ward_link), done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                stored = await self.io.call(self.store.add_reports, [item for item, _ in batch])
            except Exception as exc:  # the whole batch failed: every waiter hears why
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.transactions += 1
            for (_, done), ok in zip(batch, stored, strict=True):
                if not done.done():
                    done.set_result(ok)
