"""The shipped Prometheus rules and Alertmanager routing, checked by their own tools:
`promtool check rules`, `promtool test rules` (tests/rules/), `amtool check-config` and
`amtool config routes test`."""

from __future__ import annotations

import subprocess

import yaml

from tests.conftest import REPO, require_binary

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
                      "WardWithoutAgent"}
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


def test_the_equipment_list_judges_the_link_over_the_rules_window() -> None:
    """server.shortfalls restates the rules' window for the equipment list: both must move
    together."""
    from wardready.server import shortfalls

    exprs = {r["record"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"] if "record" in r}
    hours = shortfalls.WINDOW_SECONDS / 3600
    for criterion, q in shortfalls.WINDOW_QUANTILE.items():
        suffix = ("p25" if q == 0.25 else "p75") + f"_{hours:g}h"
        metric = {"download": "download_bytes_per_second", "upload": "upload_bytes_per_second",
                  "rtt": "rtt_seconds", "jitter": "jitter_seconds",
                  "loss": "loss_ratio"}[criterion]
        aggregate = "max" if shortfalls.HIGHER_IS_BETTER[criterion] else "min"
        assert exprs[f"ward:wardready_{metric}:{suffix}"] == (
            f"quantile_over_time({q}, ward:wardready_{metric}:{aggregate}[{hours:g}h])")
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    assert config["global"]["evaluation_interval"] == f"{shortfalls.EVALUATION_SECONDS:g}s"
