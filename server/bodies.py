"""Request bodies: read within a deadline, plain finite JSON (else 400), then a model (else
422 naming the field)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

import pydantic_core
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from wardready.core.configfile import dotted
from wardready.server.auth import fail
from wardready.server.context import CONFIG

M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request) -> bytes:
    """The whole request body: 408 if it has not arrived within the configured
    `body_timeout_seconds` (a client trickling a body would otherwise hold its connection,
    and a file, for ever), 400 if its content encoding is corrupt."""
    try:
        async with asyncio.timeout(request.app[CONFIG].body_timeout_seconds):
            return await request.read()
    except TimeoutError:
        raise fail(web.HTTPRequestTimeout, "request body not received in time",
                   Connection="close") from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        # e.g. a gzip or deflate body that does not inflate
        cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
        message = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
        # The rest of the body is not read (aiohttp would raise the same error again, and log
        # it whole): the connection closes after the reply.
        request.content.feed_eof()
        raise fail(web.HTTPBadRequest, f"unreadable body: {message.strip()}"[:200],
                   Connection="close") from None


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (`read_body`, then `parse_json`)."""
    return parse_json(await read_body(request))


def parse_json(body: bytes) -> Any:
    """A request body as JSON; 400 for anything that is not plain, finite JSON."""
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)  # twice as fast as json
    except ValueError:
        pass  # the standard library's parser says what is wrong more plainly
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")
    try:
        return json.loads(body, parse_constant=no_constants)
    except RecursionError:
        raise fail(web.HTTPBadRequest, "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(web.HTTPBadRequest, f"body is not JSON ({exc})"[:300]) from None


def validated(model: type[M], payload: Any, whole: str = "body") -> M:
    """`payload` as a `model`; 422 with the first error, `field: message` (`whole: message`
    when the payload itself is wrong, e.g. a list for an object)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise invalid(exc, whole) from None


def invalid(exc: ValidationError, whole: str = "body") -> web.HTTPException:
    """422 naming the first error of a validation, `field: message`."""
    first = exc.errors(include_url=False)[0]
    return fail(web.HTTPUnprocessableEntity, f"{dotted(first['loc']) or whole}: {first['msg']}")
