"""Each ward's readiness on the real server: PCs report with their roles, the server rolls
them up, and /metrics, the API and the command line say the same."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lab import city
from lab.results import kit, link, udp
from tests.conftest import DATA, promtool_check_metrics
from wardready.core.inventory import load_inventory
from wardready.model.report import Report
from wardready.server import readiness
from wardready.server.app import create_app
from wardready.server.cli import main as server_main
from wardready.server.config import ServerConfig
from wardready.server.store import AgentState, Store

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]
PCS = {  # (ward, host): (role, what differs from a clean fast PC with the kit)
    ("sai-gon", "room-pc"): ("conference-room", {}),
    ("sai-gon", "counter-01"): ("counter", {"peripherals": kit(0)}),
    ("nha-be", "room-pc"): ("conference-room", {"bandwidth": link(2, 1)}),
    ("nha-be", "counter-01"): ("counter", {"media": udp(reachable=False)}),
}


def report(ward: str, host: str, role: str | None, changes: dict[str, Any]) -> dict[str, Any]:
    return city.pc_report(ward, host, role, changes, agent_version="test")


def values(exposition: str, name: str) -> dict[tuple[str, ...], float]:
    found = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name:
                found[tuple(v for _, v in sorted(s.labels.items()))] = s.value
    return found


async def test_wards_are_rolled_up_from_their_pcs_and_exported(
        aiohttp_client: MakeClient, config: ServerConfig,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(config.database)
    tokens = {key: store.issue_token(*key) for key in PCS}
    admin = store.issue_admin_token("ops")
    store.close()
    client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))
    for (ward, host), (role, changes) in PCS.items():
        resp = await client.post("/api/v1/reports", json=report(ward, host, role, changes),
                                 headers={"Authorization": f"Bearer {tokens[ward, host]}"})
        assert resp.status == 201, await resp.text()

    body = await (await client.get("/metrics")).read()
    assert promtool_check_metrics(body) == ""
    text = body.decode()
    # sai-gon: its conference PC is ready; the counter PC's missing webcam does not matter.
    # nha-be: its conference PC is on a 2 Mbit/s link. No agent reports from the third ward.
    assert values(text, "wardready_ward_readiness") == {
        ("sai-gon",): 0.0, ("nha-be",): 2.0}
    verdict = values(text, "wardready_ward_criterion_verdict")
    assert verdict[("camera", "sai-gon")] == 0.0
    assert verdict[("download", "nha-be")] == 2.0 and verdict[("upload", "nha-be")] == 2.0
    # The counter PC's blocked UDP is that PC's problem, not the ward's call path.
    assert verdict[("udp", "nha-be")] == 0.0
    assert verdict[("hosts", "nha-be")] == 0.0
    assert values(text, "wardready_host_readiness") == {
        ("counter-01", "sai-gon"): 0.0, ("room-pc", "sai-gon"): 0.0,
        ("counter-01", "nha-be"): 2.0, ("room-pc", "nha-be"): 2.0}

    assert values(text, "wardready_host_holds_calls") == {
        ("counter-01", "sai-gon"): 0.0, ("room-pc", "sai-gon"): 1.0,
        ("counter-01", "nha-be"): 0.0, ("room-pc", "nha-be"): 1.0}
    assert values(text, "wardready_host_role_info")[("room-pc", "conference-room", "sai-gon")] == 1

    auth = {"Authorization": f"Bearer {admin}"}
    resp = await client.get("/api/v1/readiness", params={"ward": "nha-be"}, headers=auth)
    assert resp.status == 200
    ward = (await resp.json())["nha-be"]
    assert (ward["state"], ward["video_host"]) == ("not-ready", "room-pc")
    down = next(c for c in ward["criteria"] if c["id"] == "download")
    assert (down["verdict"], down["host"], down["required"]) == ("fail", "room-pc", 50.0)
    assert "at least 50 Mbit/s download" in down["fix"]
    assert set(ward["hosts"]) == {"room-pc", "counter-01"}
    resp = await client.get("/api/v1/readiness", headers={
        "Authorization": f"Bearer {tokens['sai-gon', 'room-pc']}"})
    assert resp.status == 403  # agents do not read other wards' verdicts
    await client.close()

    server_yml = config.database.parent / "server.yml"
    server_yml.write_text(f"database: {config.database}\ninventory: {config.inventory}\n")
    assert server_main(["readiness", "--config", str(server_yml)]) == 0
    table = capsys.readouterr().out.splitlines()
    # Columns: id, the unit's name, group, state, PCs, what falls short (by name).
    rows = {line.split()[0]: re.split(r"\s{2,}", line) for line in table[1:]}
    assert rows["sai-gon"][1:5] == ["Phường Sài Gòn", "wg-02", "ready", "2"]
    assert rows["nha-be"][1:] == ["Xã Nhà Bè", "wg-01", "not-ready", "2",
                                  "video-ready PCs, download, upload"]
    assert server_main(["readiness", "--config", str(server_yml), "--ward", "nha-be"]) == 0
    detail = capsys.readouterr().out
    assert "Xã Nhà Bè (nha-be): NOT-READY" in detail
    assert "fix: ask the provider for at least 50 Mbit/s download" in detail


def test_a_pc_silent_too_long_or_revoked_no_longer_counts() -> None:
    def state(last: float, role: str) -> AgentState:
        s = AgentState(last_report_at=last)
        s.apply(Report.model_validate(report("sai-gon", "x", role, {})), last)
        return s
    now = time.time()
    agents = {("sai-gon", "room-pc"): state(now - 2 * 86400, "conference-room"),
              ("sai-gon", "counter-01"): state(now - 60, "counter"),
              ("sai-gon", "counter-02"): state(now - 60, "counter")}
    active = {("sai-gon", "room-pc"), ("sai-gon", "counter-01")}
    hosts = readiness.counted(agents, active, now, max_age=86400)
    assert list(hosts) == ["sai-gon"] and set(hosts["sai-gon"]) == {"counter-01"}
    assert hosts["sai-gon"]["counter-01"].role == "counter"
    verdict = readiness.wards(load_inventory(DATA / "inventory-small.yml"), hosts)
    # Without its conference PC the ward's video readiness is unknown, not ready; one PC
    # of the two the profile requires is short.
    by_id = {c.id: c.verdict for c in verdict["sai-gon"].criteria}
    assert (by_id["video_hosts"], by_id["hosts"]) == ("unknown", "fail")
    assert verdict["nha-be"].state == "unknown"


def test_the_role_survives_a_server_restart(config: ServerConfig) -> None:
    store = Store(config.database)
    store.issue_token("sai-gon", "room-pc")
    store.add_report(Report.model_validate(report("sai-gon", "room-pc", "conference-room", {})),
                     time.time())
    store.close()
    store = Store(config.database)
    state = store.agent_states()["sai-gon", "room-pc"]
    assert (state.role, state.agent_version) == ("conference-room", "test")
    store.close()


def test_a_database_from_before_roles_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("CREATE TABLE agents (ward TEXT NOT NULL, host TEXT NOT NULL, last_report_at"
               " REAL NOT NULL, reports_total INTEGER NOT NULL, dropped_reports_total INTEGER"
               " NOT NULL DEFAULT 0, clock_offset_seconds REAL, PRIMARY KEY (ward, host))")
    db.execute("INSERT INTO agents VALUES ('sai-gon', 'pc-1', 1.0, 3, 0, NULL)")
    db.commit()
    db.close()
    store = Store(tmp_path / "old.db")
    states = store.agent_states()
    store.close()
    assert states["sai-gon", "pc-1"].reports_total == 3
    assert states["sai-gon", "pc-1"].role is None
    assert states["sai-gon", "pc-1"].agent_version is None
