"""20 agents report every second while the server is SIGKILLed twice and away for a minute:
afterwards the server holds every report every agent generated, each exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from lab import fleet, stack

pytestmark = pytest.mark.integration
AGENTS = 20
OUTAGE_SECONDS = 60


def test_no_report_lost_or_duplicated_across_server_kills_and_an_outage(tmp_path: Path) -> None:
    port = stack.free_port()
    url = f"http://127.0.0.1:{port}"
    server_config = fleet.write_server_config(tmp_path, port)
    names = [("sai-gon" if i % 2 else "nha-be", f"pc-{i:02d}") for i in range(AGENTS)]
    tokens = fleet.issue_tokens(server_config, names)
    dirs = [tmp_path / host for _, host in names]
    configs = [fleet.write_agent_config(
        d, url, ward, host, token, start_jitter_seconds=1, delivery_timeout_seconds=5,
        delivery_backoff_max_seconds=5, checks={"host": {"interval_seconds": 1}})
        for d, (ward, host), token in zip(dirs, names, tokens, strict=True)]

    def start_server() -> stack.Process:
        proc = stack.start_server(server_config, tmp_path)
        stack.wait_until("server", lambda: stack.http_get(f"{url}/healthz"), 20, proc)
        return proc

    def kill(proc: stack.Process) -> None:
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()

    server = start_server()
    agents = [stack.start_agent(c, d) for c, d in zip(configs, dirs, strict=True)]
    try:
        time.sleep(10)
        kill(server)  # 1st kill, back after 3 s
        time.sleep(3)
        server = start_server()
        time.sleep(10)
        kill(server)  # 2nd kill, then unreachable for a minute
        time.sleep(OUTAGE_SECONDS)
        assert all(a.alive() for a in agents), "an agent died while the server was away"
        server = start_server()
        time.sleep(5)
    finally:
        for agent in agents:
            agent.stop()

    # Restart every agent with no checks due: each only drains what it spooled.
    drains = [fleet.write_agent_config(d, url, ward, host, token,
                                       checks={"host": {"enabled": False}})
              for d, (ward, host), token in zip(dirs, names, tokens, strict=True)]
    agents = [stack.start_agent(c, d) for c, d in zip(drains, dirs, strict=True)]
    try:
        for agent, config in zip(agents, drains, strict=True):
            stack.wait_until("spool drained", lambda c=config: (fleet.agent_health(c) or {})
                             .get("pending") == 0, 120, agent)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()

    generated = [i for d in dirs for i in fleet.spooled_ids(d / "agent.log")]
    stored = fleet.stored_ids(tmp_path / "server.db")
    print(f"fault injection: {len(generated)} generated, {len(stored)} stored, "
          f"{len(set(stored))} distinct")
    # Each agent ran ~83 s at one report a second.
    assert len(generated) >= AGENTS * 70
    assert len(stored) == len(set(stored)), "a report was stored twice"
    assert sorted(stored) == sorted(generated), (
        f"{len(set(generated) - set(stored))} generated reports missing on the server, "
        f"{len(set(stored) - set(generated))} stored reports never logged")
