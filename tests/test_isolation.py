"""Isolated checks run in a child process: their results reach the agent's report and
/metrics as before, their imports never reach the agent, and a hung one is killed whole."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lab import fleet, stack
from tests.conftest import DATA, promtool_check_metrics
from wardready.agent import child
from wardready.agent.agent import run_check
from wardready.checks import REGISTRY
from wardready.checks.base import CheckConfig, CheckSpec, Context, ServerLink

pytestmark = pytest.mark.integration
WARD, HOST = "sai-gon", "iso-pc"
HEAVY = ("aiohttp", "yarl", "multidict", "scapy", "netmiko", "paramiko")
"""Packages an isolated check may import: none may reach the agent's own process."""


def test_the_agent_daemon_loads_no_web_framework_database_engine_or_probe_library() -> None:
    """A guard on the agent's memory that is not a timing: what `wardready-agent run`
    imports (measured cost in docs/benchmarks.md, "Agent memory: where it goes")."""
    out = subprocess.run([sys.executable, "-c", "import sys, wardready.agent.cli, "
                          "wardready.agent.agent; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    unwanted = {*HEAVY, "sqlite3", "ctypes", "pydantic.networks"}
    assert sorted(m for m in loaded if m.split(".")[0] in unwanted or m in unwanted) == []


def test_checks_that_import_heavy_packages_are_the_isolated_ones() -> None:
    assert sorted(n for n, s in REGISTRY.items() if s.isolated) == [
        "bandwidth", "devices", "media", "neighbours"]


def neighbours_from_fixture() -> tuple[CheckSpec, CheckConfig]:
    """The neighbours check reading a recorded ARP table: quick, and it needs no network."""
    spec = REGISTRY["neighbours"]
    return spec, spec.config_model(os="linux", proc_root=str(DATA / "neighbours" / "linux"),
                                   probe_ports=False)


async def test_an_isolated_check_gives_the_same_result_as_in_process() -> None:
    spec, config = neighbours_from_fixture()
    inside = await run_check(spec, config)
    child = await run_check(spec, config, isolate=True)
    assert child.ok and inside.ok, child.error
    assert child.result is not None and inside.result is not None
    timing = {"duration_seconds"}
    assert child.result.model_dump(exclude=timing) == inside.result.model_dump(exclude=timing)
    assert len(child.result.model_dump()["neighbours"]) > 0


async def test_a_failing_isolated_check_reports_the_childs_reason() -> None:
    spec = REGISTRY["bandwidth"]
    outcome = await run_check(spec, spec.config_model(), Context(), isolate=True)
    assert not outcome.ok
    assert outcome.error == ("ValueError: the bandwidth check needs the agent's server "
                             "(server_url)")


async def test_an_isolated_check_answering_too_much_is_stopped_not_read_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec, config = neighbours_from_fixture()
    monkeypatch.setattr(child, "MAX_ANSWER_BYTES", 256)  # the fixture's answer is larger
    outcome = await run_check(spec, config, isolate=True)
    assert not outcome.ok
    assert outcome.error == ("the check's process answered over 256 bytes, more than any "
                             "result; it was stopped")
    await asyncio.sleep(0.1)
    assert [p for p in psutil.Process().children(recursive=True) if child_of_ours(p)] == []


async def test_a_hung_isolated_check_is_killed_at_its_timeout_with_its_children() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts, never answers: the speed test's slot request hangs
    try:
        spec = REGISTRY["bandwidth"]
        server = ServerLink(f"http://127.0.0.1:{silent.getsockname()[1]}", "wrt_a.b")
        t0 = time.monotonic()
        outcome = await run_check(spec, spec.config_model(timeout_seconds=3.0),
                                  Context(server=server), isolate=True)
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert not outcome.ok and outcome.error == "timed out after 3 s"
    assert elapsed < 3.0 + 2.0
    await asyncio.sleep(0.1)
    assert [p for p in psutil.Process().children(recursive=True) if child_of_ours(p)] == []


def imported_by(log: Path) -> set[str]:
    """The modules named in `-X importtime` lines: `import time: self | cumulative | name`."""
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and not line.endswith("imported package"):
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def child_of_ours(process: psutil.Process) -> bool:
    try:
        return "wardready.agent.child" in process.cmdline()
    except psutil.Error:  # gone meanwhile, or a zombie: not running
        return False


@pytest.fixture
def agent_measuring_its_link(tmp_path: Path) -> Iterator[tuple[stack.Process, int]]:
    """A real server and a real agent whose first round runs the speed test and the UDP
    media test against it (short budgets, loopback), beside the host check."""
    port = stack.free_port()
    server_config = fleet.write_server_config(tmp_path, port)
    (token,) = fleet.issue_tokens(server_config, [(WARD, HOST)])
    config = fleet.write_agent_config(tmp_path / "agent", f"http://127.0.0.1:{port}", WARD,
                                      HOST, token, checks={
        "bandwidth": {"enabled": True, "max_seconds": 2, "max_bytes": 8 << 20,
                      "warmup_seconds": 0.2, "min_measure_seconds": 0.5},
        "media": {"enabled": True, "duration_seconds": 1, "receive_grace_seconds": 0.5}})
    server = stack.start_server(server_config, tmp_path)
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        # -X importtime: the agent writes a line to stderr (its log) for every module it
        # imports, as it imports it. Its isolated checks' children do not inherit the flag.
        agent = stack.Process("wardready-agent", [
            sys.executable, "-X", "importtime", stack.executable("wardready-agent"), "run",
            "--config", str(config)], tmp_path / "agent" / "agent.log")
        try:
            yield agent, fleet.agent_port(config)
        finally:
            agent.stop()
    finally:
        server.stop()


def test_the_agent_measures_its_link_without_keeping_what_the_checks_imported(
        agent_measuring_its_link: tuple[stack.Process, int]) -> None:
    agent, port = agent_measuring_its_link

    def measured() -> bytes | None:
        body = stack.http_get(f"http://127.0.0.1:{port}/metrics")
        checks = (b'wardready_agent_check_success{check="media"}',
                  b'wardready_agent_check_success{check="bandwidth"}')  # apart: the plan's
        return body if body and all(c in body for c in checks) else None

    body = stack.wait_until("the first round's media check and the first planned test",
                            measured, 60, agent)
    lines = body.decode().splitlines()
    assert 'wardready_agent_check_success{check="bandwidth"} 1.0' in lines, agent.tail()
    assert 'wardready_agent_check_success{check="media"} 1.0' in lines, agent.tail()
    download = next(float(line.split()[-1]) for line in lines if line.startswith(
        'wardready_bandwidth_bytes_per_second{direction="download"}'))
    assert download > 1e6  # loopback: far above any ward link
    assert promtool_check_metrics(body) == ""
    # Every module the agent process itself ever imported, pure-Python ones included (a
    # memory map shows only compiled extensions); the `import time:` lines are its own.
    imported = imported_by(agent.log)
    assert {"wardready.agent.cli", "wardready.agent.child"} <= imported  # the lines are read
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []
    assert psutil.Process(agent.popen.pid).children() == []  # each child ended with its check
    assert os.path.exists(f"/proc/{agent.popen.pid}")
