"""Who may do what: agent and admin tokens, revocation, and secrets kept out of logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import fleet, stack
from tests.test_server import Client, MakeClient, auth, report
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.store import Store


@pytest.fixture
async def admin_setup(aiohttp_client: MakeClient, tmp_path: Path) -> tuple[Client, str, str]:
    from tests.conftest import DATA
    from wardready.server.config import ServerConfig
    config = ServerConfig(database=tmp_path / "w.db", inventory=DATA / "inventory-small.yml")
    store = Store(config.database)
    admin, agent = store.issue_admin_token("ops"), store.issue_token("sai-gon", "counter-01")
    store.close()
    client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))
    return client, admin, agent


async def test_admin_endpoints_need_an_admin_token(admin_setup: tuple[Client, str, str]) -> None:
    client, admin, agent = admin_setup
    assert (await client.get("/admin/v1/tokens")).status == 401
    resp = await client.get("/admin/v1/tokens", headers=auth(agent))
    assert resp.status == 403
    assert (await resp.json())["error"] == "this endpoint needs an admin token"
    resp = await client.post("/api/v1/reports", json=report(), headers=auth(admin))
    assert resp.status == 403
    assert (await resp.json())["error"] == "this endpoint needs an agent token"


async def test_admin_issues_lists_and_revokes_agent_tokens(
        admin_setup: tuple[Client, str, str]) -> None:
    client, admin, _ = admin_setup
    resp = await client.post("/admin/v1/tokens", json={"ward": "nha-be", "host": "pc-9"},
                             headers=auth(admin))
    assert resp.status == 201
    issued = await resp.json()
    ok = await client.post("/api/v1/reports", json=report("nha-be", "pc-9"),
                           headers=auth(issued["token"]))
    assert ok.status == 201
    listed = await (await client.get("/admin/v1/tokens", headers=auth(admin))).json()
    assert {"nha-be", "sai-gon", None} == {row["ward"] for row in listed}
    assert all("secret" not in str(row) and issued["token"] not in str(row) for row in listed)
    resp = await client.delete(f"/admin/v1/tokens/{issued['id']}", headers=auth(admin))
    assert resp.status == 204
    again = await client.post("/api/v1/reports", json=report("nha-be", "pc-9"),
                              headers=auth(issued["token"]))
    assert again.status == 401
    assert (await client.delete(f"/admin/v1/tokens/{issued['id']}",
                                headers=auth(admin))).status == 404
    bad = await client.post("/admin/v1/tokens", json={"ward": "atlantis", "host": "pc-1"},
                            headers=auth(admin))
    assert bad.status == 422
    assert (await bad.json())["error"] == "ward: unknown ward 'atlantis'"


def test_tokens_never_appear_in_logs(tmp_path: Path) -> None:
    """Real processes, a good agent and one with a wrong token: no secret in any log."""
    port = stack.free_port()
    config = fleet.write_server_config(tmp_path, port)
    good, revoked = fleet.issue_tokens(config, [("sai-gon", "pc-1"), ("sai-gon", "pc-2")])
    store = Store(tmp_path / "server.db")
    store.revoke_token(revoked.removeprefix("wrt_").split(".")[0])
    store.close()
    wrong = good[:-6] + "XXXXXX"
    server = stack.start_server(config, tmp_path)
    agents = []
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        for name, token in (("pc-1", good), ("pc-2", revoked), ("pc-1", wrong)):
            workdir = tmp_path / f"{name}-{token[-4:]}"
            agent_config = fleet.write_agent_config(
                workdir, f"http://127.0.0.1:{port}", "sai-gon", name, token,
                delivery_backoff_max_seconds=0.5, checks={"host": {"interval_seconds": 0.5}})
            agents.append((stack.start_agent(agent_config, workdir), workdir))
        stack.wait_until("the refused agents to retry", lambda: all(
            "401 unauthorized" in (w / "agent.log").read_text() for _, w in agents[1:]), 20)
        stack.wait_until("the good agent's reports", lambda: len(fleet.stored_ids(
            tmp_path / "server.db")) >= 2, 20)
    finally:
        for agent, _ in agents:
            agent.stop()
        server.stop()
    logs = [tmp_path / "server.log", *(w / "agent.log" for _, w in agents)]
    text = "\n".join(p.read_text() for p in logs)
    assert "invalid or revoked token" in text  # the refusals were logged...
    for token in (good, revoked, wrong):
        secret = token.split(".", 1)[1]
        assert secret[:12] not in text  # ...without any part of any secret
