"""What the OS says of the machine itself, whichever OS says it: the shape `linux` and
`windows` fill in, and the readings they share."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import Field

from wardready.checks.base import ResultModel
from wardready.checks.sysfs import Unreadable, text

MAX_DISKS = 32
MAX_POWER_SUPPLIES = 16
"""Bounds that keep label cardinality (and report size) finite on odd machines."""

DiskKind = Literal["ssd", "hdd", "unknown"]
PowerKind = Literal["battery", "ups", "mains"]


class PhysicalDisk(ResultModel):
    name: str
    """The OS's name: `sda`, `nvme0n1` on Linux; `PhysicalDisk0` on Windows."""
    model: str | None
    serial: str | None
    size_bytes: int | None
    kind: DiskKind
    removable: bool | None = None
    bus: str | None = None
    """e.g. `sata`, `nvme`, `usb`, `virtio`, where the OS tells."""


class PowerSupply(ResultModel):
    name: str
    kind: PowerKind
    model: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    online: bool | None = None
    """Mains: whether it feeds the machine."""
    status: str | None = None
    """Battery or UPS: `Charging`, `Discharging`, `Full`, ... as the OS says."""
    charge_ratio: float | None = Field(default=None, ge=0, le=1)


class Hardware(ResultModel):
    """What the OS says of the machine itself. Every field has a default: the server
    re-validates reports stored before these fields existed, and for them all is unknown."""

    manufacturer: str | None = None
    model: str | None = None
    """The product name, e.g. `OptiPlex 7090`."""
    serial: str | None = None
    bios_vendor: str | None = None
    bios_version: str | None = None
    bios_date: str | None = None
    """ISO 8601 date, e.g. `2021-05-06`."""
    physical_disks: list[PhysicalDisk] | None = Field(default=None, max_length=MAX_DISKS)
    """None when the OS's list could not be read (unknown, not "no disk")."""
    power_supplies: list[PowerSupply] | None = Field(default=None,
                                                     max_length=MAX_POWER_SUPPLIES)
    """Batteries, UPSes and mains adapters the OS sees; None when it could not be read."""
    on_battery: bool | None = None
    """True when the machine runs on a battery or UPS; None when the OS does not say."""
    unreadable: list[Unreadable] = Field(default_factory=list, max_length=16)
    """Sources of the fields above that could not be read, and why."""


def on_battery(supplies: list[PowerSupply]) -> bool | None:
    """Mains adapters decide when there are some (as psutil does); otherwise a discharging
    battery or UPS means the machine runs on it."""
    mains = [s.online for s in supplies if s.kind == "mains" and s.online is not None]
    if mains:
        return not any(mains)
    stored = [s.status for s in supplies if s.kind != "mains" and s.status]
    return any(status == "Discharging" for status in stored) if stored else None


_DMTF = re.compile(r"^(\d{4})(\d{2})(\d{2})\d{6}")
_JSON_DATE = re.compile(r"^/Date\((-?\d+)\)/$")
_US_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def iso_date(value: object) -> str | None:
    """A BIOS date as `YYYY-MM-DD`, from Linux DMI (`05/06/2021`), CIM through Windows
    PowerShell 5.1 (`/Date(1620259200000)/`), PowerShell 7 (ISO) or WMI (`20210506000000...`)."""
    raw = text(value)
    if raw is None:
        return None
    if match := _JSON_DATE.match(raw):
        return datetime.fromtimestamp(int(match[1]) / 1000, UTC).date().isoformat()
    if match := _US_DATE.match(raw):
        month, day, year = match.groups()
    elif match := _DMTF.match(raw) or _ISO.match(raw):
        year, month, day = match.groups()
    else:
        return None
    try:
        return date(int(year), int(month), int(day)).isoformat()
    except ValueError:
        return None  # e.g. 00/00/0000 from a firmware that never set it
