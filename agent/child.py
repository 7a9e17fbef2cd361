"""Isolated checks, each run in a short-lived child process.

A check that imports aiohttp, scapy or netmiko would keep tens of MiB resident in the agent
for good after its first run; in a child, that memory goes back to the system when the check
ends, and a check that wedges or crashes takes only its child with it. The child gets the
check's name, config and context as JSON on stdin (never in argv, where the token would show
in the process list) and answers with one JSON object on stdout: `{"result": ...}` or
`{"error": "..."}`. Its log lines go to the agent's stderr, so to the same journal.

    python -m wardready.agent.child < request.json
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from wardready.checks import REGISTRY
from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    DeviceTarget,
    ServerLink,
)
from wardready.checks.base import Target as PlatformTarget
from wardready.core import i18n
from wardready.core.errors import ChildError

log = logging.getLogger(__name__)

LOG_LEVEL_VARIABLE = "WARDREADY_LOG_LEVEL"
LANGUAGE_VARIABLE = "WARDREADY_LANGUAGE"
"""The language the parent speaks, for the texts a check writes (a deferral's reason)."""
MAX_ANSWER_BYTES = 4 << 20
"""A result larger than this is a broken child, not a measurement (results are ~10 KiB)."""


def encode_context(context: Context) -> dict[str, Any]:
    """The context as JSON-ready data (paths as text)."""
    data = dataclasses.asdict(context)
    if context.server is not None and context.server.ca_file is not None:
        data["server"]["ca_file"] = str(context.server.ca_file)
    return data


def decode_context(data: dict[str, Any]) -> Context:
    server = data.get("server")
    return Context(
        server=ServerLink(server["url"], server["token"],
                          Path(server["ca_file"]) if server["ca_file"] else None)
        if server else None,
        platforms=tuple(PlatformTarget(**t) for t in data.get("platforms", ())),
        devices=tuple(DeviceTarget(**d) for d in data.get("devices", ())))


async def run_isolated(spec: CheckSpec, config: CheckConfig, context: Context) -> CheckResult:
    """Run `spec` in a child process and return its validated result. Cancelling (the
    check's timeout, the agent stopping) kills the child and everything it started."""
    request = json.dumps({"check": spec.name, "config": config.model_dump(mode="json"),
                          "context": encode_context(context)}).encode()
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    # A session of its own: a Ctrl-C meant for the agent does not cut its round short, and
    # the child's own children (ssh, ping) are killed with it.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wardready.agent.child", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
        env={**os.environ, LOG_LEVEL_VARIABLE: level, LANGUAGE_VARIABLE: i18n.language()})
    assert child.stdin is not None and child.stdout is not None
    try:
        # The child reads all of its request before it answers, so writing it first cannot
        # stall; the answer is read only up to the limit, so a runaway child costs no memory.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            child.stdin.write(request)
            await child.stdin.drain()
            child.stdin.close()
        out = await _read_at_most(child.stdout, MAX_ANSWER_BYTES + 1)
        if len(out) <= MAX_ANSWER_BYTES:
            await child.wait()
    finally:
        if child.returncode is None:  # cancelled, or over its limit: the whole group goes
            with contextlib.suppress(ProcessLookupError):
                if hasattr(os, "killpg"):
                    os.killpg(child.pid, signal.SIGKILL)
                else:  # Windows: no process groups to signal
                    child.kill()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(child.wait())
    if len(out) > MAX_ANSWER_BYTES:
        raise ChildError(f"the check's process answered over {MAX_ANSWER_BYTES} bytes, "
                         "more than any result; it was stopped")
    try:
        answer = json.loads(out)
    except ValueError:
        code = child.returncode or 0
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise ChildError(f"the check's process {how} without a result") from None
    if "error" in answer:
        raise ChildError(str(answer["error"]))
    return spec.result_model.model_validate(answer["result"])


async def _read_at_most(stream: asyncio.StreamReader, limit: int) -> bytes:
    out = bytearray()
    while len(out) < limit and (chunk := await stream.read(limit - len(out))):
        out += chunk
    return bytes(out)


async def _answer(request: dict[str, Any]) -> dict[str, Any]:
    spec = REGISTRY[request["check"]]
    try:
        config = spec.config_model.model_validate(request["config"], strict=False)
        result = await spec.run(config, decode_context(request["context"]))
    except Exception as exc:  # the parent turns it into the check's failed outcome
        log.exception("check %s failed", spec.name)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"result": result.model_dump(mode="json")}


def main() -> int:
    """Read one request from stdin, run it, write the answer to stdout."""
    logging.basicConfig(level=os.environ.get(LOG_LEVEL_VARIABLE, "INFO"),
                        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: "
                               "%(message)s")
    # Whatever a library prints goes to stderr: stdout carries only the answer.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    lang = os.environ.get(LANGUAGE_VARIABLE, i18n.DEFAULT)
    i18n.set_language(i18n.parse_language(lang, LANGUAGE_VARIABLE))
    answer = asyncio.run(_answer(json.loads(sys.stdin.buffer.read())))
    with os.fdopen(answer_fd, "w") as out:
        out.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
