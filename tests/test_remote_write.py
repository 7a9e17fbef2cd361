"""Remote write on real components: a ward agent cut off from the server keeps measuring;
once it is back, every measurement reaches the store at the time it was taken (Prometheus's
receiver, VictoriaMetrics); a receiver away and a server SIGKILLed lose nothing acknowledged."""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import fleet, stack
from tests.test_server import report
from wardready.model.report import Report
from wardready.server.store import Store

pytestmark = pytest.mark.integration
SERIES = "wardready_host_memory_total_bytes"
"""A series every host outcome carries: one sample per report of the host check."""


class Receiver:
    """A remote-write receiver on loopback and a way to read back raw samples."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir, self.port = kind, workdir, stack.free_port()
        self.process: stack.Process | None = None

    @property
    def write_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def start(self) -> None:
        if self.kind == "prometheus":
            config = self.workdir / "receiver.yml"
            # Samples that come late (an agent's spooled hour) are taken within this window.
            config.write_text(yaml.safe_dump({
                "global": {"scrape_interval": "15s"},
                "storage": {"tsdb": {"out_of_order_time_window": "14d"}}}))
            self.process = stack.start_prometheus(self.workdir, self.port, config,
                                                  receiver=True)
        else:
            self.process = stack.start_victoria_metrics(self.workdir, self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def timestamps(self, selector: str) -> list[int]:
        """Milliseconds of every raw sample of the series `selector` picks, in the store."""
        base = f"http://127.0.0.1:{self.port}"
        if self.kind == "victoria-metrics":
            body = stack.http_get(f"{base}/api/v1/export?"
                                  + urllib.parse.urlencode({"match[]": selector}))
            return sorted(ms for line in (body or b"").splitlines()
                          for ms in json.loads(line)["timestamps"])
        body = stack.http_get(f"{base}/api/v1/query?"
                              + urllib.parse.urlencode({"query": f"{selector}[1d]"}))
        result = json.loads(body or b"{}").get("data", {}).get("result", [])
        return sorted(round(float(t) * 1000) for series in result for t, _ in series["values"])


@pytest.fixture(params=["prometheus", "victoria-metrics"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    found = Receiver(request.param, tmp_path / request.param)
    found.workdir.mkdir()
    yield found
    found.stop()


def stored_started_at(db: Path, ward: str, host: str) -> list[int]:
    """The host outcome's start, in ms, of every report the server stored for this agent."""
    with sqlite3.connect(db) as conn:
        bodies = [json.loads(row[0]) for row in conn.execute(
            "SELECT body FROM reports WHERE ward = ? AND host = ?", (ward, host))]
    return sorted(round(o["started_at"] * 1000) for b in bodies for o in b["outcomes"]
                  if o["check"] == "host" and o["ok"])


def server_figures(port: int) -> dict[str, float]:
    return fleet.metric_values(stack.http_get(f"http://127.0.0.1:{port}/metrics") or b"")


def test_an_agents_outage_reaches_the_store_at_the_original_times(
        tmp_path: Path, receiver: Receiver) -> None:
    receiver.start()
    port = stack.free_port()
    url = f"http://127.0.0.1:{port}"
    server_config = fleet.write_server_config(
        tmp_path, port, remote_write={"url": receiver.write_url, "max_reports_per_request": 7})
    ward, host = "sai-gon", "pc-1"
    (token,) = fleet.issue_tokens(server_config, [(ward, host)])
    agent_dir = tmp_path / "agent"
    agent_config = fleet.write_agent_config(
        agent_dir, url, ward, host, token, delivery_backoff_max_seconds=1,
        checks={"host": {"interval_seconds": 1}})
    # The server is away: the agent measures and spools.
    agent = stack.start_agent(agent_config, agent_dir)
    server = None
    try:
        stack.wait_until("an outage's worth of reports spooled", lambda: len(
            fleet.spooled_ids(agent_dir / "agent.log")) >= 20, 60, agent)
        assert stack.http_get(f"{url}/healthz") is None
        server = stack.start_server(server_config, tmp_path)
        stack.wait_until("the spool drained", lambda: (fleet.agent_health(agent_config) or {})
                         .get("pending") == 0, 60, agent)
        agent.stop()
        spooled = fleet.spooled_ids(agent_dir / "agent.log")
        stored = fleet.stored_ids(tmp_path / "server.db")
        assert sorted(stored) == sorted(spooled)
        measured = stored_started_at(tmp_path / "server.db", ward, host)
        assert len(measured) == len(spooled) >= 20
        stack.wait_until("every report remote-written", lambda: server_figures(port).get(
            "wardready_server_remote_write_reports_total") == len(stored), 60, server)
        selector = f'{SERIES}{{ward="{ward}",host="{host}"}}'
        stack.wait_until("the samples readable", lambda: receiver.timestamps(
            selector) == measured, 30, receiver.process)
        figures = server_figures(port)
        assert figures["wardready_server_remote_write_pending_reports"] == 0
        assert sum(v for k, v in figures.items()
                   if k.startswith("wardready_server_remote_write_dropped_reports_total")) == 0
        # /metrics no longer carries the measurements (they went by remote write) ...
        assert f"{SERIES}{{" not in (stack.http_get(f"{url}/metrics") or b"").decode()
        # ... and the receiver got no sample twice.
        assert len(set(receiver.timestamps(selector))) == len(measured)
    finally:
        agent.stop()
        if server is not None:
            server.stop()




DOWN_SECONDS = 180
"""How long the receiver is away while reports keep arriving (the server is killed midway)."""


def send_reports(port: int, token: str, host: str, acked: list[str], stop: threading.Event
                 ) -> None:
    """Post reports, one every 100 ms (so no two of a host share a millisecond), until
    stopped; record each acknowledged id. A server away is retried."""
    for _ in range(100_000):  # bounded; stopped long before
        if stop.is_set():
            return
        body = report("sai-gon", host)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/api/v1/reports", json.dumps(body).encode(),
                         {"Authorization": f"Bearer {token}",
                          "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status in (200, 201):
                acked.append(body["id"])
        except (OSError, http.client.HTTPException):
            pass  # the server is being killed or restarted: never acknowledged
        finally:
            conn.close()
        time.sleep(0.1)


def test_a_receiver_away_and_a_server_killed_lose_nothing_acknowledged(tmp_path: Path) -> None:
    store = Receiver("victoria-metrics", tmp_path / "vm")
    store.workdir.mkdir()
    port = stack.free_port()
    url = f"http://127.0.0.1:{port}"
    server_config = fleet.write_server_config(tmp_path, port, remote_write={
        "url": store.write_url, "timeout_seconds": 5})
    hosts = [f"pc-{i}" for i in range(4)]
    tokens = fleet.issue_tokens(server_config, [("sai-gon", h) for h in hosts])

    def start_server() -> stack.Process:
        proc = stack.start_server(server_config, tmp_path)
        stack.wait_until("server", lambda: stack.http_get(f"{url}/healthz"), 20, proc)
        return proc

    server = start_server()
    acked: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=send_reports, args=(port, t, h, acked, stop))
               for t, h in zip(tokens, hosts, strict=True)]
    try:
        for sender in senders:
            sender.start()
        started = time.monotonic()
        stack.wait_until("reports while the receiver is away", lambda: len(acked) > 200, 60,
                         server)
        assert server_figures(port)["wardready_server_remote_write_failures_total"
                                    '{reason="connect"}'] >= 1
        server.popen.send_signal(signal.SIGKILL)  # in the middle of the load
        server.popen.wait()
        server = start_server()
        stack.wait_until("the receiver's outage to last", lambda: time.monotonic() - started
                         >= DOWN_SECONDS, DOWN_SECONDS + 5, server, interval=1)
        stop.set()
        for sender in senders:
            sender.join(30)
        store.start()
        stored = fleet.stored_ids(tmp_path / "server.db")
        assert set(acked) <= set(stored), "a report acknowledged to an agent is missing"
        stack.wait_until("every stored report remote-written", lambda: server_figures(port).get(
            "wardready_server_remote_write_pending_reports") == 0, 120, server)
        for host in hosts:
            measured = stored_started_at(tmp_path / "server.db", "sai-gon", host)
            selector = f'{SERIES}{{ward="sai-gon",host="{host}"}}'
            stack.wait_until(f"{host}'s samples readable", lambda s=selector, m=measured:
                             store.timestamps(s) == m, 30, store.process)
        figures = server_figures(port)
        assert sum(v for k, v in figures.items()
                   if k.startswith("wardready_server_remote_write_dropped_reports_total")) == 0
        print(f"remote write through an outage: {len(acked)} acknowledged, {len(stored)} "
              f"stored, every one in VictoriaMetrics at its own time")
    finally:
        stop.set()
        server.stop()
        store.stop()


def test_the_queue_drops_past_its_bounds_and_says_how_many(tmp_path: Path) -> None:
    """Past `max_backlog_reports` the oldest reports are passed over (counted); a report
    older than `max_age_hours` comes without its body, to be counted as too old."""
    now = time.time()
    with Store(tmp_path / "server.db") as store:
        old = []
        for i in range(12):
            body = report("sai-gon", "pc-1")
            if i in (5, 6):  # delivered late, after an outage: generated two hours ago
                body["generated_at"] = body["outcomes"][0]["started_at"] = now - 7200
                old.append(body["id"])
            store.add_report(Report.model_validate(body), now)
        pending, skipped, rows = store.remote_write_batch(100, 8, now - 3600)
        assert (pending, skipped, len(rows)) == (8, 4, 8)
        assert [r[3] for r in rows if r[4] is None] == old
        store.remote_write_done(rows[2][0])
        assert store.remote_write_batch(100, 8, now - 3600)[:2] == (5, 0)
    with Store(tmp_path / "server.db") as reopened:  # the cursor is on disk
        assert reopened.remote_write_cursor() == rows[2][0]
