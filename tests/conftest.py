"""Shared fixtures. Under CI=true a skipped test is a failure: CI must run everything."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lab import REPO
from wardready.core.inventory import Inventory, load_inventory
from wardready.core.metrics import MetricSpec, Sample, SampleCollector
from wardready.server.config import ServerConfig

DATA = Path(__file__).parent / "data"
IN_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


def require_binary(name: str) -> str:
    """The path of a binary the test needs; skip on a laptop without it (fails under CI)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it as root)")
    return path


def promtool_check_metrics(exposition: bytes) -> str:
    """Run `promtool check metrics`; returns its complaints ('' when clean)."""
    out = subprocess.run([require_binary("promtool"), "check", "metrics"], input=exposition,
                         capture_output=True, check=False)
    return (out.stdout + out.stderr).decode().strip() if out.returncode else ""


def series(samples: Iterable[Sample]) -> dict[tuple[str, tuple[str, ...]], float]:
    """Samples by (metric name, label values); a repeated series would be a scrape error."""
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for sample in samples:
        key = (sample.spec.name, sample.labels)
        assert key not in out, f"duplicate series {key}"
        out[key] = sample.value
    return out


def exposition(specs: Sequence[MetricSpec], samples: Iterable[Sample]) -> bytes:
    """The text exposition of one check's metrics, as an agent would serve them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(specs, lambda: samples))
    return generate_latest(registry)


@pytest.fixture(scope="session")
def inventory_path() -> Path:
    return REPO / "inventory.yml"


@pytest.fixture(scope="session")
def inventory(inventory_path: Path) -> Inventory:
    return load_inventory(inventory_path)


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    """A server config with a fresh database and the small test inventory."""
    return ServerConfig(database=tmp_path / "w.db", inventory=DATA / "inventory-small.yml")
