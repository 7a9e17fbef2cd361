"""The hardware as Windows tells it: CIM and Storage cmdlets through PowerShell, or their
recordings (see `checks.oswin`)."""

from __future__ import annotations

import re
from typing import Any

from wardready.checks.host.hardware import (
    MAX_DISKS,
    MAX_POWER_SUPPLIES,
    DiskKind,
    Hardware,
    PhysicalDisk,
    PowerSupply,
    iso_date,
    on_battery,
)
from wardready.checks.sysfs import Unreadable, firmware_text, text, windows_query

WINDOWS_QUERIES = {
    "computer_system": "Get-CimInstance Win32_ComputerSystem | "
                       "Select-Object Manufacturer,Model | ConvertTo-Json",
    "bios": "Get-CimInstance Win32_BIOS | Select-Object Manufacturer,SerialNumber,"
            "SMBIOSBIOSVersion,ReleaseDate | ConvertTo-Json",
    "physical_disks": "Get-PhysicalDisk | Select-Object DeviceId,FriendlyName,SerialNumber,"
                      "MediaType,Size,BusType | ConvertTo-Json",
    "battery": "Get-CimInstance Win32_Battery | Select-Object Name,DeviceID,BatteryStatus,"
               "EstimatedChargeRemaining | ConvertTo-Json",
}
"""Named Windows queries; their recordings are `<name>.json` (see `checks.oswin`)."""

MEDIA_TYPES: dict[Any, DiskKind] = {"SSD": "ssd", 4: "ssd", "SCM": "ssd", 5: "ssd",
                                    "HDD": "hdd", 3: "hdd"}
"""MSFT_PhysicalDisk.MediaType, as the Storage module names it or as the raw CIM number."""
BUS_TYPES = {7: "USB", 8: "RAID", 10: "SAS", 11: "SATA", 12: "SD", 13: "MMC", 14: "Virtual",
             17: "NVMe"}
"""MSFT_PhysicalDisk.BusType numbers, for recordings made without the Storage module's names."""
BATTERY_STATUS = {1: "Discharging", 2: "AC", 3: "Full", 4: "Low", 5: "Critical", 6: "Charging",
                  7: "Charging", 8: "Charging", 9: "Charging", 11: "Partially charged"}
"""Win32_Battery.BatteryStatus: 1 means discharging, 2 means on AC (not necessarily charging)."""
UPS_NAME = re.compile(r"\bUPS\b|Back-?UPS|Smart-?UPS", re.IGNORECASE)
"""Windows lists a USB HID UPS as a Win32_Battery; its name is the only hint it is one."""


def hardware(recorded: str | None, timeout: float) -> Hardware:
    """What the queries (or their recordings in `recorded`) say, each query within its share
    of `timeout`."""
    unreadable: list[Unreadable] = []
    answers = {name: windows_query(name, command, recorded, timeout / len(WINDOWS_QUERIES),
                                   unreadable)
               for name, command in WINDOWS_QUERIES.items()}
    system = (answers["computer_system"] or [{}])[0]
    bios = (answers["bios"] or [{}])[0]
    disks = answers["physical_disks"]
    batteries = answers["battery"]
    supplies = None if batteries is None else [_battery(b) for b in batteries]
    return Hardware(
        manufacturer=firmware_text(system.get("Manufacturer")),
        model=firmware_text(system.get("Model")),
        serial=firmware_text(bios.get("SerialNumber")),
        bios_vendor=firmware_text(bios.get("Manufacturer")),
        bios_version=firmware_text(bios.get("SMBIOSBIOSVersion")),
        bios_date=iso_date(bios.get("ReleaseDate")),
        physical_disks=None if disks is None else [_disk(d) for d in disks][:MAX_DISKS],
        power_supplies=None if supplies is None else supplies[:MAX_POWER_SUPPLIES],
        on_battery=on_battery(supplies or []),
        unreadable=unreadable,
    )


def _disk(disk: dict[str, Any]) -> PhysicalDisk:
    bus = disk.get("BusType")
    bus_name = BUS_TYPES.get(bus) if isinstance(bus, int) else text(bus)
    kind = "ssd" if bus_name == "NVMe" else MEDIA_TYPES.get(disk.get("MediaType"), "unknown")
    size = disk.get("Size")
    return PhysicalDisk(
        name=f"PhysicalDisk{text(disk.get('DeviceId')) or '?'}",
        model=firmware_text(disk.get("FriendlyName")),
        serial=firmware_text(disk.get("SerialNumber")),
        size_bytes=size if isinstance(size, int) and size > 0 else None,
        kind=kind,
        bus=bus_name.lower() if bus_name else None,
        removable=None if bus_name is None else bus_name in ("USB", "SD", "MMC"),
    )


def _battery(battery: dict[str, Any]) -> PowerSupply:
    name = text(battery.get("Name")) or text(battery.get("DeviceID")) or "battery"
    charge = battery.get("EstimatedChargeRemaining")
    status = battery.get("BatteryStatus")
    return PowerSupply(
        name=name, kind="ups" if UPS_NAME.search(name) else "battery",
        model=firmware_text(battery.get("Name")),
        serial=firmware_text(battery.get("DeviceID")),
        status=BATTERY_STATUS.get(status) if isinstance(status, int) else None,
        charge_ratio=min(max(charge, 0), 100) / 100 if isinstance(charge, int) else None,
    )
