"""A PC whose clock is off hears of it before its reports are lost: the server refuses reports
dated more than 5 minutes ahead of its own clock (`CLOCK_AHEAD_SECONDS`), so the agent reads
the server's clock from each answer's `Date` header (RFC 9110) and says how far off it is:
`wardready-agent check` on the spot, the running agent in its log and on /metrics.

The PC's clock is set off for real with libfaketime (Debian `faketime`) preloaded into the
agent's process; the expected offset is the one the test gives libfaketime, never the code's.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import fleet, stack
from tests.conftest import DATA, require_binary
from wardready.core.api import clock_offset_seconds
from wardready.model.report import clock_drift

pytestmark = pytest.mark.integration
WARD, HOST = "sai-gon", "conference-pc"
AHEAD = 7 * 60  # seconds: past the server's 5 minutes


def test_the_three_http_date_forms_of_rfc_9110_are_read() -> None:
    # RFC 9110 section 5.6.7's example, in its three forms (a recipient must accept all):
    # Sun, 06 Nov 1994 08:49:37 GMT is 784111777 s after the epoch (`date -d ... +%s`). The
    # server's clock stood somewhere in that second: half a second past it, on average.
    for form in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                 "Sun Nov  6 08:49:37 1994"):
        assert clock_offset_seconds(form, 784111777 + 420.5) == 420.0, form
    for bad in (None, "", "yesterday", "Sun, 99 Foo 1994 08:49:37 GMT"):
        assert clock_offset_seconds(bad, 784111777) is None, bad


def test_a_clock_is_right_within_150_s_and_its_reports_refused_past_300_s_ahead() -> None:
    # The server's bound is 5 minutes ahead (Kerberos's default skew); the agent speaks up at
    # half of it, either way.
    assert [clock_drift(s) for s in (0, 149, -149, 151, 299, 301, -151, -86400)] == [
        "right", "right", "right", "ahead", "ahead", "refused", "behind", "behind"]


def faketime(offset_seconds: int) -> dict[str, str]:
    """The environment that sets a process's clock `offset_seconds` ahead (libfaketime)."""
    require_binary("faketime")
    libraries = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libraries:
        pytest.skip("libfaketime is not installed (scripts/setup.sh installs faketime)")
    return {"LD_PRELOAD": libraries[0], "FAKETIME": f"{offset_seconds:+d}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    port = stack.free_port()
    config = fleet.write_server_config(tmp_path, port,
                                       inventory=str(DATA / "inventory-small.yml"))
    token, = fleet.issue_tokens(config, [(WARD, HOST)])
    proc = stack.start_server(config, tmp_path)
    stack.wait_until("server", lambda: stack.http_get(f"http://127.0.0.1:{port}/healthz"), 20,
                     proc)
    yield port, token, tmp_path
    proc.stop()


def check(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([stack.executable("wardready-agent"), "check", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_check_says_the_pcs_clock_is_ahead_and_how_to_set_it(
        server: tuple[int, str, Path]) -> None:
    port, token, workdir = server
    config = fleet.write_agent_config(workdir / "agent", f"http://127.0.0.1:{port}", WARD,
                                      HOST, token)
    # A clock set right: the offset is the Date header's rounding (half a second) and the
    # round trip on loopback; no warning.
    right = check(config, {}, "--json")
    # (The trip only adds: a loaded machine may take a while to read the answer.)
    assert -1 < json.loads(right.stdout)["clock_offset_seconds"] < 3, right.stdout
    assert "Clock:" not in check(config, {}).stdout
    # Seven minutes ahead: the offset (within the Date header's half second and the trip),
    # the warning and the fix.
    ahead = check(config, faketime(AHEAD), "--json")
    offset = json.loads(ahead.stdout)["clock_offset_seconds"]
    assert AHEAD - 1 < offset < AHEAD + 3, ahead.stdout + ahead.stderr
    table = check(config, faketime(AHEAD)).stdout
    assert ("Clock: this PC's clock is 7 min ahead of the server's: the server refuses reports "
            "dated over 5 min") in table, table
    assert "timedatectl set-ntp true" in table
    vietnamese = check(config, faketime(AHEAD), "--lang", "vi").stdout
    assert "Đồng hồ: đồng hồ của máy tính này chạy nhanh hơn máy chủ 7 phút" in vietnamese
    # Behind by three hours: its measurements would be dated three hours back.
    behind = check(config, faketime(-3 * 3600)).stdout
    assert "Clock: this PC's clock is 3 h 00 min behind the server's" in behind, behind


def test_the_running_agent_logs_and_exposes_how_far_its_clock_is_off(
        server: tuple[int, str, Path]) -> None:
    port, token, workdir = server
    config = fleet.write_agent_config(workdir / "running", f"http://127.0.0.1:{port}", WARD,
                                      HOST, token)
    agent = stack.start_agent(config, workdir / "running", env=faketime(AHEAD))
    try:
        def offset() -> float | None:
            body = stack.http_get(f"http://127.0.0.1:{fleet.agent_port(config)}/metrics")
            values = fleet.metric_values(body) if body else {}
            return values.get("wardready_agent_clock_offset_seconds")
        seen = stack.wait_until("the agent's clock offset", offset, 60, agent)
        assert AHEAD - 1 < seen < AHEAD + 3
        # The server refused the report for its times (422, for good), and the log says why
        # and what to do, once.
        log = stack.wait_until("the warning", lambda: (
            agent.log.read_text() if "this PC's clock is" in agent.log.read_text() else None),
            30, agent)
        warned = re.findall(r"this PC's clock is (\d+) s ahead of the server's .*: the server "
                            r"refuses reports over 300 s ahead, so they are lost", log)
        assert len(warned) == 1 and AHEAD - 1 <= int(warned[0]) <= AHEAD + 3, log
        assert "server refused report" in log and "ahead of the server's clock" in log
    finally:
        agent.stop()
