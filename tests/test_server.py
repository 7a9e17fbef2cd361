"""The server through its real HTTP interface: auth, ingest, idempotence, /metrics."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATA, promtool_check_metrics
from wardready.checks import host
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.config import ServerConfig
from wardready.server.store import Store

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]

HOST_RESULT = host.collect()


def report(ward: str = "sai-gon", host_name: str = "counter-01",
           **overrides: Any) -> dict[str, Any]:
    now = time.time()
    body = {
        "schema_version": 1, "id": str(uuid.uuid4()), "ward": ward, "host": host_name,
        "agent_version": "test", "generated_at": now,
        "outcomes": [{"check": "host", "started_at": now, "duration_seconds": 0.01, "ok": True,
                      "result": HOST_RESULT.model_dump(mode="json")}],
    }
    body.update(overrides)
    return body


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(database=tmp_path / "w.db", inventory=DATA / "inventory-small.yml",
                        max_report_bytes=64 * 1024)


@pytest.fixture
def tokens(config: ServerConfig) -> dict[str, str]:
    store = Store(config.database)
    issued = {"sai-gon": store.issue_token("sai-gon", "counter-01"),
              "nha-be": store.issue_token("nha-be", "counter-01")}
    store.close()
    return issued


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: ServerConfig) -> Client:
    return await aiohttp_client(create_app(config, load_inventory(config.inventory)))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def scrape(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_report_without_or_with_bad_token_is_401(client: Client,
                                                       tokens: dict[str, str]) -> None:
    resp = await client.post("/api/v1/reports", json=report())
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await resp.json())["error"] == "missing bearer token"
    forged = tokens["sai-gon"][:-4] + "AAAA"
    for token in (forged, "wrt_nope", "garbage"):
        resp = await client.post("/api/v1/reports", json=report(), headers=auth(token))
        assert resp.status == 401, token
    assert "wardready_host_memory_total_bytes" not in await scrape(client)


async def test_report_is_stored_once_and_exposed_with_identity_labels(
        client: Client, tokens: dict[str, str], config: ServerConfig) -> None:
    body = report()
    first = await client.post("/api/v1/reports", json=body, headers=auth(tokens["sai-gon"]))
    assert first.status == 201
    assert await first.json() == {"id": body["id"], "stored": True}
    replay = await client.post("/api/v1/reports", json=body, headers=auth(tokens["sai-gon"]))
    assert replay.status == 200
    assert (await replay.json())["stored"] is False

    metrics = await scrape(client)
    assert metrics["wardready_host_memory_total_bytes"] == [
        ({"ward": "sai-gon", "host": "counter-01"}, float(HOST_RESULT.memory_total_bytes))]
    assert metrics["wardready_agent_reports_total"] == [
        ({"ward": "sai-gon", "host": "counter-01"}, 1.0)]
    store = Store(config.database)
    assert store.report_count() == 1
    store.close()


async def test_report_naming_another_ward_is_403_and_changes_nothing(
        client: Client, tokens: dict[str, str]) -> None:
    own = await client.post("/api/v1/reports", json=report("nha-be"),
                            headers=auth(tokens["nha-be"]))
    assert own.status == 201
    before = await scrape(client)
    forged = report("nha-be", outcomes=[{
        "check": "host", "started_at": time.time() + 60, "duration_seconds": 0.01, "ok": True,
        "result": {**HOST_RESULT.model_dump(mode="json"), "memory_total_bytes": 1}}])
    resp = await client.post("/api/v1/reports", json=forged, headers=auth(tokens["sai-gon"]))
    assert resp.status == 403
    assert "this token is for ward 'sai-gon'" in (await resp.json())["error"]
    after = await scrape(client)
    refused = "wardready_server_reports_refused_total"
    assert dict((s[0]["reason"], s[1]) for s in after.pop(refused)) == {
        reason: value + (reason == "forbidden")
        for reason, value in ((s[0]["reason"], s[1]) for s in before.pop(refused))}
    assert after == before  # nothing else: the refusal is counted, and that is all


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"{not json", 400, "body is not JSON"),
    (json.dumps(report(schema_version=2)).encode(), 422,
     "unsupported schema_version 2; this server accepts 1"),
    (json.dumps(report(generated_at="yesterday")).encode(), 422,
     "generated_at: Input should be a valid number"),
    (json.dumps(report(outcomes=[{"check": "teleport", "started_at": 1, "duration_seconds": 1,
                                  "ok": False, "error": "x"}])).encode(), 422,
     "outcomes[0].check: Value error, unknown check 'teleport' (this version knows: "),
    (json.dumps(report(outcomes=[{"check": "host", "started_at": 1, "duration_seconds": 1,
                                  "ok": True, "result": {"os": "Linux"}}])).encode(), 422,
     "outcomes[0].result.os_version: Field required"),
])
async def test_bad_reports_are_refused_with_the_field_at_fault(
        client: Client, tokens: dict[str, str], body: bytes, status: int, error: str) -> None:
    resp = await client.post("/api/v1/reports", data=body, headers=auth(tokens["sai-gon"]))
    assert resp.status == status
    assert (await resp.json())["error"].startswith(error)


async def test_oversized_report_is_413(client: Client, tokens: dict[str, str]) -> None:
    body = json.dumps(report(agent_version="x" * 70_000)).encode()
    resp = await client.post("/api/v1/reports", data=body, headers=auth(tokens["sai-gon"]))
    assert resp.status == 413
    assert (await resp.json())["error"] == "request larger than 65536 bytes"


async def test_revoked_token_is_refused_and_its_series_disappear(
        client: Client, tokens: dict[str, str], config: ServerConfig) -> None:
    assert (await client.post("/api/v1/reports", json=report(),
                              headers=auth(tokens["sai-gon"]))).status == 201
    assert "wardready_host_memory_total_bytes" in await scrape(client)
    store = Store(config.database)
    token_id = tokens["sai-gon"].removeprefix("wrt_").split(".")[0]
    assert store.revoke_token(token_id)
    store.close()
    resp = await client.post("/api/v1/reports", json=report(), headers=auth(tokens["sai-gon"]))
    assert resp.status == 401
    assert "wardready_host_memory_total_bytes" not in await scrape(client)


async def test_metrics_carry_requirements_and_pass_promtool(
        client: Client, tokens: dict[str, str]) -> None:
    await client.post("/api/v1/reports", json=report(), headers=auth(tokens["sai-gon"]))
    metrics = await scrape(client)
    download = metrics["wardready_requirement_download_bytes_per_second"]
    assert ({"ward": "nha-be"}, 50e6 / 8) in download
    assert ({"ward": "sai-gon"}, 4 * 2**30) in metrics["wardready_requirement_host_memory_bytes"]
    info = {labels["ward"]: labels for labels, _ in metrics["wardready_ward_info"]}
    assert info["sai-gon"]["former_district"] == "District 1"
    assert info["sai-gon"]["former_province"] == "Ho Chi Minh City"
    assert info["sai-gon"]["working_group"] == "wg-02"
    body = await (await client.get("/metrics")).read()
    assert promtool_check_metrics(body) == ""


async def test_state_survives_a_restart(aiohttp_client: MakeClient, config: ServerConfig,
                                        tokens: dict[str, str]) -> None:
    inventory = load_inventory(config.inventory)
    first = await aiohttp_client(create_app(config, inventory))
    await first.post("/api/v1/reports", json=report(), headers=auth(tokens["sai-gon"]))
    await first.close()
    second = await aiohttp_client(create_app(config, inventory))
    metrics = await scrape(second)
    assert metrics["wardready_host_cpu_logical_cores"] == [
        ({"ward": "sai-gon", "host": "counter-01"}, float(HOST_RESULT.cpu_logical_cores))]


async def test_two_pcs_of_a_ward_reporting_at_once_leave_the_ward_its_best_link(
        aiohttp_client: MakeClient, config: ServerConfig) -> None:
    """A ward's best link figure is the best of its PCs, whatever order their reports take
    through the store: here a PC on a bad cable (5 % loss) and a clean one arrive together;
    the ward's loss, in the history the request list and rules judge, ends at 0."""
    import asyncio

    from lab import results

    store = Store(config.database)
    room, counter = (store.issue_token("sai-gon", h) for h in ("room-pc", "counter-01"))
    store.close()
    client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))

    def with_loss(host_name: str, loss: float) -> dict[str, Any]:
        body = report(host_name=host_name)
        now = body["generated_at"]
        body["outcomes"].append({"check": "media", "started_at": now, "duration_seconds": 10,
                                 "ok": True, "result": results.udp(
                                     loss=loss).model_dump(mode="json")})
        return body
    # The clean PC first: the lossy one's figures must not overwrite the ward's best.
    clean, lossy = with_loss("counter-01", 0.0), with_loss("room-pc", 0.05)
    posted = await asyncio.gather(
        client.post("/api/v1/reports", json=clean, headers=auth(counter)),
        client.post("/api/v1/reports", json=lossy, headers=auth(room)))
    assert [r.status for r in posted] == [201, 201]
    await client.close()
    with Store(config.database) as store:
        latest = store.ward_link_latest()["sai-gon"]
        assert latest.get("loss") == 0.0, latest


def test_link_figures_recorded_at_one_instant_end_with_the_last_recorded(
        tmp_path: Path) -> None:
    from wardready.model.report import Report

    at = time.time()
    with Store(tmp_path / "w.db") as store:
        for host_name, loss in (("room-pc", 0.05), ("counter-01", 0.0)):
            store.add_report(Report.model_validate(report(host_name=host_name)), at,
                             {"loss": loss})
        assert store.ward_link_points(at - 1)["sai-gon", "loss"] == [(at, 0.05), (at, 0.0)]
        assert store.ward_link_latest()["sai-gon"]["loss"] == 0.0
        assert store.prune_ward_link(at + 1) == 1
        assert store.ward_link_points(at + 1)["sai-gon", "loss"] == [(at, 0.0)]
