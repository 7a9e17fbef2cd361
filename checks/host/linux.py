"""The hardware as Linux tells it: DMI, block devices and power supplies in sysfs."""

from __future__ import annotations

from pathlib import Path

from wardready.checks.host.hardware import (
    MAX_DISKS,
    MAX_POWER_SUPPLIES,
    DiskKind,
    Hardware,
    PhysicalDisk,
    PowerKind,
    PowerSupply,
    iso_date,
    on_battery,
)
from wardready.checks.sysfs import Unreadable, attr, attr_int, entries, firmware_text, tree_problem


def hardware(sys_root: Path) -> Hardware:
    """What DMI and sysfs under `sys_root` say; a tree that cannot be read is noted, not raised."""
    unreadable: list[Unreadable] = []
    dmi = sys_root / "class" / "dmi" / "id"
    if problem := tree_problem(dmi):
        # ARM boards and some VMs have no DMI; the fields stay unknown, and the report says why
        unreadable.append(Unreadable(source="dmi", reason=problem))
    disks = supplies = None
    if problem := tree_problem(sys_root, "class"):
        unreadable.append(Unreadable(source="sysfs", reason=problem))
    else:
        disks = _disks(sys_root)
        supplies = _power_supplies(sys_root)
    return Hardware(
        manufacturer=firmware_text(attr(dmi / "sys_vendor")),
        model=firmware_text(attr(dmi / "product_name")),
        serial=firmware_text(attr(dmi / "product_serial")),  # root-only: None for other users
        bios_vendor=firmware_text(attr(dmi / "bios_vendor")),
        bios_version=firmware_text(attr(dmi / "bios_version")),
        bios_date=iso_date(attr(dmi / "bios_date")),
        physical_disks=disks,
        power_supplies=supplies,
        on_battery=on_battery(supplies or []),
        unreadable=unreadable,
    )


NOT_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")
"""Block devices that are not physical disks: virtual, RAID/LVM layers, optical, floppy."""


def _disks(sys_root: Path) -> list[PhysicalDisk]:
    disks = []
    for block in entries(sys_root / "block"):
        sectors = attr_int(block / "size")
        if block.name.startswith(NOT_DISKS) or not sectors:
            continue  # a card reader with no card has size 0
        device = block / "device"
        nvme = block.name.startswith("nvme")
        rotational = attr(block / "queue" / "rotational")
        if nvme or rotational == "0":
            kind: DiskKind = "ssd"
        elif rotational == "1" and block.name.startswith(("sd", "hd")):
            kind = "hdd"  # only SCSI/ATA read the rotation rate; virtio and others say 1 blindly
        else:
            kind = "unknown"
        disks.append(PhysicalDisk(
            name=block.name,
            model=firmware_text(attr(device / "model") or attr(device / "name")),
            serial=firmware_text(attr(block / "serial") or attr(device / "serial")
                         or _vpd_serial(device / "vpd_pg80")),
            size_bytes=sectors * 512,  # sysfs counts 512-byte sectors whatever the disk's own
            kind=kind,
            bus=_bus(block),
            removable=attr(block / "removable") == "1",
        ))
    return disks[:MAX_DISKS]


def _vpd_serial(path: Path) -> str | None:
    """The unit serial number of a SCSI/ATA disk: VPD page 0x80 is a 4-byte header, then text."""
    try:
        page = path.read_bytes()
    except OSError:
        return None
    return page[4:4 + page[3]].decode("ascii", "replace").strip() if len(page) > 4 else None


def _bus(block: Path) -> str | None:
    try:
        path = str(block.resolve())
    except OSError:
        return None
    for marker, bus in (("/usb", "usb"), ("/nvme", "nvme"), ("/ata", "sata"),
                        ("/virtio", "virtio"), ("/mmc", "mmc")):
        if marker in path:
            return bus
    return None


POWER_KINDS: dict[str, PowerKind] = {"Battery": "battery", "UPS": "ups", "Mains": "mains"}


def _power_supplies(sys_root: Path) -> list[PowerSupply]:
    supplies = []
    for supply in entries(sys_root / "class" / "power_supply"):
        kind = POWER_KINDS.get(attr(supply / "type") or "")
        if kind is None or attr(supply / "scope") == "Device":
            continue  # USB-C ports, and the batteries of wireless mice and headsets
        online = attr_int(supply / "online")
        capacity = attr_int(supply / "capacity")
        supplies.append(PowerSupply(
            name=supply.name, kind=kind,
            model=firmware_text(attr(supply / "model_name")),
            manufacturer=firmware_text(attr(supply / "manufacturer")),
            serial=firmware_text(attr(supply / "serial_number")),
            online=None if online is None else online == 1,
            status=attr(supply / "status"),
            charge_ratio=None if capacity is None else min(max(capacity, 0), 100) / 100,
        ))
    return supplies[:MAX_POWER_SUPPLIES]
