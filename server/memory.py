"""The cyclic garbage collector, set for a server whose state is many long-lived objects.

Every agent's latest results stay in memory as models (~90 objects the collector tracks per
PC). Left alone, the collector rescans all of them in each full collection: at 20,000 PCs a
pause of a second or more every few seconds under load, and most of the ingest CPU. Objects
that survive a collection are long-lived, so they are frozen out of later scans
(`gc.freeze`); they are still freed by reference counting when replaced.

CPython's own trigger does not fit this either. It collects the young once allocations
exceed deallocations by a threshold, and freeing a frozen object counts as a deallocation:
a routine report allocates about as many long-lived objects as it frees of its PC's previous
ones, so under load the young generation grew for seconds between collections (1,300
reports' objects, a 70 ms pause for the young, 0.8 s for the middle generation at 20,000
PCs and 1,000 reports/s). So the automatic collector is off, and the young objects are
collected by the clock instead, every `YOUNG_SECONDS` from the event loop: a pause bounded by
what that fraction of a second allocated, whatever the rate of reports. The survivors are
frozen at once.

A cycle that forms among frozen objects afterwards would not be found, nor garbage that was
still in use by a request in flight at the moment of a freeze, so once every `SWEEP_SECONDS`
everything is unfrozen and collected once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

log = logging.getLogger(__name__)

YOUNG_SECONDS = 0.25
"""How often the young objects are collected (and the survivors frozen)."""
SWEEP_SECONDS = 6 * 3600.0


def freeze_long_lived() -> None:
    """Tune the collector for the server process (idempotent): what exists now is frozen and
    the automatic collector is off; `collecting` collects the young by the clock."""
    gc.disable()
    gc.freeze()


def collect_young() -> int:
    """Collect the objects allocated since the last call, freeze the survivors; returns the
    unreachable objects found."""
    found = gc.collect(0)
    gc.freeze()
    return found


async def collecting(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context collecting the young every `YOUNG_SECONDS` and everything
    every `SWEEP_SECONDS` while the app runs."""
    tasks = [asyncio.create_task(collect_young_periodically()),
             asyncio.create_task(sweep_periodically())]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def collect_young_periodically(period: float = YOUNG_SECONDS) -> None:
    while True:
        await asyncio.sleep(period)
        collect_young()


async def sweep_periodically(period: float = SWEEP_SECONDS) -> None:
    """Collect the frozen objects too, once a period, then freeze the survivors again."""
    while True:
        await asyncio.sleep(period)
        start = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        log.info("full garbage collection: %d unreachable objects, %.0f ms", found,
                 (time.perf_counter() - start) * 1e3)
