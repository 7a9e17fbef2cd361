"""Bearer-token authentication and role checks; errors leave as JSON."""

from __future__ import annotations

import hmac
import json
import sqlite3

from aiohttp import web

from wardready.server.context import IO, STORE, TOKENS
from wardready.server.store import Identity, Role


def fail(status: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    """An HTTP error with a JSON body `{"error": message}`."""
    return status(text=json.dumps({"error": message}), content_type="application/json",
                  headers=headers or None)


SCRAPE_TOKEN = web.AppKey("scrape_token", bytes)


def authorize_scrape(request: web.Request) -> None:
    """401 unless the request carries the scrape token, when server.yml sets one."""
    wanted = request.app.get(SCRAPE_TOKEN)
    if wanted is None:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip().encode("utf-8", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, wanted):
        raise fail(web.HTTPUnauthorized, "this server's metrics need its scrape token",
                   **{"WWW-Authenticate": "Bearer"})


async def authenticate(request: web.Request, role: Role) -> Identity:
    """The holder of the request's bearer token: 401 without a valid one, 403 for a token
    of the wrong role (agent tokens cannot administer; admin tokens cannot report)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise fail(web.HTTPUnauthorized, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
    app = request.app
    if not (token.isascii() and token.isprintable()):  # no token of ours; SQLite takes no
        identity = None                                # undecodable bytes
    else:
        try:
            identity = app[TOKENS].authenticate(token)
        except sqlite3.OperationalError:  # busy (see TokenReader): the store's thread waits
            identity = await app[IO].call(app[STORE].authenticate, token)
    if identity is None:
        raise fail(web.HTTPUnauthorized, "invalid or revoked token",
                   **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if identity.role != role:
        raise fail(web.HTTPForbidden, f"this endpoint needs an {role} token")
    return identity
