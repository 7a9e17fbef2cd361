"""The central aiohttp service: authenticated report ingest, durable storage, /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from server.config import ServerConfig
from server.exposition import FleetCollector
from server.store import AgentState, Identity, Store
from wardready.configfile import dotted
from wardready.inventory import Inventory
from wardready.report import SCHEMA_VERSION, Report, schema_version_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class Database:
    """Runs every Store call on one dedicated thread, so SQLite never blocks the event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._path = config.database
        self.store: Store | None = None

    async def open(self) -> Store:
        self.store = await self.call(Store, self._path)
        return self.store

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        if self.store is not None:
            await self.call(self.store.close)
        self._executor.shutdown(wait=True)


class Fleet:
    """The server's in-memory view of every agent, rebuilt from the store at start."""

    def __init__(self, agents: dict[tuple[str, str], AgentState],
                 active: set[tuple[str, str]]) -> None:
        self.agents = agents
        self.active = active


CONFIG = web.AppKey("config", ServerConfig)
INVENTORY = web.AppKey("inventory", Inventory)
DATABASE = web.AppKey("database", Database)
FLEET = web.AppKey("fleet", Fleet)
REGISTRY = web.AppKey("registry", CollectorRegistry)


def create_app(config: ServerConfig, inventory: Inventory) -> web.Application:
    """The server application; the database is opened and closed with the app."""
    app = web.Application(client_max_size=config.max_report_bytes,
                          middlewares=[error_middleware])
    app[CONFIG] = config
    app[INVENTORY] = inventory
    app.cleanup_ctx.append(_database)
    app.router.add_post("/api/v1/reports", ingest_report)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    db = Database(app[CONFIG])
    store = await db.open()
    fleet = Fleet(await db.call(store.agent_states), await db.call(store.active_agents))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(app[INVENTORY], lambda: fleet.agents, lambda: fleet.active))
    app[DATABASE], app[FLEET], app[REGISTRY] = db, fleet, registry
    log.info("database %s: %d agents known", app[CONFIG].database, len(fleet.agents))
    yield
    await db.close()


def _fail(status: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json",
                  headers=headers or None)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as JSON `{"error": "..."}` with a fitting status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        reason = exc.reason
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            reason = f"report larger than {request.app[CONFIG].max_report_bytes} bytes"
        return web.json_response({"error": reason}, status=exc.status)


async def authenticate(request: web.Request) -> Identity:
    """The agent behind the request's bearer token; 401 if there is none or it is not valid."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _fail(web.HTTPUnauthorized, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
    db = request.app[DATABASE]
    assert db.store is not None
    identity = await db.call(db.store.authenticate, token.strip())
    if identity is None:
        raise _fail(web.HTTPUnauthorized, "invalid or revoked token",
                    **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return identity


async def ingest_report(request: web.Request) -> web.Response:
    """Store one agent report durably, then reply; a replayed id is acknowledged, not stored."""
    identity = await authenticate(request)
    try:
        payload = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise _fail(web.HTTPBadRequest, "body is not JSON") from None
    version = schema_version_of(payload)
    if version != SCHEMA_VERSION:
        raise _fail(web.HTTPUnprocessableEntity,
                    f"unsupported schema_version {version!r}; this server accepts {SCHEMA_VERSION}")
    try:
        report = Report.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _fail(web.HTTPUnprocessableEntity,
                    f"{dotted(first['loc']) or 'report'}: {first['msg']}") from None
    if (report.ward, report.host) != (identity.ward, identity.host):
        raise _fail(web.HTTPForbidden,
                    f"this token is for ward {identity.ward!r} host {identity.host!r}, "
                    f"not ward {report.ward!r} host {report.host!r}")
    db, fleet = request.app[DATABASE], request.app[FLEET]
    assert db.store is not None
    received_at = time.time()
    stored = await db.call(db.store.add_report, report, received_at)
    if stored:
        key = (identity.ward, identity.host)
        fleet.agents.setdefault(key, AgentState()).apply(report, received_at)
        fleet.active.add(key)
    return web.json_response({"id": str(report.id), "stored": stored},
                             status=201 if stored else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the fleet and of the inventory's requirements."""
    db, fleet = request.app[DATABASE], request.app[FLEET]
    assert db.store is not None
    fleet.active = await db.call(db.store.active_agents)  # tokens revoked from the CLI
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
