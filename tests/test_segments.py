"""Which segment is weak (wardready.model.segments), from results as the checks give them:
each case is a situation a ward can be in, and the expected segment, reason and fix come from
the inventory's thresholds and the situation, never from the code's own output. The lab runs
the same cases on real links: tests/test_segments_lab.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from wardready.checks import bandwidth, devices, lasthop, path
from wardready.core.inventory import Inventory
from wardready.model import segments
from wardready.model.readiness import HostResults
from wardready.model.report import Outcome
from wardready.server import equipment
from wardready.server.store import AgentState
from wardready.server.store.port_errors import crc_per_day, increase

WARD = "sai-gon"  # ward-standard: loss <= 1 %, jitter <= 30 ms; call city-bridge-hd


def target(address: str, sent: int, lost: int, jitter: float = 0.002) -> path.Target:
    return path.Target(address=address, method="icmp", sent=sent, lost=lost,
                       loss_ratio=lost / sent if sent else None,
                       rtt_median_seconds=0.01, rtt_p95_seconds=0.02, jitter_seconds=jitter)


def hop(ttl: int, address: str, sent: int = 10, lost: int = 0,
        dscp: int | None = None) -> path.Hop:
    return path.Hop(ttl=ttl, address=address, sent=sent, lost=lost,
                    loss_ratio=lost / sent, rtt_median_seconds=0.005 * ttl, received_dscp=dscp)


def trace(gateway_lost: int = 0, server_lost: int = 0, loss_start: int | None = None,
          dscp_changed: int | None = None, hops: list[path.Hop] | None = None,
          sent: int = 200) -> path.Result:
    return path.Result(
        gateway=target("10.0.0.1", sent, gateway_lost), server=target("10.9.9.9", sent,
                                                                      server_lost),
        hops=hops or [hop(1, "10.0.0.1"), hop(2, "100.64.0.1"), hop(3, "10.9.9.9")],
        reached=True, loss_start_hop=loss_start, dscp_sent=46, dscp_changed_at_hop=dscp_changed,
        method="icmp", packets_sent=3 * sent, bytes_sent=3 * sent * 84)


def wired(speed_mbit: float = 1000, full_duplex: bool | None = True) -> lasthop.Result:
    return lasthop.Result(target="10.9.9.9", interface="eth0", local_address="10.0.0.2",
                          medium="wired",
                          speed_bits_per_second=speed_mbit * 1e6, full_duplex=full_duplex,
                          wifi=None)


def wifi(signal_dbm: float) -> lasthop.Result:
    return lasthop.Result(target="10.9.9.9", interface="wlan0", local_address="10.0.0.2",
                          medium="wifi", speed_bits_per_second=None,
                          full_duplex=None, wifi=lasthop.WifiLink(
                              signal_dbm=signal_dbm, tx_bitrate_bits_per_second=54e6,
                              rx_bitrate_bits_per_second=54e6, frequency_mhz=2437,
                              band="2.4GHz", channel=6, ssid="ward", source="iw"))


def reasons(inventory: Inventory, results: dict[str, Any], host: str = "conference-pc",
            role: str | None = "conference-room") -> list[tuple[str, str]]:
    profile = inventory.profile_of(inventory.ward(WARD))  # type: ignore[arg-type]
    call = inventory.call_of(profile) if profile.video.holds_calls(role) else None
    found = segments.host_findings(profile, results, host, role, call)
    return [(f.segment, f.reason) for f in found]


def test_a_clean_path_names_no_segment(inventory: Inventory) -> None:
    assert reasons(inventory, {"path": trace(), "lasthop": wired()}) == []


def test_wifi_below_the_profiles_signal_is_the_pc(inventory: Inventory) -> None:
    profile = inventory.profile_of(inventory.ward(WARD))  # type: ignore[arg-type]
    assert profile.segments.min_wifi_signal_dbm == -67  # inventory.yml
    found = segments.host_findings(profile, {"lasthop": wifi(-78)}, "conference-pc",
                                   "conference-room")
    assert [(f.segment, f.reason, f.need) for f in found] == [("pc", "wifi-signal", "cabling")]
    assert "-78 dBm" in found[0].evidence and found[0].fix == "move it to a wired port"
    assert reasons(inventory, {"lasthop": wifi(-60)}) == []


def test_loss_to_the_gateway_is_the_lan_or_the_pcs_wifi(inventory: Inventory) -> None:
    # 10 of 200 probes (5 %) lost to the gateway and to the server: above the 1 % budget.
    lossy = trace(gateway_lost=10, server_lost=11, loss_start=1)
    assert reasons(inventory, {"path": lossy, "lasthop": wired()}) == [("lan", "lan-loss")]
    assert ("pc", "wifi-loss") in reasons(inventory, {"path": lossy, "lasthop": wifi(-60)})
    # 1 of 200 (0.5 %) is within the budget: the LAN is not at fault.
    assert reasons(inventory, {"path": trace(gateway_lost=1, server_lost=1)}) == []


def test_loss_past_the_router_is_the_uplink_where_the_trace_says(inventory: Inventory) -> None:
    at_access = trace(server_lost=12, loss_start=2)
    assert reasons(inventory, {"path": at_access}) == [("uplink", "access-loss")]
    past = trace(server_lost=12, loss_start=3)
    found = segments.host_findings(inventory.profile_of(inventory.ward(WARD)),  # type: ignore[arg-type]
                                   {"path": past}, "conference-pc")
    assert [(f.segment, f.reason) for f in found] == [("uplink", "core-loss")]
    assert "past the provider's first hop, at hop 3 (10.9.9.9)" in found[0].evidence


def test_a_router_that_clears_the_marking_is_the_router(inventory: Inventory) -> None:
    cleared = trace(dscp_changed=2, hops=[hop(1, "10.0.0.1", dscp=46),
                                          hop(2, "100.64.0.1", dscp=0), hop(3, "10.9.9.9")])
    found = segments.host_findings(inventory.profile_of(inventory.ward(WARD)),  # type: ignore[arg-type]
                                   {"path": cleared}, "conference-pc")
    assert [(f.segment, f.reason) for f in found] == [("router", "dscp-cleared")]
    assert "DSCP 46" in found[0].evidence and "sees DSCP 0" in found[0].evidence
    # Cleared further on (the provider's network): not the ward's router.
    assert reasons(inventory, {"path": trace(dscp_changed=3)}) == []


def test_a_slow_or_half_duplex_card_is_the_pc(inventory: Inventory) -> None:
    # Whichever PC tests the uplink must carry the profile's link: 50 Mbit/s down, 20 up
    # (ward-standard), even the conference PC whose call needs 4.2.
    assert reasons(inventory, {"lasthop": wired(10)}) == [("pc", "nic-speed")]
    assert reasons(inventory, {"lasthop": wired(10)}, "counter-01", "counter") == [
        ("pc", "nic-speed")]
    assert reasons(inventory, {"lasthop": wired(100)}) == []
    assert reasons(inventory, {"lasthop": wired(1000, False)}) == [("pc", "nic-duplex")]


def test_a_speed_test_limited_by_the_pcs_window_is_the_pc(inventory: Inventory) -> None:
    profile = inventory.profile_of(inventory.ward(WARD))  # type: ignore[arg-type]
    limit = profile.segments.max_tcp_limited_ratio  # 0.3 in inventory.yml
    down = bandwidth.DirectionResult.model_construct(
        direction="download", rwnd_limited_ratio=limit + 0.4, sndbuf_limited_ratio=0.0)
    up = bandwidth.DirectionResult.model_construct(
        direction="upload", rwnd_limited_ratio=0.0, sndbuf_limited_ratio=limit - 0.1)
    result = bandwidth.Result.model_construct(directions=[down, up])
    assert reasons(inventory, {"bandwidth": result}) == [("pc", "receive-window")]


def poll(interfaces: list[devices.Interface], name: str = "floor2-switch",
         role: str = "switch") -> devices.DevicePoll:
    return devices.DevicePoll(name=name, address="10.0.0.2", device_type="cisco_ios", role=role,
                              up=True, duration_seconds=1.0, interfaces=interfaces)


def test_a_port_counting_crc_errors_for_a_day_is_the_lan(inventory: Inventory) -> None:
    now = 1_800_000_000.0
    # Gi0/7 counted 500 errors before the window, then 1,740 now: 1,240 in the day. Gi0/8 was
    # reset (the switch rebooted) and counts 40 since: 40 in the day.
    points = {(WARD, "floor2-switch", "Gi0/7"): [(now - 90000, 500), (now - 3600, 1740)],
              (WARD, "floor2-switch", "Gi0/8"): [(now - 90000, 900), (now - 600, 40)],
              ("other", "floor2-switch", "Gi0/7"): [(now - 600, 99999)]}
    errors = crc_per_day(points, WARD, now)
    assert errors == {("floor2-switch", "Gi0/7"): 1240, ("floor2-switch", "Gi0/8"): 40}
    profile = inventory.profile_of(inventory.ward(WARD))  # type: ignore[arg-type]
    found = segments.port_findings(profile, {"floor2-switch": poll([])}, errors)
    assert [(f.segment, f.reason, f.where) for f in found] == [
        ("lan", "port-errors", "floor2-switch Gi0/7")]
    assert found[0].evidence.startswith("switch port Gi0/7 of floor2-switch: 1,240 CRC errors "
                                        "in 24 h")


def test_increase_reads_a_drop_as_a_reset() -> None:
    assert increase([(0, 10), (1, 15), (2, 3), (3, 8)]) == 5 + 3 + 5
    assert increase([(5, 7)]) == 0


def test_a_half_duplex_port_is_the_lan(inventory: Inventory) -> None:
    profile = inventory.profile_of(inventory.ward(WARD))  # type: ignore[arg-type]
    port = devices.Interface(name="GigabitEthernet0/3", oper_up=True, full_duplex=False)
    vlan = devices.Interface(name="Vlan1", oper_up=True, full_duplex=False)
    found = segments.port_findings(profile, {"floor2-switch": poll([port, vlan])}, {})
    assert [(f.reason, f.where) for f in found] == [
        ("port-duplex", "floor2-switch GigabitEthernet0/3")]


# -- the equipment request list ----------------------------------------------------------------

def outcome(check: str, result: Any, at: float) -> Outcome:
    return Outcome(check=check, ok=True, started_at=at, duration_seconds=1.0, result=result)


def ward_list(inventory: Inventory, results: dict[str, Any],
              link: dict[str, float]) -> list[equipment.Line]:
    now = time.time()
    state = AgentState(last_report_at=now, reports_total=1, role="conference-room",
                       outcomes={c: outcome(c, r, now - 60) for c, r in results.items()})
    evidence = equipment.Evidence(
        {(WARD, "conference-pc"): state}, {(WARD, "conference-pc")},
        {(WARD, c): [(now - 3600, v)] for c, v in link.items()})
    listed = equipment.build(inventory, evidence, now, 86400)
    return [x for x in listed.lines if x.ward.id == WARD]


MEETS = {"download": 100e6 / 8, "upload": 50e6 / 8, "rtt": 0.02, "jitter": 0.002}


def test_lan_loss_asks_for_a_cable_not_a_link_upgrade(inventory: Inventory) -> None:
    lossy = trace(gateway_lost=10, server_lost=11, loss_start=1)
    lines = ward_list(inventory, {"path": lossy, "lasthop": wired()}, {**MEETS, "loss": 0.05})
    by_item = {x.item: x for x in lines}
    assert "link-upgrade" not in by_item, [x.reason for x in lines]
    cable = by_item["lan-drop"]  # the catalogue's cabling item
    assert cable.segment == "lan" and {"loss", "segment:lan-loss"} <= set(cable.flags)
    assert cable.priority == "high" and "gateway" in cable.reason
    assert cable.stated_reason.startswith("ward LAN: ")


def test_loss_past_the_router_stays_a_link_upgrade(inventory: Inventory) -> None:
    past = trace(server_lost=12, loss_start=3)
    lines = ward_list(inventory, {"path": past, "lasthop": wired()}, {**MEETS, "loss": 0.06})
    upgrade = next(x for x in lines if x.item == "link-upgrade")
    assert {"loss", "segment:core-loss"} <= set(upgrade.flags)
    assert "past the provider's first hop" in upgrade.reason


def test_a_pc_on_weak_wifi_gets_a_wired_port(inventory: Inventory) -> None:
    lines = ward_list(inventory, {"lasthop": wifi(-78)}, {**MEETS, "loss": 0.001})
    drop = next(x for x in lines if x.item == "lan-drop")
    assert drop.segment == "pc" and drop.quantity == 1
    assert drop.reason == ("conference-pc (conference-room PC) on Wi-Fi at -78 dBm (at least "
                           "-67 dBm needed): move it to a wired port")


def test_every_reason_has_a_catalogue_item(inventory: Inventory) -> None:
    for reason, kind in segments.REASONS.items():
        assert equipment.choose(inventory.catalogue, kind.need) is not None, reason


@pytest.mark.parametrize("results", [{}, {"path": trace()}])
def test_segment_samples_are_zero_when_nothing_is_at_fault(inventory: Inventory,
                                                           results: dict[str, Any]) -> None:
    from wardready.server import readiness
    pcs = {WARD: {"pc": HostResults("conference-room", results)}}
    verdicts = readiness.wards(inventory, pcs, [WARD])
    faults = [s for s in readiness.samples(inventory, pcs, verdicts)
              if s.spec is readiness.SEGMENT_FAULTS]
    assert {s.labels[2] for s in faults} == set(segments.REASONS) - {"port-errors"}
    assert all(s.value == 0 for s in faults)


def test_a_call_pc_failing_its_call_on_a_bad_cable_gets_a_cable(inventory: Inventory) -> None:
    """The conference PC's calls fail on 5 % loss (the call allows 1 %, and 1 % in any 15 s
    window); its loss starts on the LAN: one cable line carries the video flag, and no line
    asks for a link upgrade, not even for the window figures."""
    from lab.results import udp

    lossy = trace(gateway_lost=10, server_lost=10, loss_start=1)
    lines = ward_list(inventory, {"path": lossy, "lasthop": wired(), "media": udp(loss=0.05)},
                      {**MEETS, "loss": 0.001})
    assert not [x for x in lines if x.item == "link-upgrade"], [x.reason for x in lines]
    cable = next(x for x in lines if x.item == "lan-drop")
    assert {"video", "segment:lan-loss"} <= set(cable.flags) and cable.priority == "high"
    assert "video PC conference-pc fails" in cable.reason
