"""The agent's host check and its /metrics, against what psutil itself says."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import psutil
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATA, promtool_check_metrics
from wardready.agent.agent import Agent, run_check
from wardready.agent.config import load_agent_config
from wardready.checks import REGISTRY, host
from wardready.checks.base import CheckConfig, CheckResult, CheckSpec, Context


def samples(body: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_host_check_matches_psutil() -> None:
    result = await host.run(host.Config(), Context())
    assert result.memory_total_bytes == psutil.virtual_memory().total
    assert result.cpu_logical_cores == psutil.cpu_count()
    assert result.boot_time_seconds == psutil.boot_time()
    root = next(d for d in result.disks if d.mountpoint == "/")
    assert root.size_bytes == psutil.disk_usage("/").total
    assert {n.name for n in result.nics} == set(psutil.net_if_stats()) - {"lo"}


async def test_host_check_reads_cpu_model_from_the_given_proc_root(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Intel(R) Core(TM) "
                                      "i5-4590 CPU @ 3.30GHz\n")
    result = await host.run(host.Config(proc_root=str(tmp_path)), Context())
    assert result.cpu_model == "Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz"


def make_agent(tmp_path: Path) -> Agent:
    for name in ("agent-small.yml", "inventory-small.yml", "agent.token"):
        shutil.copy(DATA / name, tmp_path)
    return Agent(load_agent_config(tmp_path / "agent-small.yml"), "wrt_x.y")


async def test_agent_round_exposes_metrics_that_promtool_accepts(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    report = await agent.run_round(["host"])
    assert report.ward == "sai-gon" and report.host == "counter-01"
    assert agent.delivery.pending == 1
    body = generate_latest(agent.registry)
    metrics = samples(body)
    assert metrics["wardready_host_memory_total_bytes"] == [({}, psutil.virtual_memory().total)]
    assert metrics["wardready_agent_check_success"] == [({"check": "host"}, 1.0)]
    assert metrics["wardready_agent_reports_pending"] == [({}, 1.0)]
    assert promtool_check_metrics(body) == ""


class SlowResult(CheckResult):
    pass


async def _slow(config: CheckConfig, context: Context) -> SlowResult:
    await asyncio.sleep(5)
    return SlowResult()


async def _broken(config: CheckConfig, context: Context) -> SlowResult:
    raise OSError("no such device")


async def test_a_failing_or_hanging_check_becomes_a_failed_outcome(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CheckSpec("slow", CheckConfig, SlowResult, _slow, (), lambda r: ())
    broken = CheckSpec("broken", CheckConfig, SlowResult, _broken, (), lambda r: ())
    monkeypatch.setitem(REGISTRY, "slow", spec)
    monkeypatch.setitem(REGISTRY, "broken", broken)
    outcome = await run_check(spec, CheckConfig(timeout_seconds=0.05))
    assert not outcome.ok and outcome.error == "timed out after 0.05 s"
    assert outcome.duration_seconds < 1
    outcome = await run_check(broken, CheckConfig())
    assert not outcome.ok and outcome.error == "OSError: no such device"
