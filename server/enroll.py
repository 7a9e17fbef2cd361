"""Enrollment: single-use codes an operator issues, which an agent redeems for its token.

`POST /admin/v1/enrollments` (admin token) issues a code for a ward (and optionally a host);
`POST /api/v1/enroll` (no bearer token: the code is the credential) redeems it once;
`GET /api/v1/whoami` (agent token) tells an agent whom its token names, storing nothing.
Codes are stored only hashed and never logged; failed redeems are bounded per client address.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from wardready.core.errors import EnrollmentRefused, RefusalReason
from wardready.core.inventory import Slug
from wardready.server.auth import authenticate, fail
from wardready.server.bodies import read_json, validated
from wardready.server.context import INVENTORY, IO, STORE

log = logging.getLogger(__name__)

DEFAULT_HOURS = 24.0
MAX_HOURS = 24.0 * 7
"""A code is for one installation visit: a week covers a visit put off, and no more."""
MAX_FAILURES = 10
"""Failed redeems from one address, within FAILURE_WINDOW_SECONDS, before it is locked out."""
FAILURE_WINDOW_SECONDS = 900.0
LOCKOUT_SECONDS = 900.0
MAX_TRACKED_ADDRESSES = 4096
"""Bounds the guard's memory; the oldest address is forgotten first."""

STATUS: dict[RefusalReason, type[web.HTTPException]] = {
    "unknown": web.HTTPUnauthorized,
    "used": web.HTTPGone,
    "expired": web.HTTPGone,
    "ward": web.HTTPConflict,
    "host": web.HTTPConflict,
}


@dataclass
class _Failures:
    count: int
    window_start: float
    locked_until: float = 0.0


class FailureGuard:
    """Counts failed redeems per client address and locks an address out for a while.

    Codes carry 125 random bits, so guessing is hopeless anyway; the lockout also keeps a
    flood of guesses from reaching the database. Behind a reverse proxy every client has the
    proxy's address: then the proxy should limit instead.
    """

    def __init__(self, max_failures: int = MAX_FAILURES,
                 window_seconds: float = FAILURE_WINDOW_SECONDS,
                 lockout_seconds: float = LOCKOUT_SECONDS,
                 max_addresses: int = MAX_TRACKED_ADDRESSES) -> None:
        self.max_failures, self.window, self.lockout = max_failures, window_seconds, lockout_seconds
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()

    def locked_for(self, address: str, now: float) -> float:
        """Seconds until `address` may try again (0 if it may now)."""
        entry = self._by_address.get(address)
        return max(0.0, entry.locked_until - now) if entry else 0.0

    def failed(self, address: str, now: float) -> None:
        """Count a wrong code from `address`; the MAX_FAILURES-th in a window locks it out."""
        entry = self._by_address.get(address)
        if entry is None or now - entry.window_start > self.window:
            entry = _Failures(0, now)
        entry.count += 1
        if entry.count >= self.max_failures:
            entry.locked_until = now + self.lockout
            entry.count, entry.window_start = 0, entry.locked_until
        self._by_address[address] = entry
        self._by_address.move_to_end(address)
        while len(self._by_address) > self.max_addresses:
            self._by_address.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """Forget the address's failures: a technician who mistyped once got it right."""
        self._by_address.pop(address, None)


ENROLL_GUARD = web.AppKey("enroll_guard", FailureGuard)


class EnrollmentRequest(BaseModel):
    """What an operator asks for: a code for a ward, optionally one host, valid `hours`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ward: Slug
    host: Slug | None = None
    hours: float = Field(default=DEFAULT_HOURS, gt=0, le=MAX_HOURS)


class RedeemRequest(BaseModel):
    """What an agent sends: the code, its host name and (optionally) the ward it means."""

    model_config = ConfigDict(extra="forbid", strict=True)
    code: str = Field(max_length=200)
    host: Slug
    ward: Slug | None = None
    """Optional: the ward the technician means, refused (code kept) if the code is for another."""
    role: Slug | None = None
    """Optional: the PC's role, refused (code kept) if the inventory has no such role."""


def setup(app: web.Application) -> None:
    """Give the app its guard against guessed codes."""
    app[ENROLL_GUARD] = FailureGuard()


async def issue_enrollment(request: web.Request) -> web.Response:
    """POST /admin/v1/enrollments {"ward", "host"?, "hours"?}: a code, shown once."""
    admin = await authenticate(request, "admin")
    wanted = validated(EnrollmentRequest, await read_json(request))
    app = request.app
    if app[INVENTORY].ward(wanted.ward) is None:
        raise fail(web.HTTPUnprocessableEntity, f"ward: unknown ward {wanted.ward!r}")
    code, expires_at = await app[IO].call(app[STORE].issue_enrollment, wanted.ward, wanted.host,
                                          wanted.hours)
    code_id = code.split("-")[1]
    log.info("admin %s issued enrollment %s for %s/%s, expires in %g h", admin.name, code_id,
             wanted.ward, wanted.host or "any host", wanted.hours)
    return web.json_response({"id": code_id, "code": code, "ward": wanted.ward,
                              "host": wanted.host, "expires_at": expires_at}, status=201)


async def redeem(request: web.Request) -> web.Response:
    """POST /api/v1/enroll {"code", "host", "ward"?}: the agent token for the code's ward."""
    app, address = request.app, request.remote or "unknown"
    guard = app[ENROLL_GUARD]
    wait = guard.locked_for(address, time.monotonic())
    if wait > 0:
        raise fail(web.HTTPTooManyRequests,
                   f"too many failed enrollment attempts; retry in {wait:.0f} s",
                   **{"Retry-After": f"{wait:.0f}"})
    wanted = validated(RedeemRequest, await read_json(request))
    inventory = app[INVENTORY]
    roles = [r.id for r in inventory.roles]
    if wanted.role is not None and wanted.role not in roles:
        raise fail(web.HTTPBadRequest, f"unknown role {wanted.role!r} (the inventory's roles: "
                                       f"{', '.join(roles) or 'none'})")
    try:
        enrolled = await app[IO].call(app[STORE].redeem_enrollment, wanted.code, wanted.host,
                                      wanted.ward, lambda w: inventory.ward(w) is not None)
    except EnrollmentRefused as exc:
        if exc.reason == "unknown":  # only a wrong code can be a guess
            guard.failed(address, time.monotonic())
        log.warning("enrollment refused for %s (host %s): %s", address, wanted.host, exc)
        raise fail(STATUS[exc.reason], str(exc)) from None
    guard.succeeded(address)
    token_id = enrolled.token.split(".")[0].removeprefix("wrt_")
    log.info("enrollment %s redeemed by %s: token %s for %s/%s", enrolled.code_id, address,
             token_id, enrolled.ward, enrolled.host)
    return web.json_response({"token": enrolled.token, "ward": enrolled.ward,
                              "host": enrolled.host})


async def whoami(request: web.Request) -> web.Response:
    """GET /api/v1/whoami: the ward and host the agent token names (an authenticated no-op)."""
    identity = await authenticate(request, "agent")
    return web.json_response({"ward": identity.ward, "host": identity.host,
                              "token_id": identity.token_id})
