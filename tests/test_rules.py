"""The shipped Prometheus rules and Alertmanager routing, checked by their own tools:
`promtool check rules`, `promtool test rules` (tests/rules/), `amtool check-config` and
`amtool config routes test`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, load_file, require_binary
from wardready.model import criteria

RULES = REPO / "prometheus" / "rules" / "wardready.rules.yml"
RULE_TESTS = REPO / "tests" / "rules" / "wardready.test.yml"
ALERTMANAGER = REPO / "prometheus" / "alertmanager.yml"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_rules_pass_promtool_check() -> None:
    out = run([require_binary("promtool"), "check", "rules", str(RULES)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_pass_their_unit_tests() -> None:
    out = run([require_binary("promtool"), "test", "rules", str(RULE_TESTS)])
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert alerts == {"WardLinkBelowRequirement", "WardEquipmentMissing", "WardVideoNotReady",
                      "WardPlatformUnreachable", "WardDeviceBelowSpec", "AgentSilent",
                      "WardWithoutAgent", "WardUplinkFigureStale", "WardSegmentAtFault",
                      "WardCallWindowsFailing", "AgentClockAhead"}
    fired: set[str] = set()
    quiet: set[str] = set()  # a ward in the test's input that the alert leaves alone
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        wards = {s["series"].split('ward="')[1].split('"')[0] for s in test["input_series"]
                 if s["series"].startswith("wardready_ward_info")}
        for case in test.get("alert_rule_test", []):
            alerting = {a["exp_labels"]["ward"] for a in case.get("exp_alerts", [])}
            (fired if alerting else quiet).add(case["alertname"])
            if wards - alerting:
                quiet.add(case["alertname"])
    assert fired == alerts and quiet == alerts, (alerts - fired, alerts - quiet)


def test_alertmanager_sends_one_notification_per_ward_to_its_working_group() -> None:
    amtool = require_binary("amtool")
    out = run([amtool, "check-config", str(ALERTMANAGER)])
    assert out.returncode == 0, out.stdout + out.stderr
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert route["group_by"] == ["working_group", "ward"]

    def receiver(*labels: str) -> str:
        out = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                   *labels])
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    for group in (f"wg-{i:02d}" for i in range(1, 11)):
        assert receiver(f"working_group={group}", "ward=tan-dinh",
                        "alertname=WardVideoNotReady") == group
    assert receiver("ward=tan-dinh", "alertname=AgentSilent") == "city-operators"


def build_rules(*argv: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(REPO / "prometheus" / "build.py"), *argv])


def test_the_rules_file_is_what_the_criteria_table_generates(tmp_path: Path) -> None:
    fresh = build_rules("--check")
    assert fresh.returncode == 0, fresh.stderr
    stale = tmp_path / "wardready.rules.yml"
    stale.write_text(RULES.read_text().replace("quantile_over_time(0.25,",
                                               "quantile_over_time(0.2,", 1))
    out = build_rules("--check", "--out", str(stale))
    assert out.returncode == 1 and f"{stale} is stale" in out.stderr


def test_the_rules_follow_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window's quantile and length, and the silence limit, are the table's, not the
    generator's."""
    build = load_file(REPO / "prometheus" / "build.py", "rules_build")
    download = criteria.LINK_BY_ID["download"]
    monkeypatch.setattr(build, "LINK", (dataclasses.replace(download, quantile=0.1),
                                        *criteria.LINK[1:]))
    monkeypatch.setattr(criteria, "AGENT_SILENT_SECONDS", 1800.0)
    rules = {r.get("record") or r["alert"]: r["expr"]
             for g in yaml.safe_load(build.render())["groups"] for r in g["rules"]}
    assert rules["ward:wardready_download_bytes_per_second:p10_24h"] == (
        "quantile_over_time(0.1, ward:wardready_download_bytes_per_second:max[24h])")
    rtt = criteria.LINK_BY_ID["rtt"]
    monkeypatch.setattr(build, "LINK", (*criteria.LINK[:2],
                                        dataclasses.replace(rtt, window_seconds=3 * 3600),
                                        *criteria.LINK[3:]))
    rules = {r.get("record") or r["alert"]: r["expr"]
             for g in yaml.safe_load(build.render())["groups"] for r in g["rules"]}
    assert rules["ward:wardready_rtt_seconds:p75_3h"] == (
        "quantile_over_time(0.75, ward:wardready_rtt_seconds:min[3h])")
    assert "> 1800)" in rules["AgentSilent"]


def test_prometheus_evaluates_the_rules_at_the_step_the_equipment_list_assumes() -> None:
    """The list emulates `quantile_over_time` over the recorded values at each evaluation."""
    for name in ("prometheus.yml", "prometheus-sharded.yml", "prometheus-store.yml"):
        config = yaml.safe_load((REPO / "prometheus" / name).read_text())
        assert config["global"]["evaluation_interval"] == (
            f"{criteria.EVALUATION_SECONDS:g}s"), name


def test_every_alert_speaks_english_and_vietnamese() -> None:
    """summary/description in English, summary_vi/description_vi in Vietnamese: translated
    (not the English again), every message field filled with its template text."""
    import re
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            notes = r["annotations"]
            assert set(notes) == {"summary", "description", "summary_vi", "description_vi"}
            for key in ("summary", "description"):
                assert notes[f"{key}_vi"] != notes[key], (r["alert"], key)
                assert re.search("[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]",
                                 notes[f"{key}_vi"], re.I), (r["alert"], key)
                for text in (notes[key], notes[f"{key}_vi"]):
                    assert not re.search(r"(?<!\{)\{[a-z_]+\}(?!\})", text), (r["alert"], text)


def test_the_notification_template_is_what_the_build_writes() -> None:
    assert (REPO / "prometheus" / "templates" / "wardready.tmpl").read_text() == \
        load_file(REPO / "prometheus" / "build.py", "rules_build_tmpl").notification_template()
