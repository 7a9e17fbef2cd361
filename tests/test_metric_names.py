"""One fact, one place, for metric names: each metric is defined once (one `MetricSpec`), and
every `wardready_*` name the rules, the dashboards and the docs use is a defined metric or a
series the rules record. The metrics reference (docs/metrics.md) is generated from the
definitions and is current."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

import yaml

from tests.conftest import REPO, load_file
from wardready.core.metrics import HISTOGRAM_SUFFIXES

DOCS = load_file(REPO / "docs" / "build.py", "docs_build")
RULES = REPO / "prometheus" / "rules" / "wardready.rules.yml"
USERS = (sorted((REPO / "prometheus").rglob("*.yml")) + sorted((REPO / "tests" / "rules").glob(
    "*.yml")) + sorted((REPO / "grafana").rglob("*.json")) + [REPO / "README.md"]
         + sorted((REPO / "docs").glob("*.md")))
"""Where people and tools read metric names (grafana/build.py through the dashboards)."""
NAME = re.compile(r"(?<![\w:.-])((?:[a-z_]+:)?wardready_[a-z0-9_]*(?::[a-z0-9_]+)?)(\*?)")


def recorded() -> set[str]:
    return {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"] if "record" in r}


def undeclared(text: str, metrics: set[str], records: set[str]) -> list[str]:
    """The `wardready_*` names in `text` that are neither a metric nor a recorded series;
    `name*` stands for every metric with that prefix and needs at least one."""
    wrong = []
    for name, star in NAME.findall(text):
        if star:
            if not any(m.startswith(name) for m in metrics):
                wrong.append(name + star)
        elif name not in metrics and name not in records and name != "wardready_":
            wrong.append(name)
    return wrong


def test_every_wardready_name_in_rules_dashboards_and_docs_is_declared() -> None:
    declared = DOCS.declared()
    metrics = set(declared) | {name + suffix for name, d in declared.items()
                               if d.spec.kind == "histogram" for suffix in HISTOGRAM_SUFFIXES}
    records = recorded()
    assert len(metrics) > 100 and "wardready_bandwidth_bytes_per_second" in metrics
    wrong = {str(path.relative_to(REPO)): sorted(set(found)) for path in USERS
             if (found := undeclared(path.read_text(encoding="utf-8"), metrics, records))}
    assert wrong == {}


def test_the_name_check_catches_a_typo_and_an_empty_prefix() -> None:
    metrics = {"wardready_media_rtt_seconds", "wardready_requirement_rtt_seconds"}
    text = ("min by (ward) (wardready_media_rtt_second) and wardready_requirement_* and "
            "wardready_ghost_* and ward:wardready_rtt_seconds:min and the `wardready_` prefix")
    assert undeclared(text, metrics, {"ward:wardready_rtt_seconds:min"}) == [
        "wardready_media_rtt_second", "wardready_ghost_*"]


def test_each_metric_is_defined_once() -> None:
    """Two definitions of one name drift apart (wardready_agent_info once had two helps)."""
    DOCS.declared()  # imports every module of the package
    definitions: dict[str, set[int]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("wardready.") or module is None:
            continue
        for spec in DOCS.specs_in(vars(module).values()):
            if id(spec) not in definitions[spec.name]:
                definitions[spec.name].add(id(spec))
                where[spec.name].append(name)
    assert {n: where[n] for n, ids in definitions.items() if len(ids) > 1} == {}


def test_the_metrics_reference_is_current() -> None:
    """(The rules and the dashboards: tests/test_rules.py, tests/test_dashboards.py.)"""
    out = subprocess.run([sys.executable, str(REPO / "docs" / "build.py"), "--check"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "| `wardready_media_rtt_seconds` | gauge | `statistic` |" in DOCS.render()
