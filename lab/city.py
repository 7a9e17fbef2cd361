"""A simulated city: for each ward, the reports its PCs would send, healthy or short in one
known way. Used to feed a real server (and through it a real Prometheus) with a fleet whose
right answer is known in advance.

A healthy ward meets the example `ward-standard` profile of inventory.yml: six PCs of 8 cores
and 16 GiB, one of them the conference-room PC with a webcam, microphone and speaker; three
printers and two scanners on the network, a UPS, a 95/40 Mbit/s link, a clean UDP path, and
every city platform reachable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import yaml

from lab import REPO
from lab.results import kit, link, probe_interval, results, segments, udp
from wardready.checks import devices, host, platforms
from wardready.core.inventory import Inventory

Shortfall = Literal["ok", "thin-link", "no-webcam", "lossy", "few-pcs", "platform-down",
                    "no-ups", "slow-pcs", "no-printer", "no-audio", "old-network",
                    "udp-blocked", "room-pc-slow", "lan-cable", "commune-thin", "no-agent",
                    "silent"]
PCS = 6
GIB = 2**30
PLATFORMS = ("video-bridge", "dms", "portal-1022", "procedures")
WARDS = 168
"""Ho Chi Minh City's wards, communes and special zones since the 2025 reform."""

EXPECTED: dict[Shortfall, set[tuple[str, str]]] = {
    # What Prometheus must flag for a ward of each kind: (alert, criterion / item / platform).
    "ok": set(),
    "thin-link": {("WardLinkBelowRequirement", "download")},
    "no-webcam": {("WardEquipmentMissing", "webcam"), ("WardVideoNotReady", "video")},
    # Its 5 % loss also fails the call preset's 15 s window target (1 %); spread evenly,
    # not its 200 ms burst target (10 %).
    "lossy": {("WardLinkBelowRequirement", "loss"), ("WardVideoNotReady", "video"),
              ("WardCallWindowsFailing", "window_loss")},
    "few-pcs": {("WardEquipmentMissing", "pc")},
    "platform-down": {("WardPlatformUnreachable", "dms")},
    "no-ups": {("WardEquipmentMissing", "ups")},
    "slow-pcs": {("WardEquipmentMissing", "pc")},
    "no-printer": {("WardEquipmentMissing", "printer"), ("WardEquipmentMissing", "scanner")},
    "no-audio": {("WardEquipmentMissing", "microphone"), ("WardEquipmentMissing", "speaker"),
                 ("WardVideoNotReady", "video")},
    "old-network": {("WardDeviceBelowSpec", "router"), ("WardDeviceBelowSpec", "switch")},
    # Calls fail on blocked UDP; the link figures, from ICMP, are fine.
    "udp-blocked": {("WardVideoNotReady", "video")},
    # Six good counter PCs, but the conference-room PC is too weak for the calls.
    "room-pc-slow": {("WardVideoNotReady", "video")},
    # The conference-room PC's patch cable loses 5 % (to its gateway as to the server): its
    # calls fail, the weak segment is the LAN, and the list asks for a cable, not a link.
    # The ward's link, as its best PC measures it, is fine.
    "lan-cable": {("WardVideoNotReady", "video"), ("WardSegmentAtFault", "lan-loss")},
    "commune-thin": {("WardLinkBelowRequirement", "download"),
                     ("WardLinkBelowRequirement", "upload")},
    "no-agent": {("WardWithoutAgent", "")},
    # Reported once, long ago: a server whose max age has passed serves nothing of it.
    "silent": set(),
}
REPORTING_KINDS: tuple[Shortfall, ...] = tuple(
    k for k in EXPECTED if k not in ("ok", "no-agent", "silent", "commune-thin"))
"""Short kinds a ward-standard ward can be, through a live server."""


def inventory_yaml(wards: int = WARDS) -> str:
    """inventory.yml, with generated wards added up to `wards` when that is more than its
    168 (every fourth a commune): the benches' country-sized fleets of ~3,300."""
    doc = yaml.safe_load((REPO / "inventory.yml").read_text(encoding="utf-8"))
    groups = [g["id"] for g in doc["working_groups"]]
    for i in range(len(doc["wards"]) + 1, wards + 1):
        commune = i % 4 == 0
        doc["wards"].append({
            "id": f"gen-{i:03d}", "name": f"{'Xã' if commune else 'Phường'} Mô Phỏng {i}",
            "kind": "commune" if commune else "ward",
            "former_district": f"Huyện Mô Phỏng {i % 7 + 1}",
            "former_province": "Tỉnh Mô Phỏng", "working_group": groups[i % len(groups)],
            **({"profile": "commune-standard"} if commune else {})})
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def plan(inventory: Inventory, kinds: Sequence[Shortfall] = REPORTING_KINDS,
         every: int = 4) -> dict[str, Shortfall]:
    """Every ward's kind: one ward in `every` short, cycling through `kinds` (a commune's
    thin link on communes), the others healthy; two wards with no agent; and a ward of any
    other profile (the special zone's island-zone) healthy: a healthy ward-standard office
    meets it too."""
    chosen: dict[str, Shortfall] = {}
    standard = [w.id for w in inventory.wards if w.profile is None]
    communes = [w.id for w in inventory.wards if w.profile == "commune-standard"]
    for i, ward in enumerate(standard):
        chosen[ward] = kinds[(i // every) % len(kinds)] if i % every == 1 else "ok"
    for i, ward in enumerate(communes):
        chosen[ward] = "commune-thin" if i % every == 1 else "ok"
    for ward in (standard[2], communes[2]):
        chosen[ward] = "no-agent"
    return {w.id: chosen.get(w.id, "ok") for w in inventory.wards}


def pcs(shortfall: Shortfall) -> list[tuple[str, str]]:
    """(host, role) of the ward's reporting PCs."""
    if shortfall == "no-agent":
        return []
    count = {"few-pcs": 3, "room-pc-slow": PCS + 1}.get(shortfall, PCS)
    return [("room-pc", "conference-room")] + [
        (f"counter-{i:02d}", "counter") for i in range(1, count)]


def report(ward: str, pc: str, role: str, shortfall: Shortfall,
           at: float | None = None) -> dict[str, Any]:
    """One report of one PC, as its agent would send it; `at`: measured then (default now),
    as a report from an agent's spool is after an outage."""
    slow = ((shortfall == "slow-pcs" and pc in ("counter-01", "counter-02"))
            or (shortfall == "room-pc-slow" and pc == "room-pc"))
    facts = host.collect().model_copy(update={
        "cpu_logical_cores": 2 if slow else 8, "memory_total_bytes": (4 if slow else 16) * GIB,
        "power_supplies": []})
    if pc == "room-pc" and shortfall != "no-ups":
        facts = facts.model_copy(update={"power_supplies": [
            host.PowerSupply(name="ups-0", kind="ups", model="Back-UPS 1000")]})
    changes: dict[str, Any] = {"host": facts}
    if shortfall == "thin-link":
        changes["bandwidth"] = link(20, 40)  # the call's 4.2 fits, the ward's 50 does not
    if shortfall == "commune-thin":
        changes["bandwidth"] = link(15, 8)  # a commune needs 20 and 10
    # The continuous probe's interval, as every agent reports one a minute beside its rounds.
    changes["probe"] = probe_interval(lost=3 if shortfall == "lossy" else 0)
    if shortfall == "lossy":
        changes["media"] = udp(loss=0.05)
    if shortfall == "udp-blocked":
        changes["media"] = udp(reachable=False)
    if shortfall == "lan-cable" and pc == "room-pc":
        changes["media"] = udp(loss=0.05)
        changes["path"] = segments(gateway_lost=5, server_lost=5, loss_start=1)
    gear = kit(0 if shortfall == "no-webcam" or pc != "room-pc" else 1)
    printers, scanners = (1, 0) if shortfall == "no-printer" else (3, 2)
    counts = gear.counts | {"printer": printers, "scanner": scanners}
    # printers and scanners on the network: every PC sees them
    if pc != "room-pc" or shortfall == "no-audio":
        counts |= {"microphone": 0, "speaker": 0}
    changes["peripherals"] = gear.model_copy(update={"counts": counts})
    changes["platforms"] = platforms.Result(platforms=[
        platforms.PlatformProbe(id=p, url=f"https://{p}.hcmc.example/",
                                up=not (shortfall == "platform-down" and p == "dms"),
                                duration_seconds=0.05, http_status_code=200,
                                error="connection refused"
                                if shortfall == "platform-down" and p == "dms" else None)
        for p in PLATFORMS])
    if pc == "room-pc":  # the one agent per ward that polls the ward's router and switch
        changes["devices"] = network(shortfall == "old-network")
    body = pc_report(ward, pc, role, changes, at=at)
    if pc == "counter-02":  # a check that failed, as some always have
        body["outcomes"].append({"check": "neighbours", "started_at": body["generated_at"],
                                 "duration_seconds": 0.1, "ok": False,
                                 "error": "PermissionError: no raw socket"})
    return body


def network(old: bool) -> devices.Result:
    """The ward's edge router and core switch; when `old`, the router runs IOS 12.2 (out of
    support in inventory.yml) and the switch has a port at 100 Mbit/s."""
    def port(name: str, mbps: float, up: bool = True) -> devices.Interface:
        return devices.Interface(name=name, admin_up=True, oper_up=up,
                                 speed_bits_per_second=mbps * 1e6, full_duplex=True,
                                 crc_errors=0)
    return devices.Result(devices=[
        devices.DevicePoll(
            name="edge-router", address="10.10.1.1", device_type="cisco_ios", role="router",
            up=True, duration_seconds=2.0, model="ISR4331" if not old else "C2911",
            os_version="12.2(55)SE" if old else "16.9.4", uptime_seconds=86400.0,
            # A tunnel's "speed" is its configured bandwidth: never held to the port speed.
            interfaces=[port("GigabitEthernet0/0/0", 1000), port("Tunnel1", 0.1),
                        port("GigabitEthernet0/0/1", 10, up=False)]),
        devices.DevicePoll(
            name="core-switch", address="10.10.1.2", device_type="arista_eos", role="switch",
            up=True, duration_seconds=2.0, model="DCS-7010T", os_version="4.28.3M",
            uptime_seconds=86400.0,
            interfaces=[port("Ethernet1", 1000), port("Ethernet2", 100 if old else 1000),
                        port("Management1", 100), port("Vlan1", 0)])])


def pc_report(ward: str, pc: str, role: str | None, changes: dict[str, Any],
              agent_version: str = "0.1.0", at: float | None = None) -> dict[str, Any]:
    """A report of a clean fast PC with the kit (tests/test_readiness.py), but for
    `changes` (check name -> result), generated and measured at `at` (default now)."""
    now = time.time() if at is None else at
    outcomes = [{"check": name, "started_at": now, "duration_seconds": 1.0, "ok": True,
                 "result": result.model_dump(mode="json")}
                for name, result in results(**changes).items()]
    return {"schema_version": 1, "id": str(uuid.uuid4()), "ward": ward, "host": pc,
            "role": role, "agent_version": agent_version, "generated_at": now,
            "outcomes": outcomes}

