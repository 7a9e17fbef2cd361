"""An agent killed with SIGKILL while spooling restarts with an intact spool, losing nothing."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from lab import fleet, stack
from wardready.agent.spool import Spool

pytestmark = pytest.mark.integration


def test_agent_killed_mid_spool_restarts_intact_and_delivers_everything(tmp_path: Path) -> None:
    port = stack.free_port()  # nothing listens here until the end
    server_config = fleet.write_server_config(tmp_path, port)
    (token,) = fleet.issue_tokens(server_config, [("sai-gon", "crash-pc")])
    agent_dir = tmp_path / "agent"
    config = fleet.write_agent_config(
        agent_dir, f"http://127.0.0.1:{port}", "sai-gon", "crash-pc", token,
        delivery_timeout_seconds=1, delivery_backoff_max_seconds=1,
        checks={"host": {"interval_seconds": 0.02}})
    log = agent_dir / "agent.log"
    rng = random.Random(7)
    for kill in range(5):
        before = len(fleet.spooled_ids(log))
        agent = stack.start_agent(config, agent_dir)
        stack.wait_until("reports being spooled", lambda b=before: len(fleet.spooled_ids(log))
                         > b + 20, 30, agent)
        time.sleep(rng.uniform(0, 0.2))
        agent.popen.send_signal(signal.SIGKILL)
        agent.popen.wait()
        spool = Spool(agent_dir / "spool", 1 << 30, 1e9)
        try:
            assert set(fleet.spooled_ids(log)) <= set(spool.ids()), f"lost after kill {kill}"
        finally:
            spool.close()
        assert not list(agent_dir.glob("spool*.corrupt-*"))

    logged = fleet.spooled_ids(log)
    assert len(logged) > 100 and len(set(logged)) == len(logged)
    # The server comes back; a restarted agent with no checks due just drains its spool.
    server = stack.start_server(server_config, tmp_path)
    drain = fleet.write_agent_config(agent_dir, f"http://127.0.0.1:{port}", "sai-gon",
                                     "crash-pc", token, checks={"host": {"enabled": False}})
    agent = stack.start_agent(drain, agent_dir)
    try:
        stack.wait_until("the spool to drain", lambda: (fleet.agent_health(drain) or {})
                         .get("pending") == 0, 60, agent)
    finally:
        agent.stop()
        server.stop()
    stored = fleet.stored_ids(tmp_path / "server.db")
    assert len(stored) == len(set(stored))
    assert set(logged) <= set(stored)
