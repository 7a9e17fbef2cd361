"""The central aiohttp service: the app factory, its resources and error handling (the
routes: `server.routes`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from wardready.core.inventory import Inventory
from wardready.core.serial import SerialThread
from wardready.model import criteria
from wardready.server import (
    connections,
    enroll,
    handlers,
    plan,
    remote_write,
    speedtest,
    udp_echo,
)
from wardready.server.auth import SCRAPE_TOKEN
from wardready.server.config import ServerConfig, scrape_token
from wardready.server.context import (
    CONFIG,
    EXPOSITION,
    FLEET,
    INVENTORY,
    IO,
    STORE,
    TOKENS,
    WRITER,
    Fleet,
)
from wardready.server.exposition import FleetExposition
from wardready.server.plan import PLANNER, PlanBook, Planner
from wardready.server.remote_write import REMOTE_WRITER, RemoteWriter
from wardready.server.routes import ROUTES
from wardready.server.store import Store, TokenReader
from wardready.server.store.port_errors import PORT_ERRORS_WINDOW_SECONDS
from wardready.server.writer import ReportWriter

log = logging.getLogger(__name__)


def create_app(config: ServerConfig, inventory: Inventory) -> web.Application:
    """The server application; the database is opened and closed with the app."""
    app = web.Application(client_max_size=config.max_report_bytes,
                          middlewares=[error_middleware])
    app[CONFIG] = config
    app[INVENTORY] = inventory
    app[handlers.REFUSALS] = handlers.Refusals()
    token = scrape_token(config)
    if token is not None:
        app[SCRAPE_TOKEN] = token
    app.cleanup_ctx.append(_database)
    app.add_routes(ROUTES)
    planner = Planner(PlanBook(config.inventory, inventory))
    app[PLANNER] = planner
    speedtest.setup(app, config.speedtest, planner)
    udp_echo.setup(app, config.udp_echo)
    enroll.setup(app)
    connections.setup(app, config)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    io = SerialThread("sqlite")
    store = await io.call(Store, app[CONFIG].database)
    future = await io.call(store.forget_future, time.time())
    if future:
        log.warning("forgot %d stored results dated in the future (an agent's clock ahead)",
                    future)
    fleet = Fleet(await io.call(store.agent_states), await io.call(store.active_agents),
                  app[CONFIG].readiness_max_age_seconds, await io.call(store.ward_link_latest))
    config = app[CONFIG]
    writer = None
    if config.remote_write is not None:
        writer = app[REMOTE_WRITER] = RemoteWriter(config.remote_write, store, io,
                                                   app[INVENTORY])
    components = [(handlers.METRICS, app[handlers.REFUSALS].samples),
                  (speedtest.METRICS, app[speedtest.SLOTS].samples),
                  (plan.METRICS, app[PLANNER].samples),
                  (udp_echo.METRICS, app[udp_echo.ECHO_SERVICE].samples),
                  (connections.METRICS, app[connections.GUARD].samples)]
    if writer is not None:
        components.append((remote_write.METRICS, writer.samples))
    exposition = FleetExposition(
        app[INVENTORY], lambda: fleet.agents, lambda: fleet.active, lambda: fleet.asset_changes,
        app[CONFIG].readiness_max_age_seconds, components=components,
        measurements=writer is None)
    app[IO], app[STORE], app[FLEET], app[EXPOSITION] = io, store, fleet, exposition
    for (ward, _), state in fleet.agents.items():
        app[PLANNER].note_outcomes(ward, state.outcomes.values())
    app[TOKENS] = TokenReader(app[CONFIG].database)
    app[WRITER] = ReportWriter(store, io)
    log.info("database %s: %d agents known", app[CONFIG].database, len(fleet.agents))
    tasks = [asyncio.create_task(_prune_ward_link(io, store)),
             asyncio.create_task(_render_ahead(fleet, exposition))]
    if writer is not None:
        log.info("remote write to %s", writer.config.url)
        tasks.append(asyncio.create_task(writer.run()))
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    app[TOKENS].close()
    await io.call(store.close)
    io.shutdown()


RENDER_AHEAD_SECONDS = 1.0
RENDER_AHEAD_CHUNK = 10
"""Agents rendered between two looks at the event loop's other work (10-20 ms)."""
BUSY_REPORTS = 200
"""Reports in a second above which rendering ahead waits: the CPU is the reports'."""
BUSY_SECONDS = 0.005
"""Other work longer than this between two chunks means requests are waiting..."""
BACK_OFF_SECONDS = 0.05
"""... so the next chunk waits this long."""


async def _render_ahead(fleet: Fleet, exposition: FleetExposition) -> None:
    """Render the agents' /metrics lines after start and after they report, in small chunks
    while ingest is not busy, leaving way to requests, so that a scrape finds them ready
    (rendering 20,000 PCs at the first scrape after start took 20 s)."""
    while True:
        applied = fleet.applied
        await asyncio.sleep(RENDER_AHEAD_SECONDS)
        if fleet.applied - applied > BUSY_REPORTS * RENDER_AHEAD_SECONDS:
            continue
        stale = exposition.out_of_date()
        applied, started = fleet.applied, time.monotonic()
        for i in range(0, len(stale), RENDER_AHEAD_CHUNK):
            exposition.render_agents(stale[i:i + RENDER_AHEAD_CHUNK])
            yielded = time.monotonic()
            await asyncio.sleep(0)  # whatever arrived meanwhile goes first
            if time.monotonic() - yielded > BUSY_SECONDS:
                await asyncio.sleep(BACK_OFF_SECONDS)
            if fleet.applied - applied > BUSY_REPORTS * (time.monotonic() - started):
                break  # ingest is busy: the scrapes render what they need


async def _prune_ward_link(io: SerialThread, store: Store) -> None:
    """Keep the ward link and port error histories to twice their windows, once an hour."""
    while True:
        now = time.time()
        links, ports = await io.call(store.prune_histories,
                                     now - 2 * criteria.HISTORY_SECONDS,
                                     now - 2 * PORT_ERRORS_WINDOW_SECONDS)
        if links or ports:
            log.info("forgot %d ward link figures and %d port error counts older than their "
                     "windows", links, ports)
        await asyncio.sleep(3600)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as JSON `{"error": "..."}` with a fitting status. A fault of the
    server is 503 with Retry-After, never 500: an agent keeps its report and tries again."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.headers.get("Connection") == "close":  # the request's bytes cannot be trusted
            response = web.Response(status=exc.status, body=exc.body, headers=exc.headers)
            response.force_close()
            return response
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        reason = exc.reason
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            reason = f"request larger than {request.app[CONFIG].max_report_bytes} bytes"
        return web.json_response({"error": reason}, status=exc.status)
    except ConnectionResetError:  # the client hung up mid-request: nobody to answer
        log.debug("%s %s: the client closed the connection", request.method, request.path[:200])
        response = web.json_response({"error": "connection closed by the client"}, status=400)
        response.force_close()
        return response
    except HttpProcessingError as exc:  # what aiohttp found wrong in the request as it read it
        return web.json_response({"error": f"bad request: {exc.message}"[:200]},
                                 status=exc.code if 400 <= exc.code < 500 else 400)
    except Exception:  # a bug: log it whole, answer briefly, keep serving
        log.exception("unexpected error serving %s %s", request.method, request.path[:200])
        return web.json_response({"error": "internal error; retry later"}, status=503,
                                 headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


RETRY_AFTER_SECONDS = 30
"""What a client is told to wait after a fault of the server."""
