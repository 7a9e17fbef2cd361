"""Faults on the agent's side: each yields a metric and a log line, and nothing is lost."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import DATA, fill_up
from wardready.agent.agent import Agent
from wardready.agent.config import load_agent_config
from wardready.agent.delivery import Delivery
from wardready.agent.spool import Spool
from wardready.core.serial import SerialThread

UNKNOWN_NAME = "wardready.city.invalid"


@pytest.fixture
def no_such_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """A name the resolver answers as a DNS server with no such name would (this machine
    has no resolver to ask)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == UNKNOWN_NAME:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return UNKNOWN_NAME


async def run_delivery(delivery: Delivery, until: Callable[[], bool], timeout: float) -> None:
    task = asyncio.create_task(delivery.run())
    try:
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def make_delivery(tmp_path: Path, url: str, spool_dir: Path | None = None,
                  **kwargs: Any) -> Delivery:
    spool = Spool((spool_dir or tmp_path) / "spool", 1 << 20, 3600)
    return Delivery(url, "wrt_a.b", timeout=0.5, spool=spool, io=SerialThread("t"),
                    backoff_max=0.1, **kwargs)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A stand-in server that accepts every report and remembers it."""
    got: list[bytes] = []

    async def accept(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.json_response({"stored": True}, status=201)

    app = web.Application()
    app.router.add_post("/api/v1/reports", accept)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/")), got
    await server.close()


async def test_dns_failure_is_counted_and_logged_and_the_report_waits(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, no_such_name: str) -> None:
    delivery = make_delivery(tmp_path, f"http://{no_such_name}:8470")
    await delivery.submit("r1", b"{}")
    await run_delivery(delivery, lambda: delivery.failures["dns"] >= 2, 5)
    assert delivery.failures["dns"] >= 2
    assert delivery.pending == 1
    assert "cannot deliver report r1 to http://wardready.city.invalid:8470" in caplog.text
    assert "(dns)" in caplog.text


async def test_a_server_that_accepts_and_never_answers_times_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (kernel backlog), never reads or replies
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        delivery = make_delivery(tmp_path, url)
        await delivery.submit("r1", b"{}")
        await run_delivery(delivery, lambda: delivery.failures["timeout"] >= 1, 5)
    finally:
        silent.close()
    assert delivery.failures["timeout"] >= 1
    assert delivery.pending == 1
    assert "(timeout)" in caplog.text


async def test_reports_spooled_while_away_are_delivered_in_order(
        tmp_path: Path, receiver: tuple[str, list[bytes]]) -> None:
    url, got = receiver
    delivery = make_delivery(tmp_path, url)
    for i in range(5):
        await delivery.submit(f"r{i}", f'{{"n": {i}}}'.encode())
    await run_delivery(delivery, lambda: len(got) == 5, 5)
    assert got == [f'{{"n": {i}}}'.encode() for i in range(5)]
    assert delivery.pending == 0 and delivery.delivered == 5


async def test_a_full_disk_under_the_spool_keeps_reports_in_memory_and_delivers_them(
        tmp_path: Path, small_disk: Path, receiver: tuple[str, list[bytes]],
        caplog: pytest.LogCaptureFixture) -> None:
    url, got = receiver
    delivery = make_delivery(tmp_path, url, spool_dir=small_disk)
    fill_up(small_disk)
    body = b'{"big": "' + b"x" * 200_000 + b'"}'
    await delivery.submit("r1", body)
    assert delivery.spool_errors == 1
    assert "cannot write report r1 to the spool" in caplog.text
    await run_delivery(delivery, lambda: len(got) == 1, 5)
    assert got == [body]
    assert delivery.pending == 0


async def test_a_wall_clock_jump_is_counted_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("agent-small.yml", "inventory-small.yml", "agent.token"):
        shutil.copy(DATA / name, tmp_path)
    agent = Agent(load_agent_config(tmp_path / "agent-small.yml"), "wrt_x.y")
    await agent.run_round(["host"])
    assert agent.clock_jumps == 0
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # an NTP step back by an hour
    await agent.run_round(["host"])
    assert agent.clock_jumps == 1
    assert "wall clock jumped -3600" in caplog.text
    # The check carried on: both rounds produced results.
    assert agent.generated == 2 and agent.latest["host"].ok
    agent.close()



async def test_a_503_with_retry_after_is_heeded_and_the_report_kept(tmp_path: Path) -> None:
    """The server's fault answer (503, `Retry-After: 1`): the agent keeps the report and waits
    at least that long, although its own backoff would retry after 0.1 s."""
    arrivals: list[float] = []

    async def flaky(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return web.json_response({"error": "internal error; retry later"}, status=503,
                                     headers={"Retry-After": "1"})
        return web.json_response({"stored": True}, status=201)

    app = web.Application()
    app.router.add_post("/api/v1/reports", flaky)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        delivery = make_delivery(tmp_path, str(server.make_url("/")))
        await delivery.submit("r1", b"{}")
        # Counted delivered when the server answers; taken off the spool just after.
        await run_delivery(delivery,
                           lambda: delivery.delivered == 1 and delivery.pending == 0, 10)
    finally:
        await server.close()
    assert delivery.failures["server_error"] == 1 and delivery.delivered == 1
    assert arrivals[1] - arrivals[0] >= 1.0
