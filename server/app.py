"""The central aiohttp service: authenticated report ingest, durable storage, /metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError

from server.config import ServerConfig
from server.exposition import FleetCollector
from server.store import AgentState, Identity, Store
from wardready.configfile import dotted
from wardready.inventory import Inventory
from wardready.report import SCHEMA_VERSION, Report, schema_version_of
from wardready.serial import SerialThread

log = logging.getLogger(__name__)
T = TypeVar("T")


class Fleet:
    """The server's in-memory view of every agent, rebuilt from the store at start."""

    def __init__(self, agents: dict[tuple[str, str], AgentState],
                 active: set[tuple[str, str]]) -> None:
        self.agents = agents
        self.active = active


CONFIG = web.AppKey("config", ServerConfig)
INVENTORY = web.AppKey("inventory", Inventory)
STORE = web.AppKey("store", Store)
IO = web.AppKey("io", SerialThread)
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
    io = SerialThread("sqlite")
    store = await io.call(Store, app[CONFIG].database)
    fleet = Fleet(await io.call(store.agent_states), await io.call(store.active_agents))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(app[INVENTORY], lambda: fleet.agents, lambda: fleet.active))
    app[IO], app[STORE], app[FLEET], app[REGISTRY] = io, store, fleet, registry
    log.info("database %s: %d agents known", app[CONFIG].database, len(fleet.agents))
    yield
    await io.call(store.close)
    io.shutdown()


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
    app = request.app
    identity = await app[IO].call(app[STORE].authenticate, token.strip())
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
    app, fleet = request.app, request.app[FLEET]
    received_at = time.time()
    stored = await app[IO].call(app[STORE].add_report, report, received_at)
    if stored:
        key = (identity.ward, identity.host)
        fleet.agents.setdefault(key, AgentState()).apply(report, received_at)
        fleet.active.add(key)
    return web.json_response({"id": str(report.id), "stored": stored},
                             status=201 if stored else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the fleet and of the inventory's requirements."""
    app, fleet = request.app, request.app[FLEET]
    fleet.active = await app[IO].call(app[STORE].active_agents)  # tokens revoked from the CLI
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
