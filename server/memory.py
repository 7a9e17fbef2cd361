"""The cyclic garbage collector, set for a server whose state is many long-lived objects.

Every agent's latest results stay in memory as models (~90 objects the collector tracks per
PC). Left alone, the collector rescans all of them in each full collection: at 20,000 PCs a
pause of a second or more every few seconds under load, and most of the ingest CPU. Objects
that survive a full collection are long-lived, so they are frozen out of later scans
(`gc.freeze`); they are still freed by reference counting when replaced. A cycle that forms
among frozen objects afterwards would not be found, so once every `SWEEP_SECONDS` everything is
unfrozen and collected once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default is 700): a request's garbage is
mostly freed by reference counting, so scanning the young often buys little."""
SWEEP_SECONDS = 6 * 3600.0


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def freeze_long_lived() -> None:
    """Tune the collector for the server process (idempotent)."""
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    gc.freeze()


async def sweeping(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context running `sweep_periodically` while the app runs."""
    task = asyncio.create_task(sweep_periodically())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def sweep_periodically(period: float = SWEEP_SECONDS) -> None:
    """Collect the frozen objects too, once a period, then freeze the survivors again."""
    while True:
        await asyncio.sleep(period)
        start = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        log.info("full garbage collection: %d unreachable objects, %.0f ms", found,
                 (time.perf_counter() - start) * 1e3)
