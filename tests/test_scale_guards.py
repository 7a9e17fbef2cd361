"""Guards on what makes the server scale, counted rather than timed (the timings are in
bench/server_scale.py and docs/benchmarks.md): series per agent, bytes per report, and work
per report or per scrape that must not grow with the size of the fleet."""

from __future__ import annotations

import asyncio
import collections
import gc
import gzip
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lab import city
from tests.conftest import REPO, promtool_check_metrics
from wardready.core.inventory import load_inventory
from wardready.core.serial import SerialThread
from wardready.model.report import Report
from wardready.server.app import create_app
from wardready.server.config import ServerConfig
from wardready.server.context import FLEET, IO, TOKENS, WRITER, Fleet
from wardready.server.exposition import FleetExposition
from wardready.server.handlers import accepts_gzip
from wardready.server.sharding import shard_count, shard_of
from wardready.server.store import Store
from wardready.server.writer import STREAM_SECONDS, ReportWriter

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]

MAX_SERIES_PER_AGENT = 260
"""The conference-room PC, which also polls the ward's router and switch, has the most
(246); a PC at the counter about 177. 39 of each are the continuous probe's (its counters, a
15-bucket RTT histogram and the latest interval's figures). 20,000 PCs at 190 on average is
3.8 million series."""
MAX_REPORT_BYTES = 12 * 1024
"""A full report (every check, the router and switch polled), as JSON."""


def reports(wards: int, kind: city.Shortfall = "ok") -> Iterator[Report]:
    for w in range(wards):
        for pc, role in city.pcs(kind):
            body = city.report("sai-gon", pc, role, kind)
            yield Report.model_validate(dict(body, ward=f"w{w:04d}"))


def samples_by_host(text: bytes) -> collections.Counter[str]:
    hosts: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if "host" in sample.labels:
                hosts[sample.labels["host"]] += 1
    return hosts


def test_series_per_agent_and_bytes_per_report_stay_bounded() -> None:
    inventory = load_inventory(REPO / "inventory.yml")
    fleet = Fleet({}, set())
    worst = 0
    for pc, role in city.pcs("old-network"):  # the kind with the most series
        body = city.report("sai-gon", pc, role, "old-network")
        worst = max(worst, len(json.dumps(body)))
        fleet.apply(Report.model_validate(body), time.time(), {})
    text = FleetExposition(inventory, lambda: fleet.agents, lambda: fleet.active).render(
        time.time())
    per_host = samples_by_host(text)
    assert set(per_host) == {pc for pc, _ in city.pcs("old-network")}
    assert max(per_host.values()) <= MAX_SERIES_PER_AGENT, per_host
    assert worst <= MAX_REPORT_BYTES
    assert promtool_check_metrics(text) == ""


@contextmanager
def counting_calls() -> Iterator[collections.Counter[str]]:
    """Python function calls made meanwhile, by function."""
    calls: collections.Counter[str] = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls[frame.f_code.co_qualname] += 1

    # A collection that happens to fall inside would count its callbacks' calls (other
    # tests' garbage): the count is the server's own work.
    collecting = gc.isenabled()
    gc.disable()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(None)
        if collecting:
            gc.enable()


def ingest_calls(fleet_wards: int) -> int:
    """Calls the server makes in memory to take one more report, in a fleet of that size."""
    fleet = Fleet({}, set())
    for report in reports(fleet_wards):
        fleet.apply(report, time.time(), fleet.ward_link_change(report, time.time()))
    extra = next(reports(1, "thin-link"))
    extra = extra.model_copy(update={"ward": "w0000"})
    with counting_calls() as calls:
        fleet.apply(extra, time.time(), fleet.ward_link_change(extra, time.time()))
    return sum(calls.values())


def test_taking_a_report_costs_the_same_in_a_fleet_a_hundred_times_larger() -> None:
    small, large = ingest_calls(2), ingest_calls(200)
    assert large == small, (small, large)


def twenty_wards() -> tuple[Fleet, list[str], FleetExposition]:
    """The first 20 inventory wards, every PC reported once, and their exposition."""
    inventory = load_inventory(REPO / "inventory.yml")
    fleet = Fleet({}, set())
    wards = [w.id for w in inventory.wards][:20]
    for ward in wards:
        for pc, role in city.pcs("ok"):
            fleet.apply(Report.model_validate(city.report(ward, pc, role, "ok")),
                        time.time(), {})
    return fleet, wards, FleetExposition(inventory, lambda: fleet.agents, lambda: fleet.active)


def test_a_scrape_renders_only_the_agents_and_wards_that_reported_since_the_last() -> None:
    fleet, wards, exposition = twenty_wards()
    first = exposition.render(time.time())
    assert exposition.renders == len(fleet.agents) == 20 * city.PCS
    assert exposition.render(time.time()) == first
    assert exposition.renders == 20 * city.PCS  # nothing reported: nothing rendered again
    body = city.report(wards[3], "counter-02", "counter", "thin-link")
    fleet.apply(Report.model_validate(body), time.time(), {})
    with counting_calls() as calls:
        again = exposition.render(time.time())
    assert exposition.renders == 20 * city.PCS + 1
    assert calls["rollup"] == 1  # one ward's readiness worked out again, not twenty
    assert again != first


async def test_an_unchanged_shard_is_served_again_without_rendering_or_compressing() -> None:
    fleet, wards, exposition = twenty_wards()
    # Rendered ahead of the first scrape (as after start): the scrape renders no agent.
    assert len(exposition.out_of_date()) == len(fleet.agents)
    exposition.render_agents(exposition.out_of_date())
    assert exposition.out_of_date() == [] and exposition.renders == len(fleet.agents)
    now = time.time()
    shards = [(i, 4) for i in range(4)]
    texts = {shard: exposition.render(now, shard) for shard in shards}
    zipped = {shard: await exposition.render_gzip(now, shard) for shard in shards}
    assert exposition.renders == len(fleet.agents)
    assert (exposition.joins, exposition.compressions) == (4, 4)
    assert all(gzip.decompress(zipped[s]) == texts[s] for s in shards)
    with counting_calls() as calls:
        again = {shard: exposition.render(now, shard) for shard in shards}
        zipped_again = {shard: await exposition.render_gzip(now, shard) for shard in shards}
    assert again == texts and zipped_again == zipped  # the same bytes
    assert (exposition.joins, exposition.compressions) == (4, 4)  # nothing joined, compressed
    assert calls["render_samples"] == 0 and calls["rollup"] == 0
    # One PC reports: only its shard is put together and compressed again, with its lines.
    ward = wards[3]
    changed = next(s for s in shards if shard_of(ward, 4) == s[0])
    fleet.apply(Report.model_validate(city.report(ward, "counter-02", "counter", "thin-link")),
                time.time(), {})
    after = {shard: exposition.render(time.time(), shard) for shard in shards}
    assert {s for s in shards if after[s] != texts[s]} == {changed}
    assert gzip.decompress(await exposition.render_gzip(time.time(), changed)) == after[changed]
    assert (exposition.joins, exposition.compressions) == (5, 5)
    assert exposition.renders == len(fleet.agents) + 1


def test_gzip_is_served_only_when_accepted() -> None:
    assert accepts_gzip("gzip") and accepts_gzip("identity, GZIP;q=0.5")
    assert not accepts_gzip("") and not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("br, gzip; q=0.0")


@contextmanager
def counting_statements(store: Store) -> Iterator[list[str]]:
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        store.db.set_trace_callback(None)


def test_storing_a_report_runs_the_same_statements_whatever_the_fleet(tmp_path: Path) -> None:
    counts = []
    for size in (2, 60):
        with Store(tmp_path / f"{size}.db") as store:
            for report in reports(size):
                store.add_report(report, time.time())
            extra = next(reports(1, "thin-link"))
            with counting_statements(store) as statements:
                store.add_report(extra, time.time())
            counts.append(len(statements))
    assert counts[0] == counts[1]


def test_a_scrape_reads_tokens_and_asset_counts_again_only_when_the_database_changed(
        tmp_path: Path) -> None:
    with Store(tmp_path / "w.db") as store:
        token = store.issue_token("w0000", "pc-01")
        active, counts = store.scrape_inputs()
        assert active == {("w0000", "pc-01")}
        with counting_statements(store) as statements:
            again = store.scrape_inputs()
        assert again[0] is active and again[1] is counts
        assert len(statements) == 1  # PRAGMA data_version, nothing read
        store.add_report(next(reports(1)), time.time())  # a change on this connection
        assert store.scrape_inputs()[1] is not counts
        with Store(tmp_path / "w.db") as other:  # `tokens revoke` in another process
            assert other.revoke_token(token.removeprefix("wrt_").split(".")[0])
        assert store.scrape_inputs()[0] == set()


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(database=tmp_path / "w.db", inventory=REPO / "inventory.yml",
                        metrics_agents_per_shard=10)


async def test_shards_split_the_metrics_without_losing_or_repeating_a_series(
        aiohttp_client: MakeClient, config: ServerConfig) -> None:
    inventory = load_inventory(config.inventory)
    wards = [w.id for w in inventory.wards][:8]
    with Store(config.database) as store:
        tokens = {(w, pc): store.issue_token(w, pc) for w in wards for pc, _ in city.pcs("ok")}
    client = await aiohttp_client(create_app(config, inventory))

    async def send(ward: str, pc: str, role: str) -> int:
        resp = await client.post("/api/v1/reports", json=city.report(ward, pc, role, "ok"),
                                 headers={"Authorization": f"Bearer {tokens[ward, pc]}"})
        return resp.status

    # All at once: they share transactions (group commit), and every one is stored.
    statuses = await asyncio.gather(*(send(w, pc, role) for w in wards
                                      for pc, role in city.pcs("ok")))
    assert statuses == [201] * len(tokens)
    app = client.server.app
    assert len(app[FLEET].agents) == len(tokens)
    assert app[WRITER].transactions < len(tokens)

    targets = await (await client.get("/api/v1/metrics-targets")).json()
    count = shard_count(len(tokens), 10)
    assert count == 5 and len(targets) == count
    assert {t["labels"]["__param_shard"] for t in targets} == {str(i) for i in range(count)}
    assert len({t["labels"]["instance"] for t in targets}) == count

    def series(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
        return [(s.name, tuple(sorted(s.labels.items())))
                for family in text_string_to_metric_families(text) for s in family.samples]

    whole = series(await (await client.get("/metrics")).text())
    parts: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for t in targets:
        labels = t["labels"]
        resp = await client.get("/metrics", params={"shard": labels["__param_shard"],
                                                    "shards": labels["__param_shards"]})
        text = await resp.text()
        assert promtool_check_metrics(text.encode()) == ""
        shard_series = series(text)
        # A ward is whole in its shard: its PCs, requirements and verdicts together.
        shard_wards = {dict(labels)["ward"] for _, labels in shard_series
                       if "ward" in dict(labels)}
        assert all(ward in shard_wards for ward, pc in tokens if any(
            dict(labels).get("ward") == ward for _, labels in shard_series))
        parts += shard_series
    assert sorted(parts) == sorted(whole) and len(set(parts)) == len(parts)

    for query in ("shard=5&shards=5", "shard=1", "shard=a&shards=2", "shard=0&shards=2000"):
        resp = await client.get(f"/metrics?{query}")
        assert resp.status == 400
        assert "0 <= shard < shards" in (await resp.json())["error"]


def test_a_fleet_of_one_server_needs_no_shards() -> None:
    assert shard_count(0, 2000) == shard_count(2000, 2000) == 1
    assert shard_count(2001, 2000) == 2 and shard_count(20_000, 2000) == 10


def test_the_exposition_of_an_empty_server_is_valid(tmp_path: Path) -> None:
    inventory = load_inventory(REPO / "inventory.yml")
    text = FleetExposition(inventory, dict, set).render(time.time())
    assert promtool_check_metrics(text) == ""
    assert b"wardready_ward_info{" in text


def test_storing_many_reports_at_once_is_all_or_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "w.db") as store:
        batch = [(r, time.time(), {}) for r in reports(2)]
        unstorable = {"download": object()}  # a figure SQLite cannot bind
        with pytest.raises(sqlite3.Error):
            store.add_reports([*batch[:3], (batch[3][0], time.time(), unstorable),
                               *batch[4:]])
        assert store.db.execute("SELECT count(*) FROM reports").fetchone() == (0,)
        assert store.add_reports(batch + batch[:1]) == [True] * len(batch) + [False]



async def test_a_report_visits_the_stores_thread_only_for_its_commit(
        aiohttp_client: MakeClient, config: ServerConfig) -> None:
    """Tokens are looked up on the event loop (TokenReader): a round trip to the store's
    thread costs a request two thread switches, and the commit is the one it needs."""
    inventory = load_inventory(config.inventory)
    ward = inventory.wards[0].id
    with Store(config.database) as store:
        tokens = {pc: store.issue_token(ward, pc) for pc, _ in city.pcs("ok")}
    client = await aiohttp_client(create_app(config, inventory))
    app = client.server.app
    visits: list[str] = []
    real_call = app[IO].call

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        visits.append(fn.__name__)
        return await real_call(fn, *args)

    app[IO].call = counted  # type: ignore[method-assign]
    for pc, role in city.pcs("ok"):
        resp = await client.post("/api/v1/reports", json=city.report(ward, pc, role, "ok"),
                                 headers={"Authorization": f"Bearer {tokens[pc]}"})
        assert resp.status == 201
    assert visits == ["add_reports"] * app[WRITER].transactions


async def test_a_busy_token_reader_hands_the_lookup_to_the_store(
        aiohttp_client: MakeClient, config: ServerConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = load_inventory(config.inventory)
    ward = inventory.wards[0].id
    with Store(config.database) as store:
        token = store.issue_token(ward, "pc-01")
    client = await aiohttp_client(create_app(config, inventory))

    def busy(token: str) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(client.server.app[TOKENS], "authenticate", busy)
    body = city.report(ward, "pc-01", "counter", "ok")
    ok = await client.post("/api/v1/reports", json=body,
                           headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 201
    refused = await client.post("/api/v1/reports", json=body,
                                headers={"Authorization": f"Bearer {token}x"})
    assert refused.status == 401


async def test_reports_streaming_in_share_commits_and_a_lone_one_waits_for_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = SerialThread("sqlite")
    store = await io.call(Store, tmp_path / "w.db")
    try:
        writer = ReportWriter(store, io)
        # A lone report on an idle server is committed at once: with the delay made far
        # longer than the wait below, waiting for company would time out.
        monkeypatch.setattr("wardready.server.writer.COMMIT_DELAY_SECONDS", 60.0)
        lone = list(reports(1))
        assert await asyncio.wait_for(writer.add(lone[0], time.time(), {}), 10)
        await asyncio.sleep(2 * STREAM_SECONDS)
        assert await asyncio.wait_for(writer.add(lone[1], time.time(), {}), 10)
        assert writer.transactions == 2

        # Reports streaming in faster than the disk commits them, as at 1,000 reports/s: each
        # transaction is written while the next `group` reports arrive. Paced by events, not
        # by the clock: the store's thread holds each commit until they are in the writer's
        # queue, as a slower disk would. Whatever the machine's speed, the writer must then
        # put all the reports that arrived during one commit into the next.
        monkeypatch.setattr("wardready.server.writer.COMMIT_DELAY_SECONDS", 0.02)  # not 60
        stream = list(reports(4))
        group = 4
        loop = asyncio.get_running_loop()
        writing: asyncio.Queue[None] = asyncio.Queue()
        disk_may_go_on, stream_over = threading.Semaphore(0), threading.Event()
        batches: list[list[str]] = []
        commit = store.add_reports

        def slow_disk(batch: list[tuple[Report, float, dict[str, float | None]]]) -> list[bool]:
            batches.append([str(report.id) for report, _, _ in batch])
            if not stream_over.is_set():
                loop.call_soon_threadsafe(writing.put_nowait, None)
                assert disk_may_go_on.acquire(timeout=60), "the stream never came"
            return commit(batch)

        monkeypatch.setattr(store, "add_reports", slow_disk)
        added = [asyncio.create_task(writer.add(stream[0], time.time(), {}))]
        rest = stream[1:]
        while rest:
            await asyncio.wait_for(writing.get(), 60)  # a transaction is being written...
            arriving, rest = rest[:group], rest[group:]
            added += [asyncio.create_task(writer.add(r, time.time(), {})) for r in arriving]
            await asyncio.sleep(0)  # ...and these reach the writer's queue (one loop turn)
            if not rest:
                stream_over.set()
            disk_may_go_on.release()
        stored = await asyncio.wait_for(asyncio.gather(*added), 60)
        assert stored == [True] * len(stream)
        ids = [str(r.id) for r in stream]
        assert batches == [ids[:1], *(ids[i:i + group] for i in range(1, len(ids), group))]
        assert writer.transactions - 2 == len(batches) < len(stream) / 3
        count = await io.call(lambda: store.db.execute("SELECT count(*) FROM reports")
                              .fetchone()[0])
        assert count == len(stream) + 2
    finally:
        await io.call(store.close)
        io.shutdown()
