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
from typing import Any, Literal

from checks import devices, host, platforms
from tests.test_readiness import kit, link, results, udp

Shortfall = Literal["ok", "thin-link", "no-webcam", "lossy", "few-pcs", "platform-down",
                    "no-ups", "no-agent"]
PCS = 6
GIB = 2**30
PLATFORMS = ("video-bridge", "dms", "portal-1022", "procedures")

EXPECTED: dict[Shortfall, set[tuple[str, str]]] = {
    # What Prometheus must flag for a ward of each kind: (alert, criterion / item / platform).
    "ok": set(),
    "thin-link": {("WardLinkBelowRequirement", "download")},
    "no-webcam": {("WardEquipmentMissing", "webcam"), ("WardVideoNotReady", "video")},
    "lossy": {("WardLinkBelowRequirement", "loss"), ("WardVideoNotReady", "video")},
    "few-pcs": {("WardEquipmentMissing", "pc")},
    "platform-down": {("WardPlatformUnreachable", "dms")},
    "no-ups": {("WardEquipmentMissing", "ups")},
    "no-agent": {("WardWithoutAgent", "")},
}


def pcs(shortfall: Shortfall) -> list[tuple[str, str]]:
    """(host, role) of the ward's reporting PCs."""
    if shortfall == "no-agent":
        return []
    count = 3 if shortfall == "few-pcs" else PCS
    return [("room-pc", "conference-room")] + [
        (f"counter-{i:02d}", "counter") for i in range(1, count)]


def report(ward: str, pc: str, role: str, shortfall: Shortfall) -> dict[str, Any]:
    """One report of one PC, as its agent would send it."""
    facts = host.collect().model_copy(update={
        "cpu_logical_cores": 8, "memory_total_bytes": 16 * GIB})
    if pc == "room-pc" and shortfall != "no-ups":
        facts = facts.model_copy(update={"power_supplies": [
            host.PowerSupply(name="ups-0", kind="ups", model="Back-UPS 1000")]})
    changes: dict[str, Any] = {"host": facts}
    if shortfall == "thin-link":
        changes["bandwidth"] = link(20, 40)  # the call's 4.2 fits, the ward's 50 does not
    if shortfall == "lossy":
        changes["media"] = udp(loss=0.05)
    gear = kit(0 if shortfall == "no-webcam" or pc != "room-pc" else 1)
    counts = dict(gear.counts, printer=3, scanner=2)  # network printers, seen by every PC
    if pc != "room-pc":
        counts.update(microphone=0, speaker=0)
    changes["peripherals"] = gear.model_copy(update={"counts": counts})
    changes["platforms"] = platforms.Result(platforms=[
        platforms.PlatformProbe(id=p, url=f"https://{p}.hcmc.example/",
                                up=not (shortfall == "platform-down" and p == "dms"),
                                duration_seconds=0.05, http_status_code=200)
        for p in PLATFORMS])
    if pc == "room-pc":  # the one agent per ward that polls the ward's router
        changes["devices"] = devices.Result(devices=[devices.DevicePoll(
            name="edge-router", address="10.10.1.1", device_type="cisco_ios", role="router",
            up=True, duration_seconds=2.0, model="ISR4331", os_version="16.9.4",
            uptime_seconds=86400.0, interfaces=[devices.Interface(
                name="GigabitEthernet0/0/0", admin_up=True, oper_up=True,
                speed_bits_per_second=1e9, full_duplex=True, crc_errors=0)])])
    body = pc_report(ward, pc, role, changes)
    if pc == "counter-02":  # a check that failed, as some always have
        body["outcomes"].append({"check": "neighbours", "started_at": body["generated_at"],
                                 "duration_seconds": 0.1, "ok": False,
                                 "error": "PermissionError: no raw socket"})
    return body


def pc_report(ward: str, pc: str, role: str | None, changes: dict[str, Any],
              agent_version: str = "0.1.0") -> dict[str, Any]:
    """A report of a clean fast PC with the kit (tests/test_readiness.py), but for
    `changes` (check name -> result)."""
    now = time.time()
    outcomes = [{"check": name, "started_at": now, "duration_seconds": 1.0, "ok": True,
                 "result": result.model_dump(mode="json")}
                for name, result in results(**changes).items()]
    return {"schema_version": 1, "id": str(uuid.uuid4()), "ward": ward, "host": pc,
            "role": role, "agent_version": agent_version, "generated_at": now,
            "outcomes": outcomes}


def plan(wards: list[str]) -> dict[str, Shortfall]:
    """Every ward's kind: a few of each shortfall, spread over the list, the rest healthy."""
    kinds: list[Shortfall] = ["thin-link", "no-webcam", "lossy", "few-pcs", "platform-down",
                              "no-ups", "no-agent"]
    chosen: dict[str, Shortfall] = {}
    for i, ward in enumerate(wards):
        chosen[ward] = kinds[(i // 7) % len(kinds)] if i % 7 == 3 else "ok"
    return chosen
