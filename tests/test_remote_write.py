"""Remote write on real components: a ward agent cut off from the server keeps measuring;
once it is back, every measurement reaches the store at the time it was taken (Prometheus's
receiver, VictoriaMetrics); a receiver away and a server SIGKILLed lose nothing acknowledged."""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import fleet, stack

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


