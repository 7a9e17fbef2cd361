"""Asset history: what the agents counted and what changed, through the real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from wardready.checks import host
from wardready.checks.base import InventoryItem
from wardready.core.inventory import load_inventory
from wardready.server import assets
from wardready.server.app import create_app
from wardready.server.cli import main as server_main
from wardready.server.config import ServerConfig
from wardready.server.store import Store

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]
WEEK = 7 * 86400


def item(item_kind: str, key: str, **facts: str) -> InventoryItem:
    return InventoryItem(item_kind, key, tuple(sorted(facts.items())))


def disk(key: str, model: str, kind: str) -> InventoryItem:
    return item("disk", key, model=model, kind=kind)


def test_diff_names_each_addition_removal_and_change() -> None:
    current = {("disk", "S1"): {"model": "WD Blue", "kind": "hdd"},
               ("disk", "S2"): {"model": "Samsung 870", "kind": "ssd"},
               ("ups", "ups-0"): {"model": "APC"}}
    found = {"disk": [disk("S2", "Samsung 870", "ssd"), disk("S3", "Kingston A400", "ssd")],
             "ups": [item("ups", "ups-0", model="APC Back-UPS")]}
    changes = {(c.change, c.kind, c.key) for c in assets.diff(current, found)}
    assert changes == {("removed", "disk", "S1"), ("added", "disk", "S3"),
                       ("changed", "ups", "ups-0")}


def test_a_kind_that_could_not_be_counted_loses_nothing() -> None:
    current = {("webcam", "046d:0825:A1"): {"name": "C270"}}
    assert assets.diff(current, {}) == []
    assert assets.diff(current, {"printer": []}) == []
    removed = assets.diff(current, {"webcam": []})
    assert [(c.change, c.key) for c in removed] == [("removed", "046d:0825:A1")]


def host_result(disks: list[tuple[str, str]]) -> dict[str, Any]:
    """This machine's real host result, with the physical disks replaced by (serial, model)."""
    real = host.collect().model_dump(mode="json")
    real["physical_disks"] = [
        {"name": f"sd{chr(97 + i)}", "model": model, "serial": serial, "size_bytes": 500 << 30,
         "kind": "ssd", "removable": False} for i, (serial, model) in enumerate(disks)]
    return real


def report(started_at: float, result: dict[str, Any], ok: bool = True) -> dict[str, Any]:
    outcome: dict[str, Any] = {"check": "host", "started_at": started_at,
                               "duration_seconds": 0.01, "ok": ok}
    outcome.update({"result": result} if ok else {"error": "PermissionError: /sys"})
    return {"schema_version": 1, "id": str(uuid.uuid4()), "ward": "sai-gon",
            "host": "counter-01", "agent_version": "test", "generated_at": started_at,
            "outcomes": [outcome]}


@pytest.fixture
def tokens(config: ServerConfig) -> dict[str, str]:
    store = Store(config.database)
    issued = {"agent": store.issue_token("sai-gon", "counter-01"),
              "admin": store.issue_admin_token("ops")}
    store.close()
    return issued


async def test_a_replaced_disk_shows_in_the_change_log_and_as_a_metric(
        aiohttp_client: MakeClient, config: ServerConfig, tokens: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))
    agent = {"Authorization": f"Bearer {tokens['agent']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    now = time.time()
    ten_days_ago, two_days_ago, yesterday = now - 10 * 86400, now - 2 * 86400, now - 86400
    old_disks = [("WD-OLD-1", "WDC WD5000AAKX"), ("S3Z-KEEP", "Samsung SSD 870")]
    new_disks = [("S3Z-KEEP", "Samsung SSD 870"), ("KS-NEW-9", "KINGSTON SA400")]
    for started, result, ok in [(ten_days_ago, host_result(old_disks), True),
                                (two_days_ago, None, False),  # unreadable: nothing removed
                                (yesterday, host_result(new_disks), True)]:
        resp = await client.post("/api/v1/reports", json=report(started, result or {}, ok),
                                 headers=agent)
        assert resp.status == 201, await resp.text()
    # A late replay of an older round is history, not a change back.
    resp = await client.post("/api/v1/reports", json=report(now - 5 * 86400,
                                                            host_result(old_disks)), headers=agent)
    assert resp.status == 201

    resp = await client.get("/api/v1/assets/changes", params={"ward": "sai-gon"}, headers=admin)
    assert resp.status == 200, await resp.text()
    week = [(c["change"], c["kind"], c["key"]) for c in (await resp.json())["changes"]]
    assert week == [("removed", "disk", "WD-OLD-1"), ("added", "disk", "KS-NEW-9")]

    resp = await client.get("/api/v1/assets", params={"ward": "sai-gon", "kind": "disk"},
                            headers=admin)
    present = {a["key"]: a for a in (await resp.json())["assets"]}
    assert set(present) == {"S3Z-KEEP", "KS-NEW-9"}
    assert present["S3Z-KEEP"]["first_seen"] == pytest.approx(ten_days_ago)
    assert present["S3Z-KEEP"]["last_seen"] == pytest.approx(yesterday)

    resp = await client.get("/api/v1/assets/changes",
                            params={"ward": "sai-gon", "since": str(now - 30 * 86400)},
                            headers=admin)
    month = [(c["change"], c["kind"]) for c in (await resp.json())["changes"]]
    assert month.count(("added", "disk")) == 3 and ("added", "host") in month

    metrics = await (await client.get("/metrics")).text()
    assert ('wardready_asset_changes_total{change="removed",host="counter-01",kind="disk",'
            'ward="sai-gon"} 1.0') in _sorted_labels(metrics)
    assert "wardready_asset_last_change_timestamp_seconds" in metrics

    for bad, status in [({"ward": "atlantis"}, 404), ({"since": "last week"}, 400)]:
        resp = await client.get("/api/v1/assets/changes", params=bad, headers=admin)
        assert resp.status == status
        assert list(await resp.json()) == ["error"]
    resp = await client.get("/api/v1/assets/changes", headers=agent)
    assert resp.status == 403

    await client.close()
    assert server_main(["assets", "changes", "--config", str(_config_file(config)),
                        "--ward", "sai-gon"]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "WD-OLD-1" in out and "KS-NEW-9" in out


def _config_file(config: ServerConfig) -> Path:
    path = config.database.parent / "server.yml"
    path.write_text(f"database: {config.database}\ninventory: {config.inventory}\n")
    return path


def _sorted_labels(exposition: str) -> str:
    """The exposition with each sample's labels in name order, to compare lines exactly."""
    from prometheus_client.parser import text_string_to_metric_families

    lines = []
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            lines.append(f"{s.name}{{{labels}}} {s.value!r}")
    return "\n".join(lines)
