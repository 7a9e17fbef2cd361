"""Faults on the agent's side, against real processes: a `wardready-agent` process (or, where
the test counts exactly what the agent holds in memory, the agent's own `Agent` in this
process) and a real `wardready-server` process on loopback. Each fault shows as a metric on
the agent's /metrics and a log line, and what is lost is what docs/reliability.md says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

import wardready
from lab import fleet, netlab, stack
from lab.sshpeers import silent_listener
from tests.conftest import DATA, fill_up, tmpfs
from wardready.agent.agent import Agent
from wardready.agent.config import load_agent_config
from wardready.agent.spool import REPORT, Spool
from wardready.model.report import Report
from wardready.server.store import Store

pytestmark = pytest.mark.integration

WARD = "sai-gon"
FAILURES = "wardready_agent_report_delivery_failures_total"
REJECTED = "wardready_agent_reports_rejected_total"
DELIVERED = "wardready_agent_reports_delivered_total"
PENDING = "wardready_agent_reports_pending"
DROPPED = "wardready_agent_dropped_reports_total"
SPOOL_ERRORS = "wardready_agent_spool_write_errors_total"
REASONS = ("dns", "connect", "tls", "timeout", "disconnect", "unauthorized", "server_error",
           "http")
"""The reasons docs/reliability.md lists for a failed delivery."""
UNKNOWN_NAME = "wardready.city.invalid"
"""A name no resolver knows (RFC 6761 reserves .invalid)."""
DEVICE_PASSWORD = "hung-router-login-8b1d"
"""The hung router's login (the session scans every log for it at its end)."""


def agent_metrics(config: Path) -> dict[str, float] | None:
    body = stack.http_get(f"http://127.0.0.1:{fleet.agent_port(config)}/metrics")
    return fleet.metric_values(body) if body else None


def failures(metrics: dict[str, float], reason: str) -> float:
    return metrics.get(f'{FAILURES}{{reason="{reason}"}}', 0.0)


def stored_reports(db: Path, host: str) -> list[dict[str, Any]]:
    """The reports the server stored for `host` of WARD, in the order it stored them."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT body FROM reports WHERE ward = ? AND host = ? ORDER BY rowid",
                            (WARD, host)).fetchall()
    return [json.loads(body) for (body,) in rows]


def stored_ids(db: Path, host: str) -> list[str]:
    return [report["id"] for report in stored_reports(db, host)]


def spool_ids(spool: Path) -> list[str]:
    """The report ids in a spool folder, read off its file names (the agent may be running)."""
    names = sorted(p.name for p in spool.iterdir())
    return [m[3] for name in names if (m := REPORT.match(name))]


def start_server(config: Path, workdir: Path, port: int) -> stack.Process:
    server = stack.start_server(config, workdir)
    stack.wait_until("the server to answer", lambda: stack.http_get(
        f"http://127.0.0.1:{port}/healthz"), 30, server)
    return server


MAX_REPORT_BYTES = 64 << 10
"""The server's limit in the refusal test: its agent's own reports are about 2 KiB."""


def test_reports_refused_for_good_are_dropped_logged_and_counted_and_the_next_is_delivered(
        tmp_path: Path) -> None:
    """Two reports wait in the agent's spool that the server will never take: one dated an
    hour ahead of the server's clock (spooled while the PC's clock was wrong: 422) and one
    larger than the server's `max_report_bytes` (413). The agent drops each after its one
    answer, logs it as refused for good and counts it; its own next report is stored."""
    port, host = stack.free_port(), "refused-pc"
    server_config = fleet.write_server_config(tmp_path, port, max_report_bytes=MAX_REPORT_BYTES)
    (token,) = fleet.issue_tokens(server_config, [(WARD, host)])
    agent_dir = tmp_path / "agent"
    config = fleet.write_agent_config(agent_dir, f"http://127.0.0.1:{port}", WARD, host, token,
                                      delivery_backoff_max_seconds=1,
                                      checks={"host": {"interval_seconds": 600}})
    now = time.time()
    ahead = Report(ward=WARD, host=host, agent_version=wardready.__version__,
                   generated_at=now + 3600, outcomes=[])
    large = Report(ward=WARD, host=host, agent_version=wardready.__version__, generated_at=now,
                   outcomes=[])
    large_body = large.model_dump_json().encode() + b" " * MAX_REPORT_BYTES  # valid JSON
    spool = Spool(agent_dir / "spool", 1 << 30, 86400)
    spool.put(str(ahead.id), ahead.model_dump_json().encode())
    spool.put(str(large.id), large_body)
    spool.close()
    db, log = tmp_path / "server.db", agent_dir / "agent.log"

    server = start_server(server_config, tmp_path, port)
    agent = stack.start_agent(config, agent_dir)
    try:
        metrics = stack.wait_until(
            "both refusals and the agent's own report", lambda: (m := agent_metrics(config))
            and m[REJECTED] == 2 and m[DELIVERED] >= 1 and m[PENDING] == 0 and m, 30, agent)
        own = fleet.spooled_ids(log)
    finally:
        agent.stop()
        server.stop()

    assert own and stored_ids(db, host) == own  # the refused two are not stored
    assert metrics[DELIVERED] == len(own)
    assert all(failures(metrics, reason) == 0 for reason in REASONS)  # not retried: refused
    assert spool_ids(agent_dir / "spool") == []
    lines = log.read_text().splitlines()
    refused_ahead = [line for line in lines if f"server refused report {ahead.id} for good (422)"
                     in line]
    refused_large = [line for line in lines if f"server refused report {large.id} for good (413)"
                     in line]
    assert len(refused_ahead) == 1 and "ahead of the server's clock" in refused_ahead[0]
    assert len(refused_large) == 1
    assert f"request larger than {MAX_REPORT_BYTES} bytes" in refused_large[0]


def test_a_server_that_cannot_store_keeps_nothing_and_gets_the_backlog_in_order_once_it_can(
        tmp_path: Path) -> None:
    """The server's database sits on a disk that fills up: it answers 503 "storage
    unavailable" (Retry-After 5). The agent keeps every report in its spool, counts
    `server_error`, and once the disk has room again replays the backlog oldest first."""
    port, host = stack.free_port(), "storage-pc"
    with tmpfs(tmp_path / "db", "4m") as disk:
        server_and_agent_while_the_disk_fills(tmp_path, disk, port, host)


def server_and_agent_while_the_disk_fills(tmp_path: Path, disk: Path, port: int,
                                          host: str) -> None:
    db = disk / "server.db"
    server_config = fleet.write_server_config(tmp_path, port, database=str(db))
    with Store(db) as store:
        token = store.issue_token(WARD, host)
    agent_dir = tmp_path / "agent"
    config = fleet.write_agent_config(agent_dir, f"http://127.0.0.1:{port}", WARD, host, token,
                                      delivery_backoff_max_seconds=1,
                                      checks={"host": {"interval_seconds": 1}})
    log = agent_dir / "agent.log"
    server = start_server(server_config, tmp_path, port)
    filler = fill_up(disk)
    agent = stack.start_agent(config, agent_dir)
    try:
        stack.wait_until("a refusal for want of storage, with reports waiting",
                         lambda: (m := agent_metrics(config)) and failures(m, "server_error")
                         >= 1 and m[PENDING] >= 3, 30, agent)
        waiting = fleet.spooled_ids(log)
        assert len(waiting) >= 3 and stored_ids(db, host) == []
        assert set(waiting) <= set(spool_ids(agent_dir / "spool"))
        filler.unlink()
        stack.wait_until("the backlog to be stored", lambda: set(waiting)
                         <= set(stored_ids(db, host)), 30, agent)
        metrics = agent_metrics(config)
    finally:
        agent.stop()
        server.stop()

    stored = stored_ids(db, host)
    assert len(stored) == len(set(stored))
    assert [i for i in stored if i in waiting] == waiting  # oldest first
    assert metrics is not None and failures(metrics, "server_error") >= 1
    assert metrics[REJECTED] == 0 and metrics[DELIVERED] >= len(waiting)
    agent_log = log.read_text()
    assert f"report {waiting[0]} not accepted (503 server_error)" in agent_log
    assert "storage unavailable; retry later" in agent_log
    assert "database or disk is full" in server.log.read_text()


async def test_a_full_spool_disk_keeps_the_newest_100_in_memory_and_delivers_them(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """130 rounds while the spool's disk is full and the server is away: the newest 100
    reports are kept in memory, the 30 older ones dropped and counted; a server started
    afterwards receives exactly those 100, oldest first. The agent is this process's own
    `Agent` (what it holds in memory is read exactly); the server is a real process."""
    port, host, rounds, kept = stack.free_port(), "memory-pc", 130, 100
    server_config = fleet.write_server_config(tmp_path, port)
    (token,) = fleet.issue_tokens(server_config, [(WARD, host)])
    config = fleet.write_agent_config(tmp_path / "agent", f"http://127.0.0.1:{port}", WARD,
                                      host, token, spool_path=str(small_disk / "spool"),
                                      delivery_timeout_seconds=2,
                                      delivery_backoff_max_seconds=0.2)
    agent = Agent(load_agent_config(config), token)
    try:
        fill_up(small_disk)
        ids = [str((await agent.run_round(["host"])).id) for _ in range(rounds)]
        held = fleet.metric_values(generate_latest(agent.registry))
        assert caplog.text.count("cannot write report") == rounds
        server = await asyncio.to_thread(start_server, server_config, tmp_path, port)
        delivery = asyncio.create_task(agent.delivery.run())
        try:
            deadline = time.monotonic() + 30
            while agent.delivery.delivered < kept and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            body = await asyncio.to_thread(stack.http_get, f"http://127.0.0.1:{port}/metrics")
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)
            await asyncio.to_thread(server.stop)
    finally:
        agent.close()

    assert held[SPOOL_ERRORS] == rounds
    assert held[PENDING] == kept
    assert held[DROPPED] == rounds - kept
    assert stored_ids(tmp_path / "server.db", host) == ids[rounds - kept:]
    assert agent.delivery.delivered == kept and agent.delivery.pending == 0
    # Each report carries the count dropped before it: the newest, rounds - 1 - kept.
    assert body is not None
    assert fleet.metric_values(body)[f'{DROPPED}{{host="{host}",ward="{WARD}"}}'] == \
        rounds - 1 - kept


def require_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (scripts/setup.sh installs it as root)")


def test_a_server_name_that_does_not_resolve_is_counted_as_dns_and_the_reports_wait(
        tmp_path: Path) -> None:
    """The agent runs in a namespace of its own whose resolv.conf names a resolver that is
    not there (127.0.0.1 inside the namespace), reporting to a name nobody resolves."""
    require_namespaces()
    agent_dir, host = tmp_path / "agent", "dns-pc"
    config = fleet.write_agent_config(agent_dir, f"http://{UNKNOWN_NAME}:8470", WARD, host,
                                      "wrt_dnstest.not-known-to-any-server",
                                      delivery_timeout_seconds=2, delivery_backoff_max_seconds=0.5,
                                      follow_plan=False, checks={"host": {"interval_seconds": 1}})
    log = agent_dir / "agent.log"
    metrics_url = f"http://127.0.0.1:{fleet.agent_port(config)}/metrics"
    with netlab.CutOffHost(resolv_conf="nameserver 127.0.0.1\n") as pc:
        lookup = pc.run(pc.ns, [sys.executable, "-c", "import socket, sys; "
                                "socket.getaddrinfo(sys.argv[1], 8470)", UNKNOWN_NAME],
                        timeout=30)
        assert lookup.returncode != 0 and "socket.gaierror" in lookup.stderr

        def counted() -> dict[str, float] | None:
            try:
                metrics = fleet.metric_values(netlab.fetch(pc, pc.ns, metrics_url))
            except (RuntimeError, subprocess.TimeoutExpired):
                return None  # not listening yet
            return metrics if failures(metrics, "dns") >= 2 and metrics[PENDING] >= 2 else None

        with log.open("ab") as out:
            agent = pc.popen(pc.ns, [stack.executable("wardready-agent"), "run", "--config",
                                     str(config)], stdout=out, stderr=subprocess.STDOUT,
                             cwd=agent_dir)
        metrics = stack.wait_until("dns failures counted", counted, 30)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0

    assert all(failures(metrics, r) == 0 for r in REASONS if r != "dns")
    assert metrics[DELIVERED] == 0 and metrics[REJECTED] == 0
    spooled = fleet.spooled_ids(log)
    assert len(spooled) >= 2 and spool_ids(agent_dir / "spool") == spooled  # all kept
    first = spooled[0]
    assert (f"cannot deliver report {first} to http://{UNKNOWN_NAME}:8470/api/v1/reports (dns)"
            in log.read_text())


def children(pid: int, marker: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and marker in cmdline:
            found.append(int(entry.name))
    return found


CUT_OFF = 5.0
"""The devices check's `timeout_seconds` in the hanging-check test."""


def test_a_check_that_hangs_is_cut_off_at_its_timeout_and_the_round_is_reported(
        tmp_path: Path) -> None:
    """The devices check polls a router that accepts TCP and never answers; once its process
    has connected, the test freezes it (SIGSTOP): a probe wedged where none of its own
    timeouts can fire. The agent cuts it off at `timeout_seconds`, kills its process, and
    the round's report, with the host check's result, reaches the server."""
    port, host = stack.free_port(), "hang-pc"
    server_config = fleet.write_server_config(tmp_path, port)
    (token,) = fleet.issue_tokens(server_config, [(WARD, host)])
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    db = tmp_path / "server.db"
    with silent_listener() as router:
        inventory = (DATA / "inventory-small.yml").read_text()
        assert "address: 10.10.1.1," in inventory
        (agent_dir / "inventory.yml").write_text(inventory.replace(
            "address: 10.10.1.1,", f"address: 127.0.0.1, port: {router.port},"))
        config = fleet.write_agent_config(
            agent_dir, f"http://127.0.0.1:{port}", WARD, host, token, inventory="inventory.yml",
            follow_plan=False, checks={
                "host": {"interval_seconds": 600},
                "devices": {"enabled": True, "interval_seconds": 600, "timeout_seconds": CUT_OFF,
                            "device_timeout_seconds": CUT_OFF - 0.5,
                            "banner_timeout_seconds": CUT_OFF - 1}})
        server = start_server(server_config, tmp_path, port)
        agent = stack.start_agent(config, agent_dir, env={
            "WARDREADY_DEVICE_EDGE_ROUTER_USERNAME": "admin",
            "WARDREADY_DEVICE_EDGE_ROUTER_PASSWORD": DEVICE_PASSWORD})
        try:
            stack.wait_until("the devices check to reach the router", lambda: router.accepted,
                             30, agent, interval=0.02)
            (child,) = children(agent.popen.pid, "wardready.agent.child")
            os.kill(child, signal.SIGSTOP)
            (report,) = stack.wait_until("the round's report", lambda: stored_reports(db, host),
                                         30, agent)
            stack.wait_until("the frozen check's process to be gone",
                             lambda: not Path(f"/proc/{child}").exists(), 10, agent)
        finally:
            agent.stop()
            server.stop()

    outcomes = {o["check"]: o for o in report["outcomes"]}
    assert sorted(outcomes) == ["devices", "host"]
    assert outcomes["host"]["ok"] and outcomes["host"]["result"]["cpu_logical_cores"] >= 1
    hung = outcomes["devices"]
    assert not hung["ok"] and hung["result"] is None
    assert hung["error"] == f"timed out after {CUT_OFF:g} s"
    assert CUT_OFF <= hung["duration_seconds"] < CUT_OFF + 2
