"""The continuous probe (`checks.probe`): its summary of an interval worked out by hand, its
run against a real server on loopback, the server adding the intervals up into counters and
a histogram, and the agent running it back to back beside its scheduled rounds. On an
emulated lossy link against the kernel's counters: tests/test_probe_netlab.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from lab import fleet
from tests.conftest import exposition, promtool_check_metrics
from wardready.agent import agent as agent_module
from wardready.agent.agent import Agent
from wardready.agent.config import load_agent_config
from wardready.checks import REGISTRY, probe
from wardready.checks.base import CheckConfig, CheckResult, CheckSpec, Context, ServerLink
from wardready.checks.media import Echo
from wardready.core.echo import HEADER, V2_BYTES
from wardready.core.errors import MediaError
from wardready.core.inventory import load_inventory
from wardready.core.metrics import MetricSpec, Totals
from wardready.server.app import create_app
from wardready.server.config import EchoConfig, ServerConfig
from wardready.server.store import Store
from wardready.server.udp_echo import ECHO_SERVICE

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]
MS = 1_000_000
T0 = 10**12
"""A monotonic clock reading, in ns, for crafted send times."""
WARD, HOST = "sai-gon", "counter-01"


@pytest.fixture(autouse=True)
def no_kept_connections() -> Iterator[None]:
    """The probe keeps its server connection between intervals: none outlives a test."""
    yield
    probe.close_connections()


# -- the summary of an interval, on crafted echoes -------------------------------------------

def sent_every_second(n: int) -> list[int]:
    return [T0 + i * 1000 * MS for i in range(n)]


def echo(sent_ns: list[int], seq: int, count: int, rtt_ms: float) -> Echo:
    """The echo of probe `seq`, the server's `count`th, back `rtt_ms` after it was sent."""
    return Echo(seq, sent_ns[seq] + MS, count, sent_ns[seq] + round(rtt_ms * MS))


def six_probes() -> probe.Summary:
    """Six probes a second apart, timeout 2.5 s: 0 back in 4 ms (and a copy made on the way
    back, 1 ms later), 1 in 30 ms, 2 lost, 3 in 120 ms, 4 back after 3 s (late), 5 in
    exactly 10 ms. The server received all but 2."""
    sent = sent_every_second(6)
    echoes = [echo(sent, 0, 1, 4), echo(sent, 0, 1, 5), echo(sent, 1, 2, 30),
              echo(sent, 3, 3, 120), echo(sent, 5, 5, 10), echo(sent, 4, 4, 3000)]
    return probe.summarise(sent, echoes, timeout=2.5, server_unique=5)


def test_an_interval_is_summarised_into_counts_buckets_and_figures() -> None:
    s = six_probes()
    # Answered in time: 0, 1, 3, 5. Lost: 2 (no echo) and 4 (late).
    assert (s.packets_sent, s.packets_received, s.packets_lost, s.packets_late) == (6, 4, 2, 1)
    assert s.loss_ratio == pytest.approx(2 / 6)
    # The server got 5 of 6 (2 lost on the way out); 4 of its 5 echoes came back in time.
    assert s.server_received_packets == 5
    assert s.forward_loss_ratio == pytest.approx(1 / 6)
    assert s.return_loss_ratio == pytest.approx(1 / 5)
    assert (s.duplicate_packets, s.reordered_packets) == (1, 0)
    # Bounds 1, 2.5, 5, 10, 25, 50, 75, 100, 150 ... ms; a bucket holds RTT <= its bound:
    # 4 ms in the 5-ms bucket, 10 ms in the 10-ms one (a bound is inclusive), 30 ms in
    # the 50-ms one, 120 ms in the 150-ms one.
    assert s.rtt_bucket_counts == [0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert s.rtt_sum_seconds == pytest.approx(0.004 + 0.030 + 0.120 + 0.010)
    # Sorted 4, 10, 30, 120 ms: median (10 + 30) / 2; p95 the 4th of 4 (nearest rank).
    assert (s.rtt_min_seconds, s.rtt_median_seconds, s.rtt_p95_seconds, s.rtt_max_seconds) == (
        pytest.approx(0.004), pytest.approx(0.020), pytest.approx(0.120), pytest.approx(0.120))
    # In sending order 4, 30, 120, 10 ms: differences 26, 90, 110 ms.
    assert s.rtt_differences == 3
    assert s.rtt_difference_sum_seconds == pytest.approx(0.226)
    assert s.jitter_seconds == pytest.approx(0.226 / 3)


def test_an_echo_at_the_timeout_counts_one_a_nanosecond_later_is_late() -> None:
    sent = sent_every_second(3)
    s = probe.summarise(sent, [echo(sent, 0, 1, 2500), Echo(1, 0, 2, sent[1] + 2500 * MS + 1)],
                        timeout=2.5)
    assert (s.packets_sent, s.packets_received, s.packets_lost, s.packets_late) == (3, 1, 2, 1)
    assert s.rtt_bucket_counts[-2:] == [1, 0]  # in the 2.5-s bucket, not above it
    assert (s.server_received_packets, s.forward_loss_ratio) == (None, None)
    assert (s.jitter_seconds, s.rtt_differences, s.rtt_difference_sum_seconds) == (None, 0, 0)


def test_an_interval_with_no_echo_is_all_loss_and_no_rtt() -> None:
    s = probe.summarise(sent_every_second(4), [], timeout=2.5, server_unique=0)
    assert (s.packets_lost, s.loss_ratio, s.forward_loss_ratio) == (4, 1.0, 1.0)
    assert sum(s.rtt_bucket_counts) == 0 and s.rtt_median_seconds is None


RUN_FIELDS: dict[str, Any] = {
    "udp_port": 8471, "packet_rate": 1.0, "packet_bytes": HEADER.size,
    "send_late_max_seconds": 0.0, "socket_errors": 0, "socket_error": None}


def result_of(summary: probe.Summary, **run: Any) -> probe.Result:
    return probe.Result(**vars(summary), **{**RUN_FIELDS, "udp_sent_bytes": 0,
                                            "udp_received_bytes": 0, "http_sent_bytes": 0,
                                            "http_received_bytes": 0, **run})


@pytest.mark.parametrize("change", [
    {"packets_lost": 3},  # received + lost != sent
    {"rtt_bucket_counts": (0,) * 15},  # the buckets hold fewer than were received
    {"rtt_bucket_counts": (1, 1, 1, 1)},  # not one count per bound
    {"rtt_bucket_counts": (-1, 0, 2, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0)},
    {"packets_sent": -6, "packets_received": -4, "packets_lost": -2},
    {"packets_late": 3},  # more late than lost
    {"rtt_differences": 7},
])
def test_a_result_whose_counts_do_not_add_up_is_refused(change: dict[str, Any]) -> None:
    """The server adds every result to a PC's counters: a hostile one must not get in."""
    good = result_of(six_probes()).model_dump()
    probe.Result.model_validate(good)
    with pytest.raises(ValidationError):
        probe.Result.model_validate({**good, **change})


def test_config_is_validated() -> None:
    assert probe.Config().packet_bytes == V2_BYTES == HEADER.size + 4 == 48
    with pytest.raises(ValidationError, match="at least one probe"):
        probe.Config(packet_rate=0.01, interval_seconds=10)
    with pytest.raises(ValidationError, match=r"timeout_seconds must be at least 83\.5"):
        probe.Config(interval_seconds=60, timeout_seconds=60)
    with pytest.raises(ValidationError):
        probe.Config(packet_bytes=HEADER.size - 1)


# -- metrics: a histogram in the text format, and totals over intervals ----------------------

def second_interval() -> probe.Summary:
    """Four probes, all back: 20, 20, 60 and 200 ms."""
    sent = sent_every_second(4)
    return probe.summarise(sent, [echo(sent, i, i + 1, ms)
                                  for i, ms in enumerate((20, 20, 60, 200))], timeout=2.5)


def test_histogram_specs_reserve_their_suffixes() -> None:
    MetricSpec("wardready_x_seconds", "h", kind="histogram")
    for bad in ("wardready_x_count", "wardready_x_bucket", "wardready_x_sum"):
        with pytest.raises(ValueError, match="reserved"):
            MetricSpec(bad, "h", kind="histogram")
    with pytest.raises(ValueError, match="reserved"):
        MetricSpec("wardready_x_seconds", "h", ("le",), kind="histogram")


def test_totals_of_two_intervals_are_a_valid_histogram_and_counters() -> None:
    totals = Totals()
    totals.add(probe.counts(result_of(six_probes(), udp_sent_bytes=432, http_sent_bytes=500)))
    totals.add(probe.counts(result_of(second_interval(), udp_sent_bytes=288,
                                      http_sent_bytes=450)))
    body = exposition(probe.TOTALS, totals.samples())
    assert promtool_check_metrics(body) == ""
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert got[("wardready_probe_sent_total", ())] == 6 + 4
    assert got[("wardready_probe_lost_total", ())] == 2 + 0
    assert got[("wardready_probe_late_total", ())] == 1
    # Cumulative: 4, 10, 30, 120 ms from the first; 20, 20, 60, 200 ms from the second.
    buckets = {le: got[("wardready_probe_rtt_seconds_bucket", (("le", le),))]
               for le in ("0.0025", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.15",
                          "0.2", "2.5", "+Inf")}
    assert buckets == {"0.0025": 0, "0.005": 1, "0.01": 2, "0.025": 4, "0.05": 5, "0.075": 6,
                       "0.1": 6, "0.15": 7, "0.2": 8, "2.5": 8, "+Inf": 8}
    assert got[("wardready_probe_rtt_seconds_count", ())] == 8
    assert got[("wardready_probe_rtt_seconds_sum", ())] == pytest.approx(0.164 + 0.300)
    # Jitter over both: (26 + 90 + 110) + (0 + 40 + 140) ms over 3 + 3 pairs.
    assert got[("wardready_probe_rtt_difference_seconds_total", ())] == pytest.approx(0.406)
    assert got[("wardready_probe_rtt_differences_total", ())] == 6
    assert got[("wardready_probe_bytes_total", (("direction", "sent"),
                                                ("protocol", "udp")))] == 432 + 288
    assert got[("wardready_probe_bytes_total", (("direction", "sent"),
                                                ("protocol", "http")))] == 500 + 450


# -- the server adds every PC's intervals up -------------------------------------------------

@pytest.fixture
def token(config: ServerConfig) -> str:
    with Store(config.database) as store:
        return store.issue_token(WARD, HOST)


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: ServerConfig) -> Client:
    return await aiohttp_client(create_app(config, load_inventory(config.inventory)))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def probe_report(result: probe.Result, started_at: float) -> dict[str, Any]:
    return {"schema_version": 1, "id": str(uuid.uuid4()), "ward": WARD, "host": HOST,
            "agent_version": "test", "generated_at": started_at + 60,
            "outcomes": [{"check": "probe", "started_at": started_at, "duration_seconds": 60.0,
                          "ok": True, "result": result.model_dump(mode="json")}]}


async def scrape(client: Client) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]],
                                                 float]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    mine = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items()
                                  if k not in ("ward", "host")))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if f.name.startswith("wardready_probe") and s.labels.get("host") == HOST}
    return text, mine


async def test_the_server_adds_each_interval_to_counters_and_a_histogram(
        client: Client, token: str) -> None:
    now = time.time()
    first = probe_report(result_of(six_probes(), udp_sent_bytes=432), now - 120)
    second = probe_report(result_of(second_interval(), udp_sent_bytes=288), now - 60)
    for report in (first, second, first):  # the first one twice: a replay after a lost reply
        resp = await client.post("/api/v1/reports", json=report, headers=auth(token))
        assert resp.status in (200, 201), await resp.text()
    text, got = await scrape(client)
    assert promtool_check_metrics(text.encode()) == ""
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["wardready_probe_rtt_seconds"] == "histogram"
    assert families["wardready_probe_sent"] == "counter"
    assert 'wardready_probe_rtt_seconds_bucket{ward="sai-gon",host="counter-01",le="0.15"} 7.0' \
        in text
    # Each interval once: the replay was acknowledged, not counted again.
    assert got[("wardready_probe_sent_total", ())] == 10
    assert got[("wardready_probe_lost_total", ())] == 2
    assert got[("wardready_probe_rtt_seconds_count", ())] == 8
    assert got[("wardready_probe_rtt_seconds_bucket", (("le", "+Inf"),))] == 8
    assert got[("wardready_probe_rtt_seconds_bucket", (("le", "0.05"),))] == 5
    assert got[("wardready_probe_rtt_seconds_sum", ())] == pytest.approx(0.464)
    assert got[("wardready_probe_bytes_total", (("direction", "sent"), ("protocol", "udp")))] \
        == 720
    # The latest interval's figures are gauges, as every check's are.
    assert got[("wardready_probe_latest_sent_packets", ())] == 4
    assert got[("wardready_probe_latest_loss_ratio", (("direction", "round_trip"),))] == 0
    assert got[("wardready_probe_latest_rtt_seconds", (("statistic", "median"),))] == \
        pytest.approx(0.040)


# -- the echo: a probe session beside a media session ----------------------------------------

async def test_an_agent_holds_a_probe_session_and_a_media_session_at_once(
        aiohttp_client: MakeClient, config: ServerConfig, token: str) -> None:
    config = config.model_copy(update={"udp_echo": EchoConfig(max_sessions=1,
                                                              max_probe_sessions=1)})
    client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))
    service = client.server.app[ECHO_SERVICE]
    link = ServerLink(str(client.server.make_url("/")).rstrip("/"), token)
    cfg = probe.Config(interval_seconds=0.5, packet_rate=20, probe_timeout_seconds=0.5,
                       timeout_seconds=30)
    before = await probe.run(cfg, Context(server=link))
    media = await client.post("/api/v1/udp-sessions", json={"packets": 5}, headers=auth(token))
    assert media.status == 201  # max_sessions counts media sessions only
    after = await probe.run(cfg, Context(server=link))  # a new probe session, media's lives
    assert service.by_purpose["media"][(WARD, HOST)].key.hex() == (await media.json())["session"]
    assert service.by_purpose["probe"][(WARD, HOST)].unique == after.packets_sent == 10
    assert before.loss_ratio == after.loss_ratio == 0
    seen = await client.get("/api/v1/udp-sessions/current?purpose=probe", headers=auth(token))
    assert (await seen.json())["purpose"] == "probe"
    bad = await client.get("/api/v1/udp-sessions/current?purpose=x", headers=auth(token))
    assert bad.status == 400
    with Store(config.database) as store:
        other = store.issue_token("nha-be", "counter-01")
    full = await client.post("/api/v1/udp-sessions", json={"purpose": "probe"},
                             headers=auth(other))
    assert full.status == 503  # max_probe_sessions=1, held by sai-gon


# -- the check on loopback -------------------------------------------------------------------

async def test_at_one_probe_a_second_the_echo_refuses_none(client: Client, token: str) -> None:
    """The echo's rate cap at 1 probe a second: a bucket of one probe refused about half of
    them, every one that came a little early after one that came a little late."""
    link = ServerLink(str(client.server.make_url("/")).rstrip("/"), token)
    cfg = probe.Config(interval_seconds=4, packet_rate=1, timeout_seconds=30)
    result = await probe.run(cfg, Context(server=link))
    assert (result.packets_sent, result.packets_received) == (4, 4)
    session = client.server.app[ECHO_SERVICE].by_purpose["probe"][(WARD, HOST)]
    assert session.dropped["over_rate"] == 0
    # Its bucket holds 10 probes, however low the rate: a queue that held several and
    # released them together costs nothing either.
    assert session.bucket_size == 10

async def test_on_loopback_nothing_is_lost_and_the_connection_is_kept(
        client: Client, token: str) -> None:
    link = ServerLink(str(client.server.make_url("/")).rstrip("/"), token)
    cfg = probe.Config(interval_seconds=1.0, packet_rate=50, probe_timeout_seconds=1.0,
                       timeout_seconds=30)
    results = [await probe.run(cfg, Context(server=link)) for _ in range(2)]
    for r in results:
        assert (r.packets_sent, r.packets_received, r.server_received_packets) == (50, 50, 50)
        assert r.loss_ratio == r.forward_loss_ratio == r.return_loss_ratio == 0
        assert r.rtt_bucket_counts[-1] == 0 and sum(r.rtt_bucket_counts) == 50
        assert r.rtt_p95_seconds is not None and r.rtt_p95_seconds < 1 / r.packet_rate
        assert r.jitter_seconds is not None and 0 <= r.jitter_seconds <= r.rtt_max_seconds
        # 48-byte probes and echoes (version 2) in 76-byte IPv4 packets.
        assert r.udp_sent_bytes == r.udp_received_bytes == 50 * 76
        assert r.http_sent_bytes > 0 and r.http_received_bytes > 0
        assert r.socket_errors == 0
    # One TCP connection for both intervals' four session requests.
    assert probe._channels[link].connections == 1
    assert client.server.app[ECHO_SERVICE].packets["echoed"] == 100


async def test_the_session_requests_verify_tls_with_the_ca_file(
        aiohttp_server: Callable[..., Awaitable[TestServer]], config: ServerConfig, token: str,
        tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other.pem"))
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    server = await aiohttp_server(create_app(config, load_inventory(config.inventory)),
                                  ssl=server_ssl)
    url = str(server.make_url("/")).rstrip("/")
    assert url.startswith("https://")
    cfg = probe.Config(interval_seconds=0.2, packet_rate=20, timeout_seconds=30)
    result = await probe.run(cfg, Context(server=ServerLink(url, token, tmp_path / "ca.pem")))
    assert result.loss_ratio == 0 and result.http_sent_bytes > 0
    # Closed before the server stops: a TLS server would otherwise wait for the idle
    # client's close_notify, and leave the connection to the garbage collector.
    probe.close_connections()
    with pytest.raises(MediaError, match="CERTIFICATE_VERIFY_FAILED"):
        await probe.run(cfg, Context(server=ServerLink(url, token, tmp_path / "other.pem")))


async def test_the_probe_needs_a_server_and_a_valid_token(client: Client) -> None:
    cfg = probe.Config(interval_seconds=0.5, packet_rate=20, timeout_seconds=30)
    with pytest.raises(MediaError, match="agent's server"):
        await probe.run(cfg, Context())
    link = ServerLink(str(client.server.make_url("/")).rstrip("/"), "wrong")
    with pytest.raises(MediaError, match="HTTP 401"):
        await probe.run(cfg, Context(server=link))


# -- the agent: continuous checks beside the rounds ------------------------------------------

class GateResult(CheckResult):
    run: int


class Gate:
    """A continuous check whose runs end when the test says: each run announces itself on
    `started`, then waits for a release (or raises, if `fail` is set)."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self.release: asyncio.Queue[bool] = asyncio.Queue()
        self.runs = 0

    async def run(self, config: CheckConfig, context: Context) -> GateResult:
        n, self.runs = self.runs, self.runs + 1
        self.started.put_nowait(n)
        if not await self.release.get():
            raise OSError(f"run {n} failed")
        return GateResult(run=n)


def stored_reports(database: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT body FROM reports ORDER BY generated_at").fetchall()
    return [json.loads(body) for (body,) in rows]


def of_check(reports: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in reports if any(o["check"] == name for o in r["outcomes"])]


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait for `condition` (a guard against a hang, not a timing bound)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout:g} s")
        await asyncio.sleep(0.02)


async def next_start(gate: Gate) -> int:
    return await asyncio.wait_for(gate.started.get(), 60)


async def run_agent(agent: Agent) -> asyncio.Task[None]:
    return asyncio.create_task(agent.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def gated_agent(config: Path, token: str, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> Agent:
    """An agent of `config` that also runs `gate` as a continuous check."""
    agent = Agent(load_agent_config(config), token)
    monkeypatch.setitem(REGISTRY, "gate", CheckSpec("gate", CheckConfig, GateResult, gate.run,
                                                    (), lambda r: (), continuous=True))
    agent.checks["gate"] = CheckConfig()
    return agent


async def test_a_continuous_check_runs_back_to_back_beside_the_rounds(
        client: Client, token: str, tmp_path: Path, config: ServerConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    path = fleet.write_agent_config(tmp_path / "agent", str(client.server.make_url("/")),
                                    WARD, HOST, token, checks={"host": {"interval_seconds": 0.5}})
    agent = gated_agent(path, token, gate, monkeypatch)
    task = await run_agent(agent)
    try:
        assert await next_start(gate) == 0
        # While its first run is held, the scheduled rounds go on and are delivered.
        await until(lambda: len(of_check(stored_reports(config.database), "host")) >= 2,
                    "two rounds while the continuous check runs")
        assert of_check(stored_reports(config.database), "gate") == []
        # Each run that ends starts the next at once, and becomes a report of its own.
        for n in range(3):
            gate.release.put_nowait(True)
            assert await next_start(gate) == n + 1
        await until(lambda: len(of_check(stored_reports(config.database), "gate")) == 3,
                    "three continuous reports delivered")
    finally:
        await stop(task)
    gates = of_check(stored_reports(config.database), "gate")
    assert [len(r["outcomes"]) for r in gates] == [1, 1, 1]  # never mixed into a round
    outcomes = [r["outcomes"][0] for r in gates]
    assert [o["result"]["run"] for o in outcomes] == [0, 1, 2]
    for earlier, later in itertools.pairwise(outcomes):  # one after the other
        assert later["started_at"] >= earlier["started_at"] + earlier["duration_seconds"]
    rounds = of_check(stored_reports(config.database), "host")
    assert all([o["check"] for o in r["outcomes"]] == ["host"] for r in rounds)
    body = generate_latest(agent.registry).decode()
    assert 'wardready_agent_check_success{check="gate"} 1.0' in body


async def test_a_failed_continuous_run_is_reported_and_retried_after_a_backoff(
        client: Client, token: str, tmp_path: Path, config: ServerConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate()
    waits: list[int] = []
    monkeypatch.setattr(agent_module, "continuous_backoff", lambda n: waits.append(n) or 0.0)
    path = fleet.write_agent_config(tmp_path / "agent", str(client.server.make_url("/")),
                                    WARD, HOST, token, checks={"host": {"enabled": False}})
    agent = gated_agent(path, token, gate, monkeypatch)
    task = await run_agent(agent)
    try:
        for n, ok in enumerate((False, False, False, True)):
            assert await next_start(gate) == n
            gate.release.put_nowait(ok)
        assert await next_start(gate) == 4
        await until(lambda: len(of_check(stored_reports(config.database), "gate")) == 4,
                    "four continuous reports delivered")
    finally:
        await stop(task)
    outcomes = [r["outcomes"][0] for r in of_check(stored_reports(config.database), "gate")]
    assert [o["ok"] for o in outcomes] == [False, False, False, True]
    assert outcomes[0]["error"] == "OSError: run 0 failed"
    assert waits == [1, 2, 3]  # a backoff after each failure in a row, none after success


def test_the_backoff_doubles_up_to_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module.random, "uniform", lambda low, high: high)
    assert [agent_module.continuous_backoff(n) for n in (1, 2, 3, 6, 7, 10_000)] == [
        5, 10, 20, 160, 300, 300]


async def test_the_agent_runs_the_probe_and_the_server_counts_every_interval(
        client: Client, token: str, tmp_path: Path, config: ServerConfig) -> None:
    interval = {"interval_seconds": 0.5, "packet_rate": 20.0, "probe_timeout_seconds": 0.5,
                "timeout_seconds": 30.0}
    path = fleet.write_agent_config(tmp_path / "agent", str(client.server.make_url("/")),
                                    WARD, HOST, token,
                                    checks={"host": {"enabled": False}, "probe": interval})
    agent = Agent(load_agent_config(path), token)
    task = await run_agent(agent)
    try:
        await until(lambda: len(of_check(stored_reports(config.database), "probe")) >= 3,
                    "three probe intervals delivered")
        body = generate_latest(agent.registry).decode()
    finally:
        await stop(task)
    assert promtool_check_metrics(body.encode()) == ""
    latest = agent.latest["probe"]
    assert latest.ok and isinstance(latest.result, probe.Result)
    assert 'wardready_probe_latest_sent_packets 10.0' in body
    results = [probe.Result.model_validate(r["outcomes"][0]["result"])
               for r in of_check(stored_reports(config.database), "probe")]
    assert all(r.packets_sent == 10 for r in results)
    _, got = await scrape(client)  # every stored interval, added up
    assert got[("wardready_probe_sent_total", ())] == sum(r.packets_sent for r in results)
    assert got[("wardready_probe_lost_total", ())] == sum(r.packets_lost for r in results)
    assert got[("wardready_probe_rtt_seconds_count", ())] == sum(
        r.packets_received for r in results)
    assert got[("wardready_probe_rtt_seconds_sum", ())] == pytest.approx(
        math.fsum(r.rtt_sum_seconds for r in results))
