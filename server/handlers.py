"""The agent-facing endpoints: report ingest, /metrics, health."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from wardready.core.metrics import MetricSpec, Sample
from wardready.model.report import SCHEMA_VERSION, clock_error, parse_report, schema_version_of
from wardready.server.auth import authenticate, authorize_scrape, fail
from wardready.server.bodies import invalid, parse_json, read_body
from wardready.server.context import CONFIG, EXPOSITION, FLEET, INVENTORY, IO, STORE, WRITER
from wardready.server.plan import PLANNER
from wardready.server.remote_write import REMOTE_WRITER
from wardready.server.sharding import MAX_SHARDS, WHOLE, shard_count

log = logging.getLogger(__name__)

REFUSED = MetricSpec("wardready_server_reports_refused_total",
                     "Reports refused for good, by reason: invalid (not the report schema), "
                     "clock (a time off the server's clock: that PC's clock is wrong), "
                     "forbidden (naming another ward or host than its token's).",
                     ("reason",), kind="counter")
METRICS = (REFUSED,)
REFUSAL_REASONS = ("invalid", "clock", "forbidden")
CLOCK_LOG_SECONDS = 3600.0
"""A PC whose clock is off is named in the log at most this often."""


class Refusals:
    """Reports refused for good, counted by reason; PCs with a wrong clock named in the log
    (their reports are lost until the clock is set, so an operator must hear of it)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._clock_logged: dict[tuple[str, str], float] = {}

    def refuse(self, reason: str, status: type[web.HTTPException], message: str,
               agent: tuple[str, str] | None = None) -> web.HTTPException:
        self.counts[reason] += 1
        if reason == "clock" and agent is not None:
            now = time.monotonic()
            if now - self._clock_logged.get(agent, -math.inf) >= CLOCK_LOG_SECONDS:
                self._clock_logged[agent] = now
                log.warning("refusing the reports of %s/%s until its clock is set: %s",
                            agent[0], agent[1], message)
        return fail(status, message)

    def samples(self) -> Iterator[Sample]:
        for reason in REFUSAL_REASONS:
            yield Sample(REFUSED, (reason,), self.counts[reason])


REFUSALS = web.AppKey("report_refusals", Refusals)


async def ingest_report(request: web.Request) -> web.Response:
    """Store one agent report durably, then reply; a replayed id is acknowledged, not stored."""
    identity = await authenticate(request, "agent")
    body = await read_body(request)
    refusals = request.app[REFUSALS]
    try:
        report = parse_report(body)
    except ValidationError as exc:  # say first whether it is JSON at all, and which version
        version = schema_version_of(parse_json(body))
        refusals.counts["invalid"] += 1
        if type(version) is not int or version != SCHEMA_VERSION:
            raise fail(web.HTTPUnprocessableEntity, f"unsupported schema_version {version!r}; "
                       f"this server accepts {SCHEMA_VERSION}") from None
        raise invalid(exc, "report") from None
    if (report.ward, report.host) != (identity.ward, identity.host):
        raise refusals.refuse("forbidden", web.HTTPForbidden,
                              f"this token is for ward {identity.ward!r} host "
                              f"{identity.host!r}, not ward {report.ward!r} host "
                              f"{report.host!r}")
    app, fleet = request.app, request.app[FLEET]
    received_at = time.time()
    wrong_time = clock_error(report, received_at)
    if wrong_time is not None:
        raise refusals.refuse("clock", web.HTTPUnprocessableEntity, wrong_time,
                              (identity.ward, identity.host))
    async with fleet.ward_lock(report.ward):  # other wards' reports share the commit
        ward_link = fleet.ward_link_change(report, received_at)
        try:
            stored = await app[WRITER].add(report, received_at, ward_link)
        except sqlite3.Error as exc:  # a full or failing disk: the agent keeps it, retries
            log.error("cannot store report %s: %s", report.id, exc)
            raise fail(web.HTTPServiceUnavailable, "storage unavailable; retry later",
                       **{"Retry-After": "5"}) from None
        if stored:
            fleet.apply(report, received_at, ward_link)
    if stored:
        app[PLANNER].note_outcomes(report.ward, report.outcomes)
        writer = app.get(REMOTE_WRITER)
        if writer is not None:
            writer.stored(report)
    return web.json_response({"id": str(report.id), "stored": stored},
                             status=201 if stored else 200)


async def ward_profile(request: web.Request) -> web.Response:
    """The requirement profile of the calling agent's ward, for `wardready-agent check`."""
    identity = await authenticate(request, "agent")
    inventory = request.app[INVENTORY]
    ward = inventory.ward(identity.ward)
    if ward is None:
        raise fail(web.HTTPNotFound, f"ward {identity.ward!r} is no longer in the inventory")
    profile = inventory.profile_of(ward)
    call = inventory.call_of(profile)
    return web.json_response({"ward": ward.id, "ward_name": ward.name,
                              "profile_id": ward.profile or inventory.defaults.profile,
                              "profile": profile.model_dump(mode="json"),
                              "roles": [r.model_dump(mode="json") for r in inventory.roles],
                              "call": call.model_dump(mode="json") if call else None})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the fleet and of the inventory's requirements; with
    `?shard=i&shards=n`, only the wards of shard i of n. Gzip-compressed when the client
    accepts it (Prometheus does), compressed in a worker thread and only when the shard
    changed since the last scrape."""
    authorize_scrape(request)
    shard = _shard(request)
    app, fleet = request.app, request.app[FLEET]
    # Tokens revoked meanwhile, assets changed: read again only if the database changed.
    fleet.active, fleet.asset_changes = await app[IO].call(app[STORE].scrape_inputs)
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        body = await app[EXPOSITION].render_gzip(time.time(), shard)
        headers["Content-Encoding"] = "gzip"
    else:
        body = app[EXPOSITION].render(time.time(), shard)
    return web.Response(body=body, headers=headers)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110: `gzip;q=0` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def _shard(request: web.Request) -> tuple[int, int]:
    index, count = request.query.get("shard"), request.query.get("shards")
    if index is None and count is None:
        return WHOLE
    try:
        shard = (int(index or ""), int(count or ""))
    except ValueError:
        shard = (-1, -1)
    if not 0 <= shard[0] < shard[1] <= MAX_SHARDS:
        # The values are not echoed: a query string is the client's, and may carry anything.
        raise fail(web.HTTPBadRequest, "shard and shards: give both, as integers with "
                   f"0 <= shard < shards <= {MAX_SHARDS}")
    return shard


async def metrics_targets(request: web.Request) -> web.Response:
    """The /metrics shards, for Prometheus's HTTP service discovery (`http_sd_configs`):
    enough that none serves more than `metrics_agents_per_shard` PCs on average."""
    authorize_scrape(request)
    app = request.app
    count = shard_count(len(app[FLEET].active), app[CONFIG].metrics_agents_per_shard)
    address = app[CONFIG].public_address or _arrived_at(request)
    if count == 1:
        return web.json_response([{"targets": [address], "labels": {}}])
    return web.json_response([
        {"targets": [address],
         "labels": {"__param_shard": str(i), "__param_shards": str(count),
                    "instance": f"{address}/shard-{i}-of-{count}"}}
        for i in range(count)])


def _arrived_at(request: web.Request) -> str:
    """HOST:PORT of the socket the request came in on: what the client reached, which,
    unlike its Host header, it cannot choose."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        raise fail(web.HTTPServiceUnavailable, "the server's own address is unknown; "
                   "set public_address in server.yml", **{"Retry-After": "30"})
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
