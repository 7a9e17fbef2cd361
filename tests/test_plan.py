"""The city measurement plan: quiet windows, the interval draw, the tester election, and the
server's slots following it (quiet windows, daily budgets, a PC carrying a call)."""

from __future__ import annotations

import math
import random
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from lab import fleet, results, stack
from tests.conftest import DATA
from tests.test_server import Client, MakeClient, auth
from wardready.agent.plan import BUSY_RETRY_SECONDS, RETRY_SPREAD, ThroughputSchedule
from wardready.checks import REGISTRY, bandwidth
from wardready.checks.base import Context, ServerLink
from wardready.core.inventory import load_inventory
from wardready.core.plan import QuietWindow, Throughput, occurrences, quiet_at
from wardready.model.report import Outcome, Report
from wardready.server.app import create_app
from wardready.server.config import ServerConfig
from wardready.server.plan import Candidate, PlanBook, elect
from wardready.server.store import Store

HCM = ZoneInfo("Asia/Ho_Chi_Minh")  # UTC+7 all year, no daylight saving


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo("UTC")).timestamp()  # type: ignore[misc]


# -- quiet windows --------------------------------------------------------------------------

def test_a_weekly_window_is_in_the_city_time_zone() -> None:
    conference = QuietWindow(name="City conference", days=["mon"], start="07:30", end="11:30")
    # Monday 7 December 2026, 08:00 in the city is 01:00 UTC; the window ends 11:30 local.
    now = utc(2026, 12, 7, 1, 0)
    quiet = quiet_at([conference], HCM, now)
    assert quiet is not None and quiet.end == utc(2026, 12, 7, 4, 30)
    assert quiet_at([conference], HCM, utc(2026, 12, 7, 4, 30)) is None  # the end is open
    assert quiet_at([conference], HCM, utc(2026, 12, 8, 1, 0)) is None  # a Tuesday
    week = occurrences([conference], HCM, utc(2026, 12, 6), utc(2026, 12, 21))
    assert [q.start for q in week] == [utc(2026, 12, 7, 0, 30), utc(2026, 12, 14, 0, 30)]


def test_windows_that_follow_each_other_hold_until_the_last_ends() -> None:
    windows = [QuietWindow(name="Morning", start="08:00", end="10:00"),
               QuietWindow(name="Ward review", ward="sai-gon", start="10:00", end="11:00"),
               QuietWindow(name="Lunch", start="12:00", end="13:00")]
    quiet = quiet_at(windows, HCM, utc(2026, 12, 8, 1, 30))  # 08:30 local
    assert quiet is not None and quiet.name == "Morning + Ward review"
    assert quiet.end == utc(2026, 12, 8, 4, 0)  # 11:00 local, not 10:00: no gap to test in


def test_a_one_off_window_holds_on_its_date_only() -> None:
    review = QuietWindow(name="Review", dates=[date(2026, 12, 18)], start="14:00", end="17:00")
    assert quiet_at([review], HCM, utc(2026, 12, 18, 8, 0)) is not None  # 15:00 local
    assert quiet_at([review], HCM, utc(2026, 12, 25, 8, 0)) is None


def test_windows_apply_by_city_group_and_ward() -> None:
    plan = load_inventory(DATA / "inventory-small.yml").measurement_plan
    assert [w.name for w in plan.windows_for("nha-be", "wg-01")] == ["Past conference",
                                                                     "Past review"]
    assert [w.name for w in plan.windows_for("sai-gon", "wg-02")] == ["Past conference"]
    # Settings: the city's, then the group's override.
    assert plan.throughput_for("nha-be", "wg-01").mean_interval_hours == 3
    assert plan.throughput_for("sai-gon", "wg-02").mean_interval_hours == 6


# -- how often ------------------------------------------------------------------------------

def test_intervals_are_exponential_and_clamped() -> None:
    t = Throughput(mean_interval_hours=6, min_interval_hours=1, max_interval_hours=12)
    rng = random.Random(7)
    draws = [t.next_interval(rng) / 3600 for _ in range(40_000)]
    assert min(draws) == 1 and max(draws) == 12
    # E[min(max(X, a), b)] for X exponential with mean m: a + m (e^(-a/m) - e^(-b/m)).
    expected = 1 + 6 * (math.exp(-1 / 6) - math.exp(-12 / 6))
    assert sum(draws) / len(draws) == pytest.approx(expected, rel=0.02)
    # P(X <= a) of the draws sit on the lower clamp: 1 - e^(-1/6) = 15.4 %.
    assert sum(d == 1 for d in draws) / len(draws) == pytest.approx(
        1 - math.exp(-1 / 6), abs=0.01)


def test_a_deferred_test_is_tried_again_after_the_hold() -> None:
    schedule = ThroughputSchedule(random.Random(1))
    plan = {"throughput": {"tester": True, "mean_interval_seconds": 6 * 3600,
                           "min_interval_seconds": 3600, "max_interval_seconds": 12 * 3600,
                           "last_test_at": None}}
    schedule.update(plan, now=1000.0)
    assert schedule.next_at is not None and 1000 <= schedule.next_at <= 1600  # no figure yet
    schedule.deferred("quiet_window", retry_after=3600, now=2000.0)
    assert 5600 <= schedule.next_at <= 5600 + RETRY_SPREAD["quiet_window"]
    schedule.deferred("ward_in_use", retry_after=30, now=6000.0)
    assert 6000 + BUSY_RETRY_SECONDS <= schedule.next_at <= 6000 + 2 * BUSY_RETRY_SECONDS
    assert schedule.deferrals == {"quiet_window": 1, "ward_in_use": 1}
    # A plan that makes another PC the tester stops this one's tests.
    schedule.update({"throughput": {**plan["throughput"], "tester": False}}, now=7000.0)
    assert schedule.next_at is None


def test_a_recent_test_of_the_ward_sets_the_next_one_a_draw_later() -> None:
    schedule = ThroughputSchedule(random.Random(2))
    plan = {"throughput": {"tester": True, "mean_interval_seconds": 6 * 3600,
                           "min_interval_seconds": 3600, "max_interval_seconds": 12 * 3600,
                           "last_test_at": 10_000.0}}
    schedule.update(plan, now=10_600.0)  # restarted 10 min after the ward's last test
    assert schedule.next_at is not None and 10_000 + 3600 <= schedule.next_at <= 10_000 + 43200


# -- who tests ------------------------------------------------------------------------------

def test_the_conference_pc_is_elected_else_the_best_placed() -> None:
    settings = Throughput(prefer_role="conference-room")
    pcs = [Candidate("counter-1", "counter", 9e6), Candidate("meet-1", "conference-room", 1e6),
           Candidate("office-2", None, 12e6)]
    assert elect(settings, pcs) == (["meet-1"], "role conference-room")
    no_meeting_room = [p for p in pcs if p.role != "conference-room"]
    assert elect(settings, no_meeting_room) == (["office-2"],
                                                "best placed (fastest recent figures)")
    two = settings.model_copy(update={"testers": 2})
    assert elect(two, pcs)[0] == ["meet-1", "office-2"]
    named = settings.model_copy(update={"hosts": ["counter-1"]})
    assert elect(named, pcs) == (["counter-1"], "named in the plan")
    assert elect(settings.model_copy(update={"testers": 0}), pcs)[0] == []


# -- the plan follows edits of the inventory ------------------------------------------------

def test_an_edited_plan_is_read_again_and_a_bad_edit_keeps_the_last(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    text = (DATA / "inventory-small.yml").read_text()
    path.write_text(text)
    clock = [0.0]
    book = PlanBook(path, load_inventory(path), clock=lambda: clock[0])
    path.write_text(text.replace("mean_interval_hours: 3", "mean_interval_hours: 2"))
    clock[0] += 5
    assert book.current().measurement_plan.overrides[0].throughput.mean_interval_hours == 2
    path.write_text(text.replace("daily_budget_mb: 1000000", "daily_budget_mb: 100"))
    clock[0] += 5
    assert book.current().measurement_plan.throughput.daily_budget_mb == 1_000_000
    assert book.reload_errors == 1 and book.error is not None
    assert book.error.startswith(f"{path}:") and "below one test" in book.error


# -- the server's slots follow the plan -----------------------------------------------------

AGENTS = [("sai-gon", "pc-1"), ("sai-gon", "pc-2"), ("nha-be", "pc-1")]


async def start(aiohttp_client: MakeClient, tmp_path: Path, plan: str = ""
                ) -> tuple[Client, dict[tuple[str, str], str]]:
    inventory = tmp_path / "inventory.yml"
    text = (DATA / "inventory-small.yml").read_text()
    if plan:
        text = text[:text.index("measurement_plan:")] + plan
    inventory.write_text(text)
    config = ServerConfig(database=tmp_path / "w.db", inventory=inventory)
    store = Store(config.database)
    tokens = {agent: store.issue_token(*agent) for agent in AGENTS}
    store.close()
    return await aiohttp_client(create_app(config, load_inventory(inventory))), tokens


async def ask(client: Client, token: str, override: bool = False, language: str = ""
              ) -> tuple[int, dict[str, object], str | None]:
    headers = auth(token) | ({"Accept-Language": language} if language else {})
    resp = await client.post("/api/v1/speedtest/slots" + ("?override=1" if override else ""),
                             headers=headers)
    return resp.status, await resp.json(), resp.headers.get("Retry-After")


def seconds_to_midnight(now: float) -> float:
    local = datetime.fromtimestamp(now, HCM)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(),
                            HCM).timestamp() - now


async def test_no_slot_inside_a_quiet_window_but_a_technician_may_override(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    today = datetime.now(HCM).date().isoformat()
    client, tokens = await start(aiohttp_client, tmp_path, f"""measurement_plan:
  throughput: {{daily_budget_mb: 1000000, test_max_mb: 1000}}
  quiet_windows:
    - {{name: All-day conference, ward: sai-gon, dates: [{today}], start: "00:00", end: "24:00"}}
""")
    status, body, retry = await ask(client, tokens["sai-gon", "pc-1"])
    assert status == 429 and body["reason"] == "quiet_window"
    assert "quiet window 'All-day conference'" in str(body["error"])
    # An agent whose technician reads Vietnamese asks in Vietnamese (Accept-Language).
    status, body, _ = await ask(client, tokens["sai-gon", "pc-1"], language="vi-VN,vi;q=0.9")
    assert status == 429 and body["reason"] == "quiet_window"
    assert str(body["error"]).startswith(
        "chưa được cấp lượt đo: khung giờ hạn chế đo 'All-day conference'; thử lại sau ")
    assert retry is not None
    assert int(retry) == pytest.approx(seconds_to_midnight(time.time()), abs=5)
    assert (await ask(client, tokens["nha-be", "pc-1"]))[0] == 201  # another ward: no window
    status, granted, _ = await ask(client, tokens["sai-gon", "pc-1"], override=True)
    assert status == 201 and granted["rtt_bound_seconds"] == 0.1  # the profile's max_rtt_ms
    metrics = fleet.metric_values(await (await client.get("/metrics")).read())
    assert metrics['wardready_throughput_tests_deferred_total{reason="quiet_window",'
                   'ward="sai-gon"}'] == 2  # asked in English, then in Vietnamese
    assert metrics["wardready_throughput_test_overrides_total"] == 1
    assert metrics['wardready_plan_quiet_window_active{ward="sai-gon"}'] == 1
    assert metrics['wardready_plan_quiet_window_active{ward="nha-be"}'] == 0


async def test_a_ward_spends_its_daily_budget_and_then_waits_for_the_next_day(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path, """measurement_plan:
  throughput: {daily_budget_mb: 2.5, test_max_mb: 1}
""")
    token = tokens["sai-gon", "pc-1"]
    for _ in range(2):  # two tests of 1 MB each: 0.5 MB left, less than a test
        status, body, _ = await ask(client, token)
        assert status == 201 and body["max_bytes"] == 1_000_000
        headers = {**auth(token), "X-Wardready-Slot": str(body["slot"])}
        download = await client.get("/api/v1/speedtest/download?bytes=5000000", headers=headers)
        assert len(await download.read()) == 1_000_000  # the slot's budget: one test
        release = await client.delete(f"/api/v1/speedtest/slots/{body['slot']}", headers=headers)
        assert release.status == 204
    status, body, retry = await ask(client, token)
    assert status == 429 and body["reason"] == "budget" and "2 of 2.5 MB" in str(body["error"])
    assert retry is not None
    assert int(retry) == pytest.approx(seconds_to_midnight(time.time()), abs=5)
    assert (await ask(client, tokens["nha-be", "pc-1"]))[0] == 201  # each ward its own
    metrics = fleet.metric_values(await (await client.get("/metrics")).read())
    assert metrics['wardready_plan_budget_used_bytes{ward="sai-gon"}'] == 2_000_000
    assert metrics['wardready_plan_daily_budget_bytes{ward="sai-gon"}'] == 2_500_000


async def test_a_pc_that_carries_a_call_holds_its_wards_tests_back(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    busy = await client.post("/api/v1/busy", json={"seconds": 30, "bits_per_second": 2.6e6},
                             headers=auth(tokens["sai-gon", "pc-2"]))
    assert busy.status == 204
    status, body, retry = await ask(client, tokens["sai-gon", "pc-1"])
    assert status == 429 and body["reason"] == "ward_in_use"
    assert "'pc-2' of the ward carries a call" in str(body["error"])
    assert retry is not None and 25 <= int(retry) <= 30
    assert (await ask(client, tokens["nha-be", "pc-1"]))[0] == 201
    bad = await client.post("/api/v1/busy", json={"seconds": 3600, "bits_per_second": 1},
                            headers=auth(tokens["sai-gon", "pc-2"]))
    assert bad.status == 422  # one mark holds for two minutes at most
    # A test that found the link busy by itself gives its slot back and says why.
    _, granted, _ = await ask(client, tokens["nha-be", "pc-1"])
    headers = auth(tokens["nha-be", "pc-1"])
    url = f"/api/v1/speedtest/slots/{granted['slot']}"
    assert (await client.delete(url + "?deferred=nonsense", headers=headers)).status == 400
    assert (await client.delete(url + "?deferred=rtt_inflation", headers=headers)).status == 204
    metrics = fleet.metric_values(await (await client.get("/metrics")).read())
    assert metrics['wardready_throughput_tests_deferred_total{reason="rtt_inflation",'
                   'ward="nha-be"}'] == 1


async def post_report(client: Client, token: str, ward: str, host: str, role: str | None,
                      down_mbps: float | None = None) -> None:
    outcomes = []
    if down_mbps is not None:
        outcomes.append(Outcome(check="bandwidth", started_at=time.time() - 60,
                                duration_seconds=10, ok=True,
                                result=results.link(down_mbps, down_mbps / 2)))
    report = Report(ward=ward, host=host, role=role, agent_version="test",
                    generated_at=time.time(), outcomes=outcomes)
    resp = await client.post("/api/v1/reports", data=report.model_dump_json(),
                             headers={**auth(token), "Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()


async def test_each_agent_gets_its_part_of_the_plan(aiohttp_client: MakeClient,
                                                    tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path, """measurement_plan:
  throughput: {prefer_role: conference-room, daily_budget_mb: 900, test_max_mb: 200}
  overrides:
    - {working_group: wg-02, throughput: {mean_interval_hours: 4}}
  quiet_windows:
    - {name: City conference, days: [mon], start: "07:30", end: "11:30"}
""")

    async def plan(agent: tuple[str, str]) -> dict[str, object]:
        resp = await client.get("/api/v1/plan", headers=auth(tokens[agent]))
        assert resp.status == 200
        answer: dict[str, object] = await resp.json()
        return answer

    first = await plan(("sai-gon", "pc-1"))  # nobody has reported: whoever asks tests
    throughput = first["throughput"]
    assert isinstance(throughput, dict) and throughput["tester"] is True
    assert throughput["mean_interval_seconds"] == 4 * 3600  # wg-02's override
    assert throughput["daily_budget_bytes"] == 900_000_000
    windows = first["quiet_windows"]
    assert isinstance(windows, list) and len(windows) == 1  # one Monday in the coming week
    assert datetime.fromtimestamp(windows[0]["start"], HCM).strftime("%a %H:%M") == "Mon 07:30"
    # pc-1 reported a fast link, pc-2 is the conference PC: the role wins.
    await post_report(client, tokens["sai-gon", "pc-1"], "sai-gon", "pc-1", "counter", 90)
    await post_report(client, tokens["sai-gon", "pc-2"], "sai-gon", "pc-2", "conference-room")
    one, two = await plan(("sai-gon", "pc-1")), await plan(("sai-gon", "pc-2"))
    assert one["throughput"]["tester"] is False  # type: ignore[index]
    assert two["throughput"] == {**two["throughput"], "tester": True,  # type: ignore[dict-item]
                                 "testers": ["pc-2"], "elected": "role conference-room"}
    assert one["throughput"]["last_test_at"] is not None  # type: ignore[index]
    assert one["version"] != first["version"]


# -- with real processes --------------------------------------------------------------------

def agent_metrics(port: int) -> dict[str, float] | None:
    body = stack.http_get(f"http://127.0.0.1:{port}/metrics")
    return fleet.metric_values(body) if body else None


def test_a_plan_change_reaches_running_agents_without_a_restart(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    original = (DATA / "inventory-small.yml").read_text()
    inventory.write_text(original)
    port = stack.free_port()
    (tmp_path / "server.yml").write_text(yaml.safe_dump({
        "listen_port": port, "database": "w.db", "inventory": str(inventory)}))
    quiet = {name: {"enabled": False} for name in REGISTRY if name not in ("host", "bandwidth")}
    agents = {}
    for host, role in (("pc-a", "conference-room"), ("pc-b", "counter")):
        (tmp_path / host).mkdir()
        (tmp_path / host / "token").write_text(
            stack.issue_token(tmp_path / "server.yml", "sai-gon", host))
        agents[host] = stack.free_port()
        (tmp_path / host / "agent.yml").write_text(yaml.safe_dump({
            "server_url": f"http://127.0.0.1:{port}", "ward": "sai-gon", "host": host,
            "role": role, "token_file": "token", "listen_port": agents[host],
            "start_jitter_seconds": 0,
            "checks": {**quiet, "host": {"interval_seconds": 600},
                       "bandwidth": {"max_seconds": 1, "max_bytes": 1 << 20}}}))
    procs: list[stack.Process] = []
    try:
        server = stack.start_server(tmp_path / "server.yml", tmp_path)
        procs.append(server)
        stack.wait_until("server", lambda: stack.http_get(f"http://127.0.0.1:{port}/healthz"),
                         20, server)
        for host in agents:
            procs.append(stack.start_agent(tmp_path / host / "agent.yml", tmp_path / host))
        pids = [p.popen.pid for p in procs]

        def testers() -> dict[str, float] | None:
            seen = {h: agent_metrics(p) or {} for h, p in agents.items()}
            found = {h: m.get("wardready_agent_plan_tester") for h, m in seen.items()}
            return found if None not in found.values() else None

        # Both PCs reported their roles: the conference-room PC tests the ward's uplink.
        stack.wait_until("the conference PC elected", lambda: testers() == {
            "pc-a": 1, "pc-b": 0} or None, 60, server)
        # The operator edits the plan: another tester, interval, budget and a quiet window.
        tomorrow = datetime.now(HCM).date() + timedelta(days=1)
        group = "    - {working_group: wg-01, throughput: {mean_interval_hours: 3}}\n"
        ward = ("    - {ward: sai-gon, throughput: {hosts: [pc-b], mean_interval_hours: 2, "
                "daily_budget_mb: 123456}}\n")
        window = (f"    - {{name: Ward meeting, ward: sai-gon, dates: [{tomorrow}], "
                  'start: "09:00", end: "10:00"}\n')
        inventory.write_text(original.replace(group, group + ward) + window)
        meeting = datetime.combine(tomorrow, datetime.min.time().replace(hour=9),
                                   HCM).timestamp()

        def followed() -> bool | None:
            a, b = agent_metrics(agents["pc-a"]) or {}, agent_metrics(agents["pc-b"]) or {}
            return (a.get("wardready_agent_plan_tester") == 0
                    and b.get("wardready_agent_plan_tester") == 1
                    and b.get("wardready_agent_plan_mean_interval_seconds") == 7200
                    and b.get("wardready_agent_plan_daily_budget_bytes") == 123456e6
                    and b.get("wardready_agent_next_quiet_window_start_timestamp_seconds")
                    == meeting) or None

        stack.wait_until("the agents to follow the edited plan", followed, 60, server)
        assert [p.popen.pid for p in procs] == pids and all(p.alive() for p in procs)
        assert "measurement plan reloaded" in (tmp_path / "server.log").read_text()
    finally:
        for proc in reversed(procs):
            proc.stop()


# -- the check's own politeness -------------------------------------------------------------

def check_link(client: Client, token: str) -> Context:
    return Context(server=ServerLink(str(client.make_url("")).rstrip("/"), token))


async def test_a_test_inside_a_window_is_deferred_unless_overridden(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    today = datetime.now(HCM).date().isoformat()
    client, tokens = await start(aiohttp_client, tmp_path, f"""measurement_plan:
  throughput: {{daily_budget_mb: 1000000, test_max_mb: 1000}}
  quiet_windows:
    - {{name: All-day conference, dates: [{today}], start: "00:00", end: "24:00"}}
""")
    config = bandwidth.Config(max_bytes=1 << 20, max_seconds=2)
    held = await bandwidth.run(config, check_link(client, tokens["sai-gon", "pc-1"]))
    assert held.directions == [] and held.deferred is not None
    assert held.deferred.reason == "quiet_window"
    assert held.deferred.retry_after_seconds == pytest.approx(
        seconds_to_midnight(time.time()), abs=5)
    forced = await bandwidth.run(config.model_copy(update={"override": True}),
                                 check_link(client, tokens["sai-gon", "pc-1"]))
    assert forced.deferred is None and len(forced.directions) == 2


async def test_an_idle_rtt_above_the_wards_baseline_defers_the_test(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    token = tokens["sai-gon", "pc-1"]
    # The ward's earlier test found 1 µs to the server, idle: loopback's own ~50 µs is far
    # above 1.5 times that, so without a margin the link reads as in use.
    earlier = results.link(90, 40).model_copy(update={"idle_rtt_median_seconds": 1e-6})
    report = Report(ward="sai-gon", host="pc-1", agent_version="test", generated_at=time.time(),
                    outcomes=[Outcome(check="bandwidth", started_at=time.time() - 600,
                                      duration_seconds=9, ok=True, result=earlier)])
    resp = await client.post("/api/v1/reports", data=report.model_dump_json(),
                             headers={**auth(token), "Content-Type": "application/json"})
    assert resp.status == 201
    strict = bandwidth.Config(max_bytes=1 << 20, max_seconds=2, busy_rtt_margin_seconds=0)
    held = await bandwidth.run(strict, check_link(client, token))
    assert held.deferred is not None and held.deferred.reason == "rtt_inflation"
    assert held.baseline_rtt_seconds == 1e-6 and held.directions == []
    metrics = fleet.metric_values(await (await client.get("/metrics")).read())
    assert metrics['wardready_throughput_tests_deferred_total{reason="rtt_inflation",'
                   'ward="sai-gon"}'] == 1
    # The default 5 ms margin absorbs loopback's microseconds: the test runs.
    ran = await bandwidth.run(strict.model_copy(update={"busy_rtt_margin_seconds": 0.005}),
                              check_link(client, token))
    assert ran.deferred is None and len(ran.directions) == 2


def test_the_pcs_own_traffic_or_an_inflated_rtt_make_the_link_busy() -> None:
    config = bandwidth.Config()  # 1 Mbit/s of its own; 1.5 x baseline + 5 ms
    assert bandwidth._busy(config, 0.5e6, 0.020, 0.020) is None
    own = bandwidth._busy(config, 2.6e6, 0.020, 0.020)
    assert own is not None and own.reason == "own_traffic" and "2.6 Mbit/s" in own.detail
    assert bandwidth._busy(config, 0, 0.0349, 0.020) is None  # limit: 30 + 5 = 35 ms
    inflated = bandwidth._busy(config, 0, 0.0351, 0.020)
    assert inflated is not None and inflated.reason == "rtt_inflation"
    assert bandwidth._busy(config, 0, 0.500, None) is None  # no baseline yet: nothing to say


async def test_a_scheduled_test_that_finds_the_ward_busy_defers_a_technicians_waits(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, tokens = await start(aiohttp_client, tmp_path)
    assert (await ask(client, tokens["sai-gon", "pc-2"]))[0] == 201  # pc-2 is testing
    scheduled = bandwidth.Config(slot_wait_seconds=0.5, wait_for_holds=False)
    held = await bandwidth.run(scheduled, check_link(client, tokens["sai-gon", "pc-1"]))
    assert held.deferred is not None and held.deferred.reason == "ward_busy"
    assert "ward 'sai-gon' has a test running (host 'pc-2')" in held.deferred.detail
    with pytest.raises(RuntimeError, match=r"no test slot within 0\.5 s"):
        await bandwidth.run(scheduled.model_copy(update={"wait_for_holds": True}),
                            check_link(client, tokens["sai-gon", "pc-1"]))
