"""Administrator endpoints (admin tokens only): agent tokens, the asset history, the wards'
readiness, the equipment request list."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from wardready.core import i18n
from wardready.core.inventory import Slug
from wardready.model import criteria
from wardready.server import assets, equipment, readiness
from wardready.server.auth import authenticate, fail
from wardready.server.bodies import read_json, validated
from wardready.server.context import CONFIG, FLEET, INVENTORY, IO, STORE
from wardready.server.store.port_errors import PORT_ERRORS_WINDOW_SECONDS, crc_per_day

log = logging.getLogger(__name__)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ward: Slug
    host: Slug


async def list_tokens(request: web.Request) -> web.Response:
    await authenticate(request, "admin")
    app = request.app
    rows = await app[IO].call(app[STORE].tokens)
    return web.json_response([dataclasses.asdict(row) for row in rows])


async def issue_token(request: web.Request) -> web.Response:
    admin = await authenticate(request, "admin")
    wanted = validated(TokenRequest, await read_json(request))
    app = request.app
    if app[INVENTORY].ward(wanted.ward) is None:
        raise fail(web.HTTPUnprocessableEntity, f"ward: unknown ward {wanted.ward!r}")
    token = await app[IO].call(app[STORE].issue_token, wanted.ward, wanted.host)
    token_id = token.split(".")[0].removeprefix("wrt_")
    log.info("admin %s issued token %s for %s/%s", admin.name, token_id, wanted.ward,
             wanted.host)
    return web.json_response({"id": token_id, "token": token, "ward": wanted.ward,
                              "host": wanted.host}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    admin = await authenticate(request, "admin")
    app, token_id = request.app, request.match_info["token_id"]
    if not await app[IO].call(app[STORE].revoke_token, token_id):
        raise fail(web.HTTPNotFound, f"no active token with id {token_id!r}")
    log.info("admin %s revoked token %s", admin.name, token_id)
    return web.Response(status=204)


def _epoch(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise fail(web.HTTPBadRequest,
                   f"{name}: expected seconds since the epoch, got {raw[:40]!r}")
    return value


def _ward(request: web.Request) -> str | None:
    ward = request.query.get("ward")
    if ward is not None and request.app[INVENTORY].ward(ward) is None:
        raise fail(web.HTTPNotFound, f"ward: unknown ward {ward[:64]!r}")
    return ward


async def list_assets(request: web.Request) -> web.Response:
    """GET /api/v1/assets?ward=&host=&kind=&removed=1: items with first and last seen."""
    await authenticate(request, "admin")
    app = request.app
    rows = await app[IO].call(app[STORE].assets, _ward(request), request.query.get("host"),
                              request.query.get("kind"), request.query.get("removed") == "1",
                              assets.MAX_ROWS + 1)
    return web.json_response({"assets": rows[:assets.MAX_ROWS],
                              "truncated": len(rows) > assets.MAX_ROWS})


async def list_changes(request: web.Request) -> web.Response:
    """GET /api/v1/assets/changes?ward=&host=&kind=&since=&until=: the change log, oldest
    first; `since` defaults to a week ago."""
    await authenticate(request, "admin")
    now = time.time()
    since = _epoch(request, "since", now - assets.DEFAULT_WINDOW_SECONDS)
    until = _epoch(request, "until", now + 86400)
    app = request.app
    rows = await app[IO].call(app[STORE].asset_changes, _ward(request),
                              request.query.get("host"), request.query.get("kind"),
                              since, until, assets.MAX_ROWS + 1)
    for row in rows:
        for side in ("before", "after"):
            row[side] = json.loads(row[side]) if row[side] else None
    return web.json_response({"since": since, "until": until, "changes": rows[:assets.MAX_ROWS],
                              "truncated": len(rows) > assets.MAX_ROWS})


async def ward_readiness(request: web.Request) -> web.Response:
    """GET /api/v1/readiness?ward=: each ward's verdict, its criteria and its PCs' own."""
    await authenticate(request, "admin")
    app, ward = request.app, _ward(request)
    fleet = app[FLEET]
    fleet.active = await app[IO].call(app[STORE].active_agents)
    hosts = readiness.counted(fleet.agents, fleet.active, time.time(),
                              app[CONFIG].readiness_max_age_seconds)
    verdicts = readiness.wards(app[INVENTORY], hosts)
    now = time.time()
    points = await app[IO].call(app[STORE].port_error_points, now - PORT_ERRORS_WINDOW_SECONDS)
    return web.json_response({w: {**v.as_dict(), "segments": [
        f.as_dict() for f in readiness.segment_findings(
            app[INVENTORY], w, hosts.get(w, {}), crc_per_day(points, w, now))]}
        for w, v in verdicts.items() if ward is None or w == ward})


async def equipment_list(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/equipment-list?format=csv|xlsx|markdown|json|pdf&working_group=&lang=en|vi:
    what each ward must buy, as a file to download, in the language asked (else the
    server's)."""
    from wardready.server.equipment_formats import FORMATS, renderer
    from wardready.server.proposal import ProposalError

    await authenticate(request, "admin")
    app, inventory = request.app, request.app[INVENTORY]
    name = request.query.get("format", "json")
    if name not in FORMATS:
        raise fail(web.HTTPBadRequest, f"unknown format {name!r} (one of: {', '.join(FORMATS)})")
    lang = app[CONFIG].language or i18n.language()
    if "lang" in request.query:
        try:
            lang = i18n.parse_language(request.query["lang"], "lang")
        except ValueError:  # the value is the client's: not echoed
            raise fail(web.HTTPBadRequest, "lang: unknown language; expected one of "
                       + ", ".join(i18n.LANGUAGES)) from None
    group = request.query.get("working_group")
    groups = [g.id for g in inventory.working_groups]
    if group is not None and group not in groups:
        raise fail(web.HTTPNotFound, f"unknown working group {group!r} (the inventory's: "
                                     f"{', '.join(groups)})")
    fleet, now = app[FLEET], time.time()
    fleet.active = await app[IO].call(app[STORE].active_agents)
    points = await app[IO].call(app[STORE].ward_link_points, now - criteria.HISTORY_SECONDS)
    with i18n.using(lang):  # the reasons are written as the list is built
        found = equipment.build(inventory, equipment.Evidence(fleet.agents, fleet.active,
                                                              points),
                                now, app[CONFIG].readiness_max_age_seconds)
        if group is not None:
            found = found.only(group)
        content_type, extension, _ = FORMATS[name]
        try:  # the thread runs in a copy of this context: in `lang` too
            body = await asyncio.to_thread(renderer(name, app[CONFIG]), found, app[CONFIG].zone)
        except ProposalError as exc:
            raise fail(web.HTTPInternalServerError, str(exc)) from None
    stamp = time.strftime("%Y-%m-%d", time.localtime(now))
    filename = f"equipment-list-{group + '-' if group else ''}{stamp}.{extension}"
    return web.Response(body=body.encode() if isinstance(body, str) else body,
                        headers={"Content-Type": content_type,
                                 "Content-Language": lang,
                                 "Content-Disposition": f'attachment; filename="{filename}"'})
