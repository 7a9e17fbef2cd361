"""End to end with real processes: agent -> server -> a real Prometheus (Debian package)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from lab import stack
from tests.conftest import REPO, promtool_check_metrics, require_binary

pytestmark = pytest.mark.integration
WARD, HOST = "sai-gon", "itest-pc"


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-sharded.yml",
                                  "prometheus-store.yml", "victoria-metrics-scrape.yml"])
def test_shipped_prometheus_config_passes_promtool(name: str) -> None:
    out = subprocess.run([require_binary("promtool"), "check", "config",
                          str(REPO / "prometheus" / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[dict[str, int]]:
    require_binary("prometheus")
    if not stack.port_is_free(stack.SERVER_PORT):
        pytest.fail(f"port {stack.SERVER_PORT}, scraped by the shipped prometheus.yml, is busy")
    (tmp_path / "server.yml").write_text(yaml.safe_dump({
        "listen_port": stack.SERVER_PORT, "database": "w.db",
        "inventory": str(REPO / "inventory.yml")}))
    token = stack.issue_token(tmp_path / "server.yml", WARD, HOST)
    (tmp_path / "token").write_text(token)
    agent_port = stack.free_port()
    (tmp_path / "agent.yml").write_text(yaml.safe_dump({
        "server_url": f"http://127.0.0.1:{stack.SERVER_PORT}", "ward": WARD, "host": HOST,
        "token_file": "token", "listen_port": agent_port, "start_jitter_seconds": 0,
        # No LAN sweep: it would leave loopback for this machine's real network.
        "checks": {"host": {"interval_seconds": 2}, "bandwidth": {"enabled": False},
                   "neighbours": {"enabled": False}}}))
    procs: list[stack.Process] = []
    try:
        server = stack.start_server(tmp_path / "server.yml", tmp_path)
        procs.append(server)
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{stack.SERVER_PORT}/healthz"), 20, server)
        prom_port = stack.free_port()
        procs.append(stack.start_prometheus(tmp_path, prom_port))
        procs.append(stack.start_agent(tmp_path / "agent.yml", tmp_path))
        yield {"prometheus": prom_port, "agent": agent_port}
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_agent_facts_reach_prometheus_with_ward_and_host(running_stack: dict[str, int]) -> None:
    prom = running_stack["prometheus"]
    selector = f'{{ward="{WARD}",host="{HOST}"}}'
    memory = stack.wait_until("host memory in Prometheus", lambda: stack.prometheus_query(
        prom, f"wardready_host_memory_total_bytes{selector}"), 40)
    cpus = stack.prometheus_query(prom, f"wardready_host_cpu_logical_cores{selector}")
    assert float(memory[0]["value"][1]) == psutil.virtual_memory().total
    assert float(cpus[0]["value"][1]) == psutil.cpu_count()
    assert memory[0]["metric"]["job"] == "wardready-server"
    # The requirements from inventory.yml sit beside the measurements, for the rules to compare.
    required = stack.prometheus_query(
        prom, f'wardready_requirement_host_cpu_cores{{ward="{WARD}"}}')
    assert float(required[0]["value"][1]) == 4
    # Both /metrics outputs are lint-clean as Prometheus's own tool sees them.
    server_body = stack.http_get(f"http://127.0.0.1:{stack.SERVER_PORT}/metrics")
    agent_body = stack.http_get(f"http://127.0.0.1:{running_stack['agent']}/metrics")
    assert server_body and agent_body
    assert promtool_check_metrics(server_body) == ""
    assert promtool_check_metrics(agent_body) == ""
    assert b"wardready_agent_reports_delivered_total" in agent_body
