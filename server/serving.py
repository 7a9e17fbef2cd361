"""Running the server: the open-files limit, the guarded connections, TLS, and the graceful
stop on SIGTERM or SIGINT (requests in flight finish first, up to `SHUTDOWN_SECONDS`)."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from wardready.server.config import ServerConfig, ssl_context
from wardready.server.connections import (
    GUARD,
    GuardedRunner,
    open_files_limit,
    reserved_files,
)

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 30.0
BACKSTOP_SECONDS = 5.0
"""aiohttp's own keep-alive timer runs this much later than the guard's deadlines: it acts
only should the guard ever miss a connection."""
ACCEPT_ERROR = "socket.accept() out of system resource"
ACCEPT_LOG_SECONDS = 10.0


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit (each connection is a file);
    returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft, soft
    return soft, max(soft, target)


class AcceptErrors:
    """The event loop's exception handler: asyncio reports a failed accept (no file left)
    once per socket it could have accepted (up to the backlog) and retries each a second
    later, so the log grew by
    megabytes a second. One line per ACCEPT_LOG_SECONDS with the count; anything else goes
    to the default handler."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.clock = clock
        self.count = 0
        self._logged_at = -ACCEPT_LOG_SECONDS

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = self.clock()
        if now - self._logged_at >= ACCEPT_LOG_SECONDS:
            exc = context.get("exception")
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error("cannot accept connections: %s; failed accepts since the last such "
                      "line: %d; this server holds at most %d connections", why, self.count,
                      self.capacity)
            self.count, self._logged_at = 0, now


def serve(app: web.Application, config: ServerConfig, access_log: logging.Logger | None,
          announce: Callable[[str], None]) -> None:
    """Serve `app` until SIGTERM or SIGINT."""
    asyncio.run(_serve(app, config, access_log, announce))


async def _serve(app: web.Application, config: ServerConfig,
                 access_log: logging.Logger | None, announce: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    guard = app[GUARD]
    loop.set_exception_handler(AcceptErrors(guard.capacity))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = GuardedRunner(app, guard, shutdown_timeout=SHUTDOWN_SECONDS,
                           keepalive_timeout=BACKSTOP_SECONDS + max(
                               config.keepalive_timeout_seconds, config.header_timeout_seconds),
                           access_log=access_log)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.listen_host, config.listen_port,
                           ssl_context=ssl_context(config), backlog=guard.backlog)
        await site.start()
        files = open_files_limit()
        log.info("holding at most %d connections (max_connections %d, open-files limit %d "
                 "less %d kept for the database, logs and accepts; backlog %d); a request's "
                 "headers are due within %g s, an idle connection is closed after %g s",
                 guard.capacity, config.max_connections, files, reserved_files(files),
                 guard.backlog, guard.header_timeout, guard.keepalive_timeout)
        announce(f"======== Running on {site.name} ========")
        await stop.wait()
        log.info("stopping: requests in flight may finish within %g s", SHUTDOWN_SECONDS)
    finally:
        # Stops listening, closes idle connections, waits for requests in flight, then
        # runs the app's cleanup (the database is closed last).
        await runner.cleanup()
