"""One dedicated thread for blocking work (SQLite, fsync), so it never stalls the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class SerialThread:
    """Runs calls one at a time, in order, on its own thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self, wait: bool = True) -> None:
        """Run no more calls; with `wait`, first finish those already queued."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
