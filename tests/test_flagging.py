"""Which wards Prometheus flags, end to end: a simulated city (168 wards: those of
inventory.yml and generated ones, some short in known ways, see lab/city.py) reports
through the real server, a real Prometheus scrapes it and evaluates the shipped rules, and
exactly the expected wards are flagged, for the expected reasons; the equipment list flags
the same.

The alerts' `for:` durations (30 min and more) are promtool's to test (tests/test_rules.py):
this Prometheus loads the rules without them, so the alerts fire at once. Every panel of
every Grafana dashboard is then queried against it and must return data.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lab import city, fleet, stack
from tests.conftest import REPO, require_binary
from wardready.core.inventory import load_inventory
from wardready.server.store import Store

pytestmark = pytest.mark.integration
RULES = REPO / "prometheus" / "rules" / "wardready.rules.yml"
SHARD_AGENTS = 200
"""/metrics shards of about this many PCs: the city's ~600 come in several targets."""


@dataclass
class City:
    prometheus: int
    plan: dict[str, city.Shortfall]
    server: int
    admin_token: str
    config: Path


def post(url: str, token: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return int(resp.status)


@pytest.fixture(scope="module")
def simulated_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    require_binary("prometheus")
    workdir = tmp_path_factory.mktemp("city")
    (workdir / "inventory.yml").write_text(city.inventory_yaml(), encoding="utf-8")
    inventory = load_inventory(workdir / "inventory.yml")
    assert len(inventory.wards) == city.WARDS
    plan = city.plan(inventory)
    wards = list(plan)
    port, prom_port = stack.free_port(), stack.free_port()
    server_config = fleet.write_server_config(workdir, port,
                                              inventory=str(workdir / "inventory.yml"),
                                              metrics_agents_per_shard=SHARD_AGENTS)
    agents = [(ward, pc, role) for ward in wards for pc, role in city.pcs(plan[ward])]
    tokens = fleet.issue_tokens(server_config, [(w, pc) for w, pc, _ in agents])
    with Store(workdir / "server.db") as admin:
        admin_token = admin.issue_admin_token("procurement")
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
    prom_config = workdir / "prometheus.yml"
    # The shipped sharded configuration: the server's ~600 agents in shards of ~200 found by
    # HTTP service discovery, so the rules must flag the same over targets split by ward.
    shipped = yaml.safe_load((REPO / "prometheus" / "prometheus-sharded.yml").read_text())
    job = shipped["scrape_configs"][0]
    job.update(scrape_interval="3s", scrape_timeout="3s")
    job["http_sd_configs"][0].update(
        url=f"http://127.0.0.1:{port}/api/v1/metrics-targets", refresh_interval="2s")
    prom_config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "3s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")], "scrape_configs": [job]}))
    procs = [stack.start_server(server_config, workdir)]
    try:
        stack.wait_until("server", lambda: stack.http_get(f"http://127.0.0.1:{port}/healthz"),
                         20, procs[0])
        url = f"http://127.0.0.1:{port}/api/v1/reports"
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda a: post(url, a[1], city.report(
                a[0][0], a[0][1], a[0][2], plan[a[0][0]])), zip(agents, tokens, strict=True)))
        assert set(statuses) == {201}
        procs.append(stack.start_prometheus(workdir, prom_port, prom_config))
        yield City(prom_port, plan, port, admin_token, server_config)
    finally:
        for proc in reversed(procs):
            proc.stop()


def flagged(prom: int) -> set[tuple[str, str, str]]:
    """(ward, alert, criterion / item / platform) of every alert Prometheus holds."""
    found = set()
    for series in stack.prometheus_query(prom, "ALERTS"):
        labels = series["metric"]
        reason = (labels.get("criterion") or labels.get("item") or labels.get("reason")
                  or labels.get("platform", ""))
        found.add((labels["ward"], labels["alertname"], reason))
    return found


def test_exactly_the_short_wards_are_flagged_for_their_reasons(simulated_city: City) -> None:
    expected = {(ward, alert, reason) for ward, kind in simulated_city.plan.items()
                for alert, reason in city.EXPECTED[kind]}
    kinds = set(simulated_city.plan.values())
    assert kinds == set(city.EXPECTED) - {"silent"}, "every kind of shortfall is in the city"

    def settled() -> set[tuple[str, str, str]] | None:
        now = flagged(simulated_city.prometheus)
        return now if now == expected else None
    try:
        stack.wait_until("Prometheus to flag the short wards", settled, 90)
        shards = stack.prometheus_query(simulated_city.prometheus,
                                        'up{job="wardready-server"}')
        assert len(shards) > 1 and all(s["value"][1] == "1" for s in shards), shards
    except stack.StackError:
        now = flagged(simulated_city.prometheus)
        prom = simulated_city.prometheus
        pytest.fail(f"flagged but not expected: {sorted(now - expected)}\n"
                    f"expected but not flagged: {sorted(expected - now)}\n"
                    f"up: {stack.prometheus_query(prom, 'up')}; "
                    f"wards: {stack.prometheus_query(prom, 'count(wardready_ward_info)')}")


def test_one_shortfall_series_per_reporting_ward_agrees_with_the_alerts(
        simulated_city: City) -> None:
    prom = simulated_city.prometheus
    plan = simulated_city.plan
    reporting = {w for w, kind in plan.items() if kind != "no-agent"}
    expected = {w for w, kind in plan.items() if kind not in ("ok", "no-agent")}

    def counts() -> dict[str, float]:
        return {s["metric"]["ward"]: float(s["value"][1]) for s in stack.prometheus_query(
            prom, "ward:wardready_shortfalls:count")}
    # The windows are recorded one evaluation before the shortfalls that use them.
    def settled() -> bool | None:
        now = counts()
        return (set(now) == reporting and {w for w, n in now.items() if n > 0} == expected
                ) or None
    stack.wait_until("every reporting ward's shortfall count", settled, 60)
    assert counts()[next(w for w, k in plan.items() if k == "no-webcam")] == 2  # webcam, video
    # The server's roll-up agrees: healthy wards are ready, wards with no agent unknown.
    states = {s["metric"]["ward"]: float(s["value"][1]) for s in stack.prometheus_query(
        prom, "wardready_ward_readiness")}
    assert {w for w, v in states.items() if v == 0} >= {w for w, k in plan.items() if k == "ok"}
    assert {w for w, v in states.items() if v == -1} == {
        w for w, k in plan.items() if k == "no-agent"}


def test_every_dashboard_panel_and_variable_returns_data(simulated_city: City) -> None:
    from tests.test_dashboards import GRAFANA, build

    prom, plan = simulated_city.prometheus, simulated_city.plan
    ward = next(w for w, kind in plan.items() if kind == "no-webcam")  # reports, and is short
    stack.wait_until("the alerts to fire", lambda: stack.prometheus_query(
        prom, 'ALERTS{alertstate="firing"}'), 60)
    # rate() and increase() need two scrapes of a counter (of the ward's own shard too), and
    # the records built on them an evaluation after the second.
    stack.wait_until("the probe's records over two scrapes of the ward's counters",
                     lambda: len(stack.prometheus_query(prom, 'count by (__name__) ({__name__=~'
                                                        f'"host:wardready_probe_.+",ward="{ward}"'
                                                        '})')) == 4 or None, 60)
    empty = []
    for name in sorted(build.DASHBOARDS):
        dashboard = json.loads((GRAFANA / "dashboards" / name).read_text())
        values = {var["name"]: ".*" if var.get("multi") else ward
                  for var in dashboard["templating"]["list"]}

        def value(match: re.Match[str], values: dict[str, str] = values) -> str:
            return values[match.group(1) or match.group(2)]
        for var, query in build.variables(dashboard):
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert found, f"{name}: variable {var}: {query}"
            metric, label = found.groups()
            if not stack.prometheus_query(prom, f"group by ({label}) ({metric})"):
                empty.append(f"{name}: variable {var} ({query})")
        for title, expr in build.queries(dashboard):
            concrete = build.VAR_RE.sub(value, expr)
            if not stack.prometheus_query(prom, concrete):
                empty.append(f"{name}: panel {title!r}: {concrete}")
    assert not empty, "returned nothing:\n" + "\n".join(empty)


def prometheus_shortfalls(prom: int) -> set[tuple[str, str]]:
    """(ward, reason) for every shortfall the rules record: link criteria, missing items,
    devices below spec, video not ready, unreachable platforms."""
    found = set()
    for query, label in (("ward_criterion:wardready_shortfall:ratio > 0", "criterion"),
                         ("ward_item:wardready_missing:count > 0", "item"),
                         ("ward_item:wardready_below_spec:count > 0", "item"),
                         ('wardready_ward_criterion_verdict{criterion="video_hosts"} == 2', ""),
                         ("ward_platform:wardready_platform_up:max == 0", "platform"),
                         ("ward_segment:wardready_segment_faults:count > 0", "reason")):
        for series in stack.prometheus_query(prom, query):
            labels = series["metric"]
            reason = ("video" if not label else f"{label}:{labels[label]}"
                      if label == "platform" else f"segment:{labels[label]}"
                      if label == "reason" else labels[label])
            found.add((labels["ward"], reason))
    return found


def test_the_equipment_list_flags_what_prometheus_flags(simulated_city: City) -> None:
    """A ward is on the list exactly when a shortfall rule flags it, for the same reasons;
    wards without agents are in the list's no-data section, not on it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{simulated_city.server}/api/v1/equipment-list?format=json",
        headers={"Authorization": f"Bearer {simulated_city.admin_token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        listed = json.loads(resp.read())
    on_list = {(line["ward"], flag) for line in listed["lines"] for flag in line["flags"]}
    plan = simulated_city.plan
    expected = {(ward, "video" if alert == "WardVideoNotReady" else
                 f"platform:{reason}" if alert == "WardPlatformUnreachable" else
                 f"segment:{reason}" if alert == "WardSegmentAtFault" else reason)
                for ward, kind in plan.items() for alert, reason in city.EXPECTED[kind]
                # The list does not judge the call's short windows (docs/readiness.md).
                if alert not in ("WardWithoutAgent", "WardCallWindowsFailing")}
    assert on_list == expected
    stack.wait_until("the rules to record every shortfall",
                     lambda: prometheus_shortfalls(simulated_city.prometheus) == on_list or None,
                     90)
    assert {n["ward"] for n in listed["no_data"]} == {
        w for w, kind in plan.items() if kind == "no-agent"}


def download(c: City, query: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{c.server}/api/v1/equipment-list?{query}",
        headers={"Authorization": f"Bearer {token or c.admin_token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_equipment_list_downloads_as_a_procurement_officer_needs_it(
        simulated_city: City) -> None:
    import csv
    import io

    import openpyxl

    listed = json.loads(download(simulated_city, "format=json")[2])
    status, headers, body = download(simulated_city, "format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert re.fullmatch(r'attachment; filename="equipment-list-\d{4}-\d\d-\d\d\.csv"',
                        headers["Content-Disposition"])
    assert body.startswith(b"\xef\xbb\xbf")  # the byte-order mark Excel needs for UTF-8
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == len(listed["lines"]) + len(listed["no_data"])
    assert sum(int(r["subtotal_vnd"] or 0) for r in rows) == listed["total_vnd"] > 0
    status, headers, body = download(simulated_city, "format=xlsx")
    book = openpyxl.load_workbook(io.BytesIO(body))
    assert book.sheetnames[0] == "Summary" and "No data" in book.sheetnames
    status, _, body = download(simulated_city, "format=markdown&working_group=wg-03")
    text = body.decode()
    assert status == 200 and text.startswith("# Equipment request list")
    assert "wg-03" in text and "Working Group No. 4" not in text
    for query, code, message in (
            ("format=docx", 400, "unknown format 'docx' (one of: csv, xlsx, markdown, json, "
                                 "pdf)"),
            ("lang=fr", 400, "lang: unknown language; expected one of en, vi"),
            ("working_group=wg-99", 404, "unknown working group 'wg-99'")):
        status, _, body = download(simulated_city, query)
        assert status == code and json.loads(body)["error"].startswith(message)
    status, _, _ = download(simulated_city, "format=csv", token="wrt_not-a-token")
    assert status == 401


def test_the_equipment_list_command(simulated_city: City, tmp_path: Path) -> None:
    import subprocess

    import openpyxl

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([stack.executable("wardready-server"), "equipment-list",
                               "--config", str(simulated_city.config), *args],
                              capture_output=True, text=True, timeout=120, check=False)
    out = run("--format", "xlsx")
    assert out.returncode == 1
    assert out.stderr.strip() == ("wardready-server: --format xlsx writes a binary file: "
                                  "give --output FILE")
    out = run("--format", "xlsx", "--output", str(tmp_path / "list.xlsx"))
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r".*list\.xlsx: \d+ lines for \d+ wards, [\d,]+ VND \(\+\d+ lines "
                        r"needing a quote\); 2 wards with no data\n", out.stderr), out.stderr
    assert openpyxl.load_workbook(tmp_path / "list.xlsx").sheetnames[0] == "Summary"
    out = run("--format", "markdown", "--working-group", "wg-99")
    assert out.returncode == 2 and "unknown working group 'wg-99'" in out.stderr
    out = run("--format", "csv")
    _, _, body = download(simulated_city, "format=csv")
    # Standard output is for scripts: no byte-order mark there.
    assert out.returncode == 0 and out.stdout.splitlines() == \
        body.decode("utf-8-sig").splitlines()
