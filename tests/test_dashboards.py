"""Grafana dashboards (grafana/build.py): the committed JSON is what the generator writes,
and every panel queries the provisioned Prometheus with PromQL that parses once its
template variables are replaced by a value."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_binary

GRAFANA = REPO / "grafana"
DS_UID = "wardready-prometheus"
PANEL_TYPES = {"stat", "timeseries", "table", "state-timeline", "bargauge", "row"}


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wardready_grafana_build",
                                                  GRAFANA / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
NAMES = sorted(build.DASHBOARDS)


def _dashboard(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / name).read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _substituted(expr: str) -> str:
    """The expression as Prometheus would get it with every variable set to one value."""
    return build.VAR_RE.sub("example", expr)


def test_committed_json_is_what_build_writes() -> None:
    rendered = build.render()
    assert sorted(rendered) == sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json"))
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, \
            f"{name} is stale: run .venv/bin/python grafana/build.py"


def test_check_flag_exits_0_when_fresh() -> None:
    out = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_dashboards_have_unique_uid_and_title() -> None:
    dashboards = [_dashboard(n) for n in NAMES]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)
    assert {d["uid"] for d in dashboards} == {"wardready-city", "wardready-ward",
                                              "wardready-fleet"}
    for d in dashboards:
        assert d["schemaVersion"] == 39


@pytest.mark.parametrize("name", NAMES)
def test_panels_are_well_formed(name: str) -> None:
    panels = _panels(_dashboard(name))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    for p in panels:
        assert p["type"] in PANEL_TYPES, p["title"]
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys(), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS_UID, p["title"]
            assert t["datasource"]["type"] == "prometheus", p["title"]
            assert t["expr"].strip(), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


@pytest.mark.parametrize("name", NAMES)
def test_expressions_use_only_declared_variables(name: str) -> None:
    dashboard = _dashboard(name)
    declared = {v["name"] for v in dashboard["templating"]["list"]}
    for title, expr in build.queries(dashboard):
        assert build.used_variables(expr) <= declared, (title, expr)
        assert "$__" not in expr, (title, expr)


@pytest.mark.parametrize("name", NAMES)
def test_variables_are_label_values_queries(name: str) -> None:
    dashboard = _dashboard(name)
    variables = build.variables(dashboard)
    assert variables
    for v in dashboard["templating"]["list"]:
        assert v["datasource"]["uid"] == DS_UID
        if v["multi"]:
            assert v["includeAll"] and v["allValue"] == ".*", v["name"]
    for var, query in variables:
        assert query.startswith("label_values(") and query.endswith(")"), (var, query)
    # A multi-value variable must be matched with =~, or "a|b" and ".*" match nothing.
    multi = {v["name"] for v in dashboard["templating"]["list"] if v["multi"]}
    for title, expr in build.queries(dashboard):
        for var in multi:
            assert f'="${var}"' not in expr, (title, expr)


def test_queries_lists_every_target() -> None:
    for name in NAMES:
        dashboard = _dashboard(name)
        targets = sum(len(p.get("targets", [])) for p in _panels(dashboard))
        assert len(build.queries(dashboard)) == targets


def test_provisioning_points_at_the_dashboards() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "wardready.yml").read_text())
    assert provider["apiVersion"] == 1
    [p] = provider["providers"]
    assert p["type"] == "file" and p["folder"] == "wardready"
    assert p["options"]["path"] == "/var/lib/grafana/dashboards/wardready"
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "wardready.yml").read_text())
    assert DS_UID in {d["uid"] for d in datasources["datasources"]}


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression (variables substituted) as a recording rule."""
    promtool = require_binary("promtool")
    rules: list[dict[str, str]] = []
    for name in NAMES:
        dashboard = _dashboard(name)
        for i, (_title, expr) in enumerate(build.queries(dashboard)):
            rules.append({"record": f"dashboard:check{len(rules)}:{i}",
                          "expr": _substituted(expr)})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(
        {"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
