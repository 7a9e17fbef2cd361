"""Administrator endpoints (admin tokens only): issue, list and revoke agent tokens."""

from __future__ import annotations

import dataclasses
import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from server.auth import authenticate, fail
from server.context import INVENTORY, IO, STORE
from server.handlers import parse_json
from wardready.configfile import dotted
from wardready.inventory import Slug

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
    try:
        wanted = TokenRequest.model_validate(parse_json(await request.read()))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise fail(web.HTTPUnprocessableEntity, f"{dotted(first['loc'])}: {first['msg']}"
                   ) from None
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
