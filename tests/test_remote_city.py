"""Two wardready servers, one store: the simulated city (lab/city.py) split into two
provinces, each reporting to its own real server, which remote-writes the measurements to
one store that scrapes both servers' /metrics for the state and evaluates the shipped rules:
a real Prometheus (prometheus/prometheus-store.yml), or VictoriaMetrics with vmalert
(prometheus/victoria-metrics-scrape.yml). It must flag exactly the wards one server flags
(tests/test_flagging.py), for the same reasons.

A third of the wards come back from an outage: their PCs' reports were measured one to
three hours ago and arrive now, as an agent's spool delivers them. The store has them at
the times they were measured, and each server's equipment request list (from its SQLite)
still lists exactly what the store's rules flag.

As in tests/test_flagging.py the rules are loaded without their `for:` durations.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import city, fleet, stack
from tests.conftest import REPO, require_binary
from tests.test_flagging import RULES, flagged, post, prometheus_shortfalls
from wardready.core.inventory import load_inventory
from wardready.server.store import Store

pytestmark = pytest.mark.integration
PROMETHEUS_FLAGS = ("--query.lookback-delta=1d",)
VICTORIA_METRICS_FLAGS = ("-search.maxStalenessInterval=24h",)
VMALERT_FLAGS = ("-datasource.queryStep=24h",)
"""As prometheus/prometheus-store.yml and victoria-metrics-scrape.yml say to start them."""
LATE_HOURS = (1, 2, 3)
"""How long ago the late wards' reports were measured, by turns."""
SERIES = "wardready_host_memory_total_bytes"
"""Measured by every PC's host check: one series per PC, by remote write only."""


@dataclass
class Province:
    port: int
    admin_token: str
    wards: list[str]


@dataclass
class CityStore:
    """Where the measurements go and the rules run: Prometheus, or VictoriaMetrics (whose
    PromQL API is at `port`) with vmalert at `vmalert`."""
    kind: str
    port: int
    vmalert: int = 0

    @property
    def write_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def start(self, workdir: Path, servers: list[int]) -> list[stack.Process]:
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule.pop("for", None)
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
        if self.kind == "prometheus":
            return [stack.start_prometheus(workdir, self.port, prometheus_config(
                workdir, servers), receiver=True, flags=PROMETHEUS_FLAGS)]
        binary = require_binary("vmalert")
        config = yaml.safe_load(
            (REPO / "prometheus" / "victoria-metrics-scrape.yml").read_text())
        config["global"].update(scrape_interval="3s")
        (job,) = config["scrape_configs"]
        job.update(scrape_interval="3s", scrape_timeout="3s", http_sd_configs=[
            {"url": f"http://127.0.0.1:{port}/api/v1/metrics-targets"} for port in servers])
        (workdir / "scrape.yml").write_text(yaml.safe_dump(config))
        vm = stack.start_victoria_metrics(workdir, self.port, flags=(
            *VICTORIA_METRICS_FLAGS, f"-promscrape.config={workdir / 'scrape.yml'}",
            "-promscrape.httpSDCheckInterval=2s"))
        self.vmalert = stack.free_port()
        base = f"http://127.0.0.1:{self.port}"
        # Nothing listens at the notifier's address: the alerts are read off vmalert's API.
        vmalert = stack.Process("vmalert", [
            binary, f"-rule={workdir / 'rules.yml'}",
            f"-datasource.url={base}", f"-remoteWrite.url={base}", f"-remoteRead.url={base}",
            f"-notifier.url=http://127.0.0.1:{stack.free_port()}", "-evaluationInterval=1s",
            *VMALERT_FLAGS, f"-httpListenAddr=127.0.0.1:{self.vmalert}", "-loggerLevel=ERROR"],
            workdir / "vmalert.log")
        stack.wait_until("vmalert to be ready", lambda: stack.http_get(
            f"http://127.0.0.1:{self.vmalert}/health"), 30, vmalert)
        return [vm, vmalert]

    def flagged(self) -> set[tuple[str, str, str]]:
        """(ward, alert, criterion / item / platform) of every alert the store holds."""
        if self.kind == "prometheus":
            return flagged(self.port)
        body = stack.http_get(f"http://127.0.0.1:{self.vmalert}/api/v1/alerts")
        found = set()
        for alert in json.loads(body or b"{}").get("data", {}).get("alerts") or []:
            labels = alert["labels"]
            reason = (labels.get("criterion") or labels.get("item") or labels.get("reason")
                      or labels.get("platform", ""))
            found.add((labels["ward"], labels["alertname"], reason))
        return found

    def rules(self) -> list[tuple[str, str]]:
        """(rule, error of its last evaluation, or "") of every rule the store evaluates."""
        port = self.port if self.kind == "prometheus" else self.vmalert
        body = stack.http_get(f"http://127.0.0.1:{port}/api/v1/rules")
        assert body, f"no rules from {self.kind}"
        return [(r["name"], r.get("lastError", "")) for g in json.loads(body)["data"]["groups"]
                for r in g["rules"]]


@dataclass
class RemoteCity:
    store: CityStore
    plan: dict[str, city.Shortfall]
    provinces: list[Province]
    late: dict[str, float]
    """Ward -> when its reports were measured, for the wards back from an outage."""
    pcs: int


def province_inventories(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The city's inventory as two provinces' own: each lists the wards of every other
    working group, and nothing of the other's (a ward on two servers would have its info and
    requirements twice in the store)."""
    groups = [g["id"] for g in doc["working_groups"]]
    halves = [{g for i, g in enumerate(groups) if i % 2 == half} for half in (0, 1)]
    return [doc | {"wards": [w for w in doc["wards"] if w["working_group"] in half]}
            for half in halves]


def prometheus_config(workdir: Path, servers: list[int]) -> Path:
    """The shipped store configuration, pointed at these servers, quicker, with the rules
    without their `for:`."""
    config = yaml.safe_load((REPO / "prometheus" / "prometheus-store.yml").read_text())
    config["global"].update(scrape_interval="3s", evaluation_interval="1s")
    config["rule_files"] = [str(workdir / "rules.yml")]
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="3s", scrape_timeout="3s")
    job["http_sd_configs"] = [
        {"url": f"http://127.0.0.1:{port}/api/v1/metrics-targets", "refresh_interval": "2s"}
        for port in servers]
    path = workdir / "prometheus-store.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def remote_city(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[RemoteCity]:
    require_binary(request.param)
    workdir = tmp_path_factory.mktemp(f"remote-city-{request.param}")
    doc = yaml.safe_load(city.inventory_yaml())
    (workdir / "inventory.yml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    plan = city.plan(load_inventory(workdir / "inventory.yml"))
    store = CityStore(request.param, stack.free_port())
    ports = [stack.free_port(), stack.free_port()]
    provinces, configs, agents = [], [], []
    for i, (port, own) in enumerate(zip(ports, province_inventories(doc), strict=True)):
        home = workdir / f"province-{i}"
        home.mkdir()
        (home / "inventory.yml").write_text(yaml.safe_dump(own, allow_unicode=True))
        config = fleet.write_server_config(
            home, port, inventory=str(home / "inventory.yml"),
            remote_write={"url": store.write_url})
        wards = [w["id"] for w in own["wards"]]
        mine = [(port, ward, pc, role) for ward in wards for pc, role in city.pcs(plan[ward])]
        tokens = fleet.issue_tokens(config, [(w, pc) for _, w, pc, _ in mine])
        agents += [(*agent, token) for agent, token in zip(mine, tokens, strict=True)]
        with Store(home / "server.db") as admin:
            provinces.append(Province(port, admin.issue_admin_token("procurement"), wards))
        configs.append(config)
    now = time.time()
    reporting = [w for w, kind in plan.items() if kind != "no-agent"]
    late = {w: now - 3600 * LATE_HOURS[i // 3 % len(LATE_HOURS)]
            for i, w in enumerate(reporting) if i % 3 == 0}
    procs = store.start(workdir, ports)
    try:
        servers = [stack.start_server(config, config.parent) for config in configs]
        procs += servers
        for port, proc in zip(ports, servers, strict=True):
            stack.wait_until("server", lambda port=port: stack.http_get(
                f"http://127.0.0.1:{port}/healthz"), 20, proc)

        def send(agent: tuple[int, str, str, str, str]) -> int:
            port, ward, pc, role, token = agent
            return post(f"http://127.0.0.1:{port}/api/v1/reports", token,
                        city.report(ward, pc, role, plan[ward], at=late.get(ward)))
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(send, agents)) == {201}
        yield RemoteCity(store, plan, provinces, late, len(agents))
    finally:
        for proc in reversed(procs):
            proc.stop()


def expected_flags(plan: dict[str, city.Shortfall]) -> set[tuple[str, str, str]]:
    return {(ward, alert, reason) for ward, kind in plan.items()
            for alert, reason in city.EXPECTED[kind]}


def server_figures(port: int) -> dict[str, float]:
    return fleet.metric_values(stack.http_get(f"http://127.0.0.1:{port}/metrics") or b"")


def test_two_provinces_one_store_flag_what_one_server_flags(remote_city: RemoteCity) -> None:
    store, plan = remote_city.store, remote_city.plan
    # Each server sent every report it took, and kept its measurements off /metrics.
    for province in remote_city.provinces:
        stack.wait_until("every report remote-written", lambda p=province: (
            f := server_figures(p.port)).get("wardready_server_remote_write_pending_reports"
                                             ) == 0 and f, 30)
        figures = server_figures(province.port)
        assert figures["wardready_server_remote_write_reports_total"] == sum(
            len(city.pcs(plan[w])) for w in province.wards)
        assert not any(k.startswith("wardready_server_remote_write_dropped_reports_total")
                       and v for k, v in figures.items())
        assert not any(k.startswith(SERIES) for k in figures)
    expected = expected_flags(plan)

    def settled() -> set[tuple[str, str, str]] | None:
        now = store.flagged()
        return now if now == expected else None
    try:
        stack.wait_until("the store to flag the short wards", settled, 90)
    except stack.StackError:
        now = store.flagged()
        pytest.fail(f"flagged but not expected: {sorted(now - expected)}\n"
                    f"expected but not flagged: {sorted(expected - now)}\n"
                    f"up: {stack.prometheus_query(store.port, 'up')}\n"
                    f"rules failing: {[r for r in store.rules() if r[1]]}")
    # Both servers scraped; every PC's measurements in the store by remote write alone.
    targets = stack.prometheus_query(store.port, 'up{job="wardready-server"}')
    assert len(targets) == 2 and all(t["value"][1] == "1" for t in targets), targets
    pcs = stack.prometheus_query(store.port, f"count({SERIES})")
    assert float(pcs[0]["value"][1]) == remote_city.pcs
    assert not stack.prometheus_query(store.port, f'{SERIES}{{instance!=""}}')
    # No rule failed (two servers serving one ward would break the joins, all wards at once).
    rules = store.rules()
    shipped = yaml.safe_load(RULES.read_text())["groups"]
    assert len(rules) == sum(len(g["rules"]) for g in shipped), rules
    assert not [r for r in rules if r[1]], rules


def test_late_reports_are_in_the_store_at_the_time_they_were_measured(
        remote_city: RemoteCity) -> None:
    store, late = remote_city.store.port, remote_city.late
    assert {round((time.time() - at) / 3600) for at in late.values()} == set(LATE_HOURS)

    def measured_at() -> dict[str, set[float]]:
        found: dict[str, set[float]] = {}
        for s in stack.prometheus_query(store, f"timestamp({SERIES})"):
            found.setdefault(s["metric"]["ward"], set()).add(float(s["value"][1]))
        return found
    found = stack.wait_until("every PC's host figures in the store", lambda: (
        m := measured_at()) and sum(map(len, m.values())) and len(m) == len(
            [w for w, k in remote_city.plan.items() if k != "no-agent"]) and m, 30)
    for ward, at in late.items():
        assert found[ward] == {round(at, 3)}, ward  # every PC's report measured then
    newest = max(t for ts in found.values() for t in ts)
    assert all(min(ts) > newest - 300 for w, ts in found.items() if w not in late)


def equipment_list(port: int, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/equipment-list?" + urllib.parse.urlencode(
            {"format": "json"}), headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def test_after_an_outage_the_equipment_lists_flag_what_the_store_flags(
        remote_city: RemoteCity) -> None:
    """The provinces' request lists together name exactly the shortfalls the store's rules
    record, the late wards' among them; the wards without agents are in the no-data part."""
    plan = remote_city.plan
    lists = [equipment_list(p.port, p.admin_token) for p in remote_city.provinces]
    on_list = {(line["ward"], flag) for listed in lists for line in listed["lines"]
               for flag in line["flags"]}
    expected = {(ward, "video" if alert == "WardVideoNotReady" else
                 f"platform:{reason}" if alert == "WardPlatformUnreachable" else
                 f"segment:{reason}" if alert == "WardSegmentAtFault" else reason)
                # The list does not judge the call's short windows (docs/readiness.md).
                for ward, alert, reason in expected_flags(plan)
                if alert not in ("WardWithoutAgent", "WardCallWindowsFailing")}
    assert on_list == expected
    late_short = {w for w, _ in on_list if w in remote_city.late}
    assert len({plan[w] for w in late_short}) >= 5, "the outage hits many kinds of shortfall"
    stack.wait_until("the store's rules to record every shortfall", lambda: prometheus_shortfalls(
        remote_city.store.port) == on_list or None, 90)
    assert {n["ward"] for listed in lists for n in listed["no_data"]} == {
        w for w, kind in plan.items() if kind == "no-agent"}
