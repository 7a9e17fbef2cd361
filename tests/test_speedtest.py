"""The throughput test: the server's slots and caps, and the bandwidth check against it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lab import fleet
from tests.conftest import DATA, exposition, promtool_check_metrics
from tests.test_server import Client, MakeClient, auth
from wardready.checks import bandwidth
from wardready.checks.base import Context, ServerLink
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.config import ServerConfig, SpeedtestConfig
from wardready.server.store import Store

AGENTS = [("sai-gon", "pc-1"), ("sai-gon", "pc-2"), ("nha-be", "pc-1"), ("ben-thanh", "pc-1")]


async def start(aiohttp_client: MakeClient, tmp_path: Path,
                **caps: float) -> tuple[Client, dict[tuple[str, str], str]]:
    config = ServerConfig(database=tmp_path / "w.db", inventory=DATA / "inventory-small.yml",
                          speedtest=SpeedtestConfig(**caps))  # type: ignore[arg-type]
    store = Store(config.database)
    tokens = {agent: store.issue_token(*agent) for agent in AGENTS}
    store.close()
    return await aiohttp_client(create_app(config, load_inventory(config.inventory))), tokens


async def slot(client: Client, token: str) -> tuple[int, dict[str, object], str | None]:
    resp = await client.post("/api/v1/speedtest/slots", headers=auth(token))
    return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_one_test_per_ward_and_a_city_wide_cap(aiohttp_client: MakeClient,
                                                     tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path, max_concurrent_tests=2)
    status, first, _ = await slot(client, tokens["sai-gon", "pc-1"])
    assert status == 201
    # Another machine of the same ward shares the uplink: it must wait.
    status, body, retry = await slot(client, tokens["sai-gon", "pc-2"])
    assert status == 429 and retry is not None and int(retry) >= 1
    assert "ward 'sai-gon' has a test running (host 'pc-1')" in str(body["error"])
    assert (await slot(client, tokens["nha-be", "pc-1"]))[0] == 201
    status, body, _ = await slot(client, tokens["ben-thanh", "pc-1"])  # the city cap
    assert status == 429 and "2 tests are running city-wide" in str(body["error"])
    # Releasing frees the ward for its other machine.
    resp = await client.delete(f"/api/v1/speedtest/slots/{first['slot']}",
                               headers=auth(tokens["sai-gon", "pc-1"]))
    assert resp.status == 204
    assert (await slot(client, tokens["sai-gon", "pc-2"]))[0] == 201
    metrics = fleet.metric_values(await (await client.get("/metrics")).read())
    assert metrics['wardready_server_speedtest_slots_refused_total{reason="ward_busy"}'] == 1
    assert metrics['wardready_server_speedtest_slots_refused_total{reason="city_busy"}'] == 1
    assert metrics["wardready_server_speedtest_active_tests"] == 2


async def test_slots_expire_on_their_own(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path, slot_seconds=0.3)
    assert (await slot(client, tokens["sai-gon", "pc-1"]))[0] == 201
    assert (await slot(client, tokens["sai-gon", "pc-2"]))[0] == 429
    await asyncio.sleep(0.4)  # an agent that crashed mid-test does not block its ward
    assert (await slot(client, tokens["sai-gon", "pc-2"]))[0] == 201


async def test_transfers_need_a_token_and_the_agents_own_live_slot(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    url = "/api/v1/speedtest/download?bytes=1000"
    assert (await client.get(url)).status == 401
    assert (await client.post("/api/v1/speedtest/upload", data=b"x")).status == 401
    assert (await client.get(url, headers=auth(tokens["sai-gon", "pc-1"]))).status == 409
    _, body, _ = await slot(client, tokens["sai-gon", "pc-1"])
    stolen = {**auth(tokens["nha-be", "pc-1"]), "X-Wardready-Slot": str(body["slot"])}
    assert (await client.get(url, headers=stolen)).status == 409
    own = {**auth(tokens["sai-gon", "pc-1"]), "X-Wardready-Slot": str(body["slot"])}
    resp = await client.get(url, headers=own)
    assert resp.status == 200 and len(await resp.read()) == 1000
    bad = await client.get("/api/v1/speedtest/download?bytes=lots", headers=own)
    assert bad.status == 400 and (await bad.json())["error"] == "bytes: not an integer"


async def test_a_slot_cannot_move_more_than_its_byte_budget(aiohttp_client: MakeClient,
                                                            tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path, max_bytes_per_slot=1 << 20)
    _, body, _ = await slot(client, tokens["sai-gon", "pc-1"])
    own = {**auth(tokens["sai-gon", "pc-1"]), "X-Wardready-Slot": str(body["slot"])}
    resp = await client.get(f"/api/v1/speedtest/download?bytes={10 << 20}", headers=own)
    assert len(await resp.read()) == 1 << 20  # asked for 10 MiB, got the 1 MiB budget
    resp = await client.post("/api/v1/speedtest/upload", data=b"x" * 1000, headers=own)
    assert resp.status == 429
    assert (await resp.json())["error"] == "this slot's byte budget is spent"
    metrics = fleet.metric_values(await (await client.get("/metrics")).read())
    assert metrics['wardready_server_speedtest_bytes_total{direction="download"}'] == 1 << 20
    assert metrics['wardready_server_speedtest_bytes_total{direction="upload"}'] == 0


def link(client: Client, token: str) -> Context:
    return Context(server=ServerLink(str(client.make_url("")).rstrip("/"), token))


async def test_bandwidth_check_measures_both_directions_within_budget(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    config = bandwidth.Config(max_bytes=20 << 20, max_seconds=5)
    result = await bandwidth.run(config, link(client, tokens["sai-gon", "pc-1"]))
    assert [d.direction for d in result.directions] == ["download", "upload"]
    for d in result.directions:
        assert d.bytes_per_second > 1e6, d  # loopback is fast
        # Within budget: what one stream had in flight when told to stop, at most, on top.
        assert d.bytes <= config.max_bytes + config.streams * (1 << 20), d
        assert d.seconds <= config.max_seconds + 1, d
        assert d.load_probes >= 1 and d.rtt_under_load_median_seconds is not None
    assert result.idle_rtt_median_seconds is not None
    assert promtool_check_metrics(exposition(bandwidth.METRICS,
                                             bandwidth.samples(result))) == ""
    # The slot was released: another machine of the ward gets one at once.
    assert (await slot(client, tokens["sai-gon", "pc-2"]))[0] == 201


async def test_an_aborted_upload_is_kept_in_the_slots_timeline_and_logs_no_error(
        aiohttp_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    token = tokens["sai-gon", "pc-1"]
    status, granted, _ = await slot(client, token)
    assert status == 201
    headers = {**auth(token), bandwidth.SLOT_HEADER: str(granted["slot"])}
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield bandwidth.CHUNK
        sent.set()
        await asyncio.sleep(3600)  # an agent that stops sending and then aborts

    upload = asyncio.create_task(client.post("/api/v1/speedtest/upload", data=body(),
                                             headers=headers))
    await asyncio.wait_for(sent.wait(), 10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # what the server has read so far
        resp = await client.get(f"/api/v1/speedtest/slots/{granted['slot']}",
                                headers=auth(token))
        state = await resp.json()
        if state["uploaded"] == 8 * len(bandwidth.CHUNK):
            break
        await asyncio.sleep(0.05)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert state["uploaded"] == 8 * len(bandwidth.CHUNK)
    times = [t for t, _ in state["upload_timeline"]]
    totals = [b for _, b in state["upload_timeline"]]
    assert times == sorted(times) and totals == sorted(totals) and totals[0] == 0
    assert totals[-1] <= state["uploaded"]
    await asyncio.sleep(0.2)  # the server notices the abort
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    # Only the slot's holder may read it.
    resp = await client.get(f"/api/v1/speedtest/slots/{granted['slot']}",
                            headers=auth(tokens["sai-gon", "pc-2"]))
    assert resp.status == 404


async def test_machines_of_one_ward_take_turns(aiohttp_client: MakeClient,
                                               tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    config = bandwidth.Config(max_bytes=8 << 20, max_seconds=2, directions=["download"],
                              slot_wait_seconds=30)
    t0 = time.monotonic()
    first, second = await asyncio.gather(
        bandwidth.run(config, link(client, tokens["sai-gon", "pc-1"])),
        bandwidth.run(config, link(client, tokens["sai-gon", "pc-2"])))
    waited = sorted([first.slot_wait_seconds, second.slot_wait_seconds])
    assert waited[0] < 0.5 and waited[1] > 0.2, waited  # one went first, the other waited
    assert time.monotonic() - t0 < 30


async def test_no_slot_within_the_wait_is_a_clear_failure(aiohttp_client: MakeClient,
                                                          tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    assert (await slot(client, tokens["sai-gon", "pc-1"]))[0] == 201
    config = bandwidth.Config(slot_wait_seconds=0.5)
    with pytest.raises(RuntimeError, match=r"no test slot within 0.5 s \(no slot: ward "):
        await bandwidth.run(config, link(client, tokens["sai-gon", "pc-2"]))


def series(rate: float, ramp: float, seconds: float, noise: float = 0.0,
           step: float = 0.05) -> list[tuple[float, int]]:
    """A transfer that ramps linearly up to `rate` over `ramp` seconds, then holds it."""
    import random
    rng = random.Random(1)
    out, total, t = [], 0.0, 0.0
    while t < seconds:
        t += step
        current = rate * min(1.0, t / ramp) if ramp else rate
        total += current * step * (1 + rng.uniform(-noise, noise))
        out.append((t, int(total)))
    return out


@pytest.mark.parametrize(("ramp", "noise"), [(0.0, 0.0), (1.5, 0.0), (3.0, 0.2), (0.5, 0.5)])
def test_estimator_discards_slow_start_and_settles_on_the_steady_rate(ramp: float,
                                                                       noise: float) -> None:
    estimator = bandwidth.RateEstimator(warmup=1.0, min_measure=2.0, tolerance=0.02)
    for t, total in series(2.5e6, ramp, 30, noise):
        estimator.add(t, total)
        if estimator.converged():
            break
    assert estimator.converged()
    assert estimator.estimate() == pytest.approx(2.5e6, rel=0.05)  # the ±5 % target
    assert estimator.warmup_seconds >= 1.0
    assert estimator.times[-1] < ramp + 8  # settles within seconds once the ramp is over


def test_a_slow_link_is_measured_until_enough_bytes_have_passed() -> None:
    # 240 kB/s (2 Mbit/s): two steady seconds would satisfy the time rule, not the byte rule.
    estimator = bandwidth.RateEstimator(warmup=1.0, min_measure=2.0, tolerance=0.02,
                                        min_measure_bytes=1 << 20)
    for t, total in series(240e3, 0.0, 30, 0.0):
        estimator.add(t, total)
        if estimator.converged():
            break
    moved = estimator.totals[-1] - estimator.totals[estimator.start or 0]
    assert moved >= 1 << 20
    assert estimator.measured_seconds == pytest.approx((1 << 20) / 240e3, abs=0.2)
