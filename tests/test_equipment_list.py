"""The equipment request list on a generated city of 168 wards with known shortfalls
(lab/city.py): every line, quantity, price and total, the evidence in the reasons, and the
wards it cannot judge. That the list and Prometheus flag the same wards is in
tests/test_flagging.py, against a real Prometheus.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from lab import city
from wardready.core.inventory import Inventory, Profile, load_inventory
from wardready.model import criteria
from wardready.model.report import Report
from wardready.server import equipment, shortfalls
from wardready.server.context import Fleet
from wardready.server.equipment import EquipmentList, Line

DAY = 86400.0
Expected = list[tuple[str, int, frozenset[str]]]


def expected_lines(kind: city.Shortfall, profile: Profile) -> Expected:
    """(catalogue item, quantity, flags) a ward of this kind must be asked to buy."""
    p = profile.peripherals
    return {
        "ok": [], "no-agent": [], "silent": [],
        "thin-link": [("link-upgrade", 1, {"download"})],
        "commune-thin": [("link-upgrade", 1, {"download", "upload"})],
        "no-webcam": [("webcam-1080p", 1, {"webcam", "video"})],
        "lossy": [("link-upgrade", 1, {"loss", "video"})],
        "few-pcs": [("pc-desktop", profile.hosts.min_count - 3, {"pc"})],
        "slow-pcs": [("pc-desktop", 2, {"pc"})],
        "platform-down": [("network-fix", 1, {"platform:dms"})],
        "no-ups": [("ups-1kva", 1, {"ups"})],
        "no-printer": [("printer-a4-laser", p.printers - 1, {"printer"}),
                       ("scanner-adf", p.scanners, {"scanner"})],
        # One speakerphone is the microphone and the speaker.
        "no-audio": [("speakerphone-usb", 1, {"microphone", "speaker", "video"})],
        "old-network": [("router-gbe", 1, {"router"}), ("switch-24p-gbe", 1, {"switch"})],
        "udp-blocked": [("network-fix", 1, {"video"})],
        "room-pc-slow": [("pc-desktop", 1, {"video"})],
        # The call PC's loss starts on the LAN: a cable for it, not a link upgrade.
        "lan-cable": [("lan-drop", 1, {"segment:lan-loss", "video"})],
    }[kind]  # type: ignore[return-value]


class City:
    def __init__(self, inventory: Inventory, plan: dict[str, city.Shortfall],
                 built: EquipmentList) -> None:
        self.inventory, self.plan, self.list = inventory, plan, built

    def lines_of(self, ward: str) -> list[Line]:
        return [line for line in self.list.lines if line.ward.id == ward]

    def first(self, kind: city.Shortfall) -> str:
        return next(w for w, k in self.plan.items() if k == kind)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> City:
    """168 wards reporting into the server's own in-memory view, as ingest feeds it; two
    healthy wards whose PCs last reported two days ago."""
    path = tmp_path_factory.mktemp("city") / "inventory.yml"
    path.write_text(city.inventory_yaml(), encoding="utf-8")
    inventory = load_inventory(path)
    plan = city.plan(inventory)
    for ward in [w for w, k in plan.items() if k == "ok"][5:7]:
        plan[ward] = "silent"
    fleet, points = Fleet({}, set(), DAY), defaultdict(list)
    now = time.time()
    for ward, kind in plan.items():
        for pc, role in city.pcs(kind):
            report = Report.model_validate(city.report(ward, pc, role, kind))
            received = now - 2 * DAY if kind == "silent" else now
            change = fleet.ward_link_change(report, received)
            for criterion, value in change.items():
                points[ward, criterion].append((received, value))
            fleet.apply(report, received, change)
    built = equipment.build(inventory, equipment.Evidence(fleet.agents, fleet.active, points),
                            now + 60, DAY)
    return City(inventory, plan, built)


def test_every_ward_gets_exactly_its_lines(generated: City) -> None:
    inv = generated.inventory
    prices = {c.id: c.unit_price_vnd for c in inv.catalogue}
    wrong = []
    for ward in inv.wards:
        kind = generated.plan[ward.id]
        want = sorted((item, n, frozenset(flags))
                      for item, n, flags in expected_lines(kind, inv.profile_of(ward)))
        got = sorted((x.item, x.quantity, frozenset(x.flags))
                     for x in generated.lines_of(ward.id))
        if got != want:
            wrong.append(f"{ward.id} ({kind}): got {got}, want {want}")
    assert not wrong, "\n".join(wrong)
    kinds = Counter(generated.plan.values())
    assert len(inv.wards) == 168 and set(kinds) == set(city.EXPECTED)
    for line in generated.list.lines:
        assert line.unit_price_vnd == prices[line.item]
        assert line.subtotal_vnd == (None if line.unit_price_vnd is None
                                     else line.quantity * line.unit_price_vnd)
        assert line.description and line.reason and line.measured_at is not None
        assert line.ward.former_district and line.ward.working_group
        # What blocks the city's video meetings or a platform comes first.
        high = bool({"video", "download", "upload", "loss"} & set(line.flags)) or any(
            f.startswith("platform:") for f in line.flags)
        assert (line.priority == "high") == high or line.item in (
            "webcam-1080p", "speakerphone-usb"), line


def test_totals_per_item_per_working_group_and_city_wide(generated: City) -> None:
    inv = generated.inventory
    prices = {c.id: c.unit_price_vnd for c in inv.catalogue}
    per_item: Counter[str] = Counter()
    per_group: Counter[str] = Counter()
    unpriced: Counter[str] = Counter()
    for ward in inv.wards:
        for item, n, _ in expected_lines(generated.plan[ward.id], inv.profile_of(ward)):
            per_item[item] += n
            price = prices[item]
            if price is None:
                unpriced[ward.working_group] += 1
            else:
                per_group[ward.working_group] += n * price
    lst = generated.list
    assert {t.item: t.quantity for t in lst.item_totals()} == dict(per_item)
    for t in lst.item_totals():
        price = prices[t.item]
        assert t.subtotal_vnd == (None if price is None else per_item[t.item] * price)
    groups = {t.working_group: t for t in lst.group_totals()}
    assert list(groups) == [g.id for g in inv.working_groups]
    for g in inv.working_groups:
        assert groups[g.id].subtotal_vnd == per_group[g.id]
        assert groups[g.id].unpriced_lines == unpriced[g.id]
    assert lst.total_vnd == sum(per_group.values())
    assert lst.unpriced_lines == sum(unpriced.values())
    assert lst.total_vnd > 0 and per_item["pc-desktop"] > 0


def test_reasons_carry_the_measured_evidence(generated: City) -> None:
    def reason(kind: city.Shortfall, item: str) -> str:
        return next(x.reason for x in generated.lines_of(generated.first(kind))
                    if x.item == item)

    assert reason("thin-link", "link-upgrade") == (
        "download 20.0 Mbit/s (25th percentile of the last 24 h) against 50.0 Mbit/s required")
    assert reason("lossy", "link-upgrade").startswith(
        "packet loss 5.00 % (75th percentile of the last 6 h) against 1.00 % allowed; "
        "video meetings: room-pc fails packet loss 5.00 % against 1.00 %")
    slow = reason("slow-pcs", "pc-desktop")
    assert slow.startswith("4 of the 6 PCs needed meet 4 cores and 8 GiB (6 PCs reporting)")
    assert "counter-01 has 2 cores of 4 and 4.0 GiB of 8 GiB memory" in slow
    assert "counter-02 has" in slow and "counter-03" not in slow
    assert reason("room-pc-slow", "pc-desktop").startswith(
        "video meetings: room-pc fails CPU cores 2 against 4")
    old = reason("old-network", "router-gbe")
    assert old.startswith("edge-router (C2911): OS 12.2(55)SE is out of support (Cisco IOS 12.x")
    switch = reason("old-network", "switch-24p-gbe")
    assert switch == "core-switch (DCS-7010T): 1 connected port below 1000 Mbit/s: " \
                     "Ethernet2 at 100 Mbit/s"  # not its 100 Mbit/s management port
    assert reason("platform-down", "network-fix") == (
        "Document Management System (dms) unreachable from 6 PCs: connection refused")
    assert reason("udp-blocked", "network-fix").startswith(
        "video meetings: room-pc fails UDP media path blocked against gets through (allow "
        "outgoing UDP")
    assert reason("no-printer", "scanner-adf").startswith("0 scanners seen")


def test_wards_without_evidence_are_no_data_never_nothing_needed(generated: City) -> None:
    no_data = {n.ward.id: n for n in generated.list.no_data}
    silent = {w for w, k in generated.plan.items() if k in ("no-agent", "silent")}
    assert set(no_data) == silent and len(silent) == 4
    for ward in silent:
        assert not generated.lines_of(ward)
        entry = no_data[ward]
        if generated.plan[ward] == "no-agent":
            assert entry.reason == "no agent has reported from this ward"
            assert entry.last_report_at is None
        else:
            assert entry.reason.startswith("6 PCs known, none reported in the last 24 h")
            assert entry.last_report_at is not None


def test_what_no_pc_could_count_is_unknown_not_missing(generated: City) -> None:
    """A ward whose only conference-room PC cannot read its peripherals, and with no UPS
    information, is asked for neither webcam nor UPS: it is listed under no data for them."""
    inv = generated.inventory
    ward = inv.wards[0]
    fleet = Fleet({}, set(), DAY)
    for pc, role in city.pcs("ok"):
        body = city.report(ward.id, pc, role, "ok")
        for outcome in body["outcomes"]:
            if outcome["check"] == "peripherals":
                outcome["result"]["counts"] = {k: None for k in outcome["result"]["counts"]}
            if outcome["check"] == "host":
                outcome["result"]["power_supplies"] = None
        report = Report.model_validate(body)
        fleet.apply(report, time.time(), fleet.ward_link_change(report, time.time()))
    built = equipment.build(inv, equipment.Evidence(fleet.agents, fleet.active, {}),
                            time.time(), DAY)
    assert [x for x in built.lines if x.ward.id == ward.id] == []
    (entry,) = [n for n in built.no_data if n.ward.id == ward.id]
    for unknown in ("webcams unknown: could not be read on room-pc",
                    "printers unknown: no PC could count them",
                    "UPS units unknown: no PC could read its power supplies",
                    "link download, upload not measured in the last 24 h; round-trip time, "
                    "jitter, packet loss not measured in the last 6 h"):
        assert unknown in entry.reason


def test_a_ward_link_follows_each_pcs_newest_speed_test() -> None:
    """The ward's download is the best any PC measured last: when the only PC that tests
    the link reports a thinner one, the ward's figure drops to it and stays there while the
    ward's other PCs report."""
    fleet, now = Fleet({}, set(), DAY), time.time()
    recorded: list[dict[str, float | None]] = []

    def send(pc: str, kind: city.Shortfall, tests_link: bool, at: float) -> None:
        body = city.report("sai-gon", pc, "counter", kind)
        body["outcomes"] = [dict(o, started_at=at) for o in body["outcomes"]
                            if tests_link or o["check"] != "bandwidth"]
        report = Report.model_validate(body)
        change = fleet.ward_link_change(report, at)
        recorded.append(change)
        fleet.apply(report, at, change)

    send("counter-01", "ok", True, now)
    send("counter-02", "ok", False, now + 1)
    send("counter-01", "thin-link", True, now + 2)
    send("counter-02", "ok", False, now + 3)
    good, thin = recorded[0]["download"], recorded[2]["download"]
    assert good is not None and thin is not None and thin < good
    assert "download" not in recorded[1] and "download" not in recorded[3]
    assert fleet.ward_link["sai-gon"]["download"] == thin


def test_one_bad_speed_test_in_six_is_not_a_link_upgrade() -> None:
    """Six tests evenly over the throughput window, judged as the rules do (25th percentile):
    one bad test is weather, two are a line to upgrade."""
    end = 1_800_000_000.0
    download = criteria.LINK_BY_ID["download"]
    window = download.window_seconds
    tests = [end - window + window / 6 * i for i in range(6)]
    good, bad = 95e6 / 8, 8e6 / 8
    one_bad = list(zip(tests, [good, good, bad, good, good, good], strict=True))
    two_bad = list(zip(tests, [good, bad, good, good, bad, good], strict=True))
    need = 50e6 / 8
    for points, short in ((one_bad, False), (two_bad, True)):
        value = shortfalls.window_quantile(points, download.quantile, end, window)
        assert value is not None
        assert (shortfalls.shortfall_ratio("download", value, need) > 0) == short


def test_window_quantile_is_prometheus_quantile_over_time_of_a_step_series() -> None:
    end = 1_000_000.0
    # Instants end, end-60, ... end-540 (end-600 is outside the range): three of 1.0,
    # seven of 10.0; rank 0.25 * 9 = 2.25 interpolates between the 3rd and 4th values.
    points = [(end - 600, 10.0), (end - 120, 1.0)]
    assert shortfalls.window_quantile(points, 0.25, end, 600, 60) == pytest.approx(3.25)
    # A gap (no series) is no sample: four of 5.0, three of 7.0.
    gap = [(end - 600, 5.0), (end - 300, None), (end - 120, 7.0)]
    assert shortfalls.window_quantile(gap, 0.5, end, 600, 60) == 5.0
    assert shortfalls.window_quantile([], 0.5, end, 6 * 3600) is None
    assert shortfalls.window_quantile([(end - 10 * 3600, None)], 0.5, end, 6 * 3600) is None
    # A value set before the window holds through it.
    assert shortfalls.window_quantile([(end - 10 * 3600, 4.0)], 0.75, end, 6 * 3600) == 4.0


def test_a_silent_pc_leaves_the_metrics_but_not_the_fleet() -> None:
    from tests.conftest import REPO
    from wardready.server.exposition import FleetExposition

    inventory = load_inventory(REPO / "inventory.yml")
    fleet = Fleet({}, set(), DAY)
    for pc, received in (("room-pc", time.time()), ("counter-01", time.time() - 2 * DAY)):
        report = Report.model_validate(city.report("sai-gon", pc, "counter", "ok"))
        fleet.apply(report, received, {})
    exposition = FleetExposition(inventory, lambda: fleet.agents, lambda: fleet.active,
                                 readiness_max_age=DAY)
    from prometheus_client.parser import text_string_to_metric_families

    from wardready.server.catalogue import AGENT_METRICS

    names: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(exposition.render(time.time()).decode()):
        for sample in family.samples:
            if "host" in sample.labels:
                names[sample.labels["host"]].add(family.name)
    agent_level = {m.name.removesuffix("_total") for m in AGENT_METRICS}
    # The silent PC is still listed (AgentSilent fires on it), its measurements are not.
    assert "wardready_agent_last_report_timestamp_seconds" in names["counter-01"]
    assert names["counter-01"] <= agent_level
    assert {"wardready_host_cpu_logical_cores", "wardready_peripherals",
            "wardready_bandwidth_bytes_per_second"} <= names["room-pc"]
