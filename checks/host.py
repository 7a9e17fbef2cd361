"""Host inventory: CPU, memory, filesystems, network interfaces, OS and boot time through
psutil; maker, model, serial, BIOS, physical disks and power supplies (battery, UPS, mains)
from what the OS says: DMI, block devices and power supplies in sysfs on Linux, CIM on
Windows."""

from __future__ import annotations

import asyncio
import platform
import re
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import Field

from wardready.checks.base import (
    CheckResult,
    CheckSpec,
    Context,
    InventoryItem,
    ResultModel,
)
from wardready.checks.sysfs import (
    OsSources,
    Unreadable,
    attr,
    attr_int,
    entries,
    firmware_text,
    os_family,
    text,
    tree_problem,
    windows_query,
)
from wardready.core.metrics import MetricSpec, Sample

MAX_DISKS = 32
MAX_NICS = 64
MAX_POWER_SUPPLIES = 16
"""Bounds that keep label cardinality (and report size) finite on odd machines."""


class Config(OsSources):
    """Host inventory settings; the OS's trees and recorded Windows answers are injectable so
    tests can use fixtures."""

    sys_root: str = "/sys"


class Disk(ResultModel):
    mountpoint: str
    device: str
    fstype: str
    size_bytes: int
    free_bytes: int


class Nic(ResultModel):
    name: str
    mac: str | None
    up: bool
    speed_bits_per_second: int | None
    """None when the driver does not say (psutil reports 0)."""
    mtu: int
    addresses: list[str] = Field(max_length=64)


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


class Result(Hardware, CheckResult):
    os: str
    os_version: str
    kernel: str
    arch: str
    os_hostname: str
    cpu_model: str
    cpu_logical_cores: int
    cpu_physical_cores: int | None
    cpu_max_frequency_hertz: float | None
    memory_total_bytes: int
    memory_available_bytes: int
    swap_total_bytes: int
    boot_time_seconds: float
    disks: list[Disk] = Field(max_length=MAX_DISKS)
    nics: list[Nic] = Field(max_length=MAX_NICS)


async def run(config: Config, context: Context) -> Result:
    """Read the host's facts (in a thread: psutil calls, file reads and PowerShell block)."""
    return await asyncio.to_thread(collect, config)


def collect(config: Config | None = None) -> Result:
    """Read the host's facts synchronously."""
    config = config or Config()
    family = os_family(config.os)
    if family == "linux":
        hardware = _linux_hardware(Path(config.sys_root))
    elif family == "windows":
        hardware = _windows_hardware(config.windows_recorded, config.timeout_seconds)
    else:
        hardware = Hardware(power_supplies=_psutil_battery(), on_battery=_psutil_on_battery())
    freq = psutil.cpu_freq()
    max_mhz = (freq.max or freq.current) if freq else 0.0
    memory = psutil.virtual_memory()
    return Result(
        **dict(hardware),
        os=platform.system(),
        os_version=_os_version(),
        kernel=platform.release(),
        arch=platform.machine(),
        os_hostname=socket.gethostname(),
        cpu_model=_cpu_model(Path(config.proc_root)),
        cpu_logical_cores=psutil.cpu_count(logical=True) or 1,
        cpu_physical_cores=psutil.cpu_count(logical=False),
        cpu_max_frequency_hertz=max_mhz * 1e6 if max_mhz else None,
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        swap_total_bytes=psutil.swap_memory().total,
        boot_time_seconds=psutil.boot_time(),
        disks=_disks(),
        nics=_nics(),
    )


def _os_version() -> str:
    if platform.system() == "Linux":
        try:
            return platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
        except OSError:
            return "Linux"
    return f"{platform.system()} {platform.version()}".strip()


def _cpu_model(proc_root: Path) -> str:
    try:
        for line in (proc_root / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass  # not Linux: fall through to what the platform module says
    return platform.processor() or "unknown"


def _disks() -> list[Disk]:
    disks: dict[str, Disk] = {}
    for part in psutil.disk_partitions(all=False):
        if part.device in disks or len(disks) >= MAX_DISKS:
            continue  # bind mounts repeat a device; keep its first mountpoint
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue  # unreadable or vanished mount (e.g. an empty card reader)
        disks[part.device] = Disk(mountpoint=part.mountpoint, device=part.device,
                                  fstype=part.fstype, size_bytes=usage.total,
                                  free_bytes=usage.free)
    return sorted(disks.values(), key=lambda d: d.mountpoint)


def _nics() -> list[Nic]:
    addrs = psutil.net_if_addrs()
    nics = []
    for name, stats in sorted(psutil.net_if_stats().items()):
        if "loopback" in getattr(stats, "flags", "") or name == "lo":
            continue
        mac = next((a.address for a in addrs.get(name, []) if a.family == psutil.AF_LINK), None)
        ips = [a.address for a in addrs.get(name, [])
               if a.family in (socket.AF_INET, socket.AF_INET6)]
        nics.append(Nic(name=name, mac=mac, up=stats.isup,
                        speed_bits_per_second=stats.speed * 1_000_000 if stats.speed > 0 else None,
                        mtu=stats.mtu, addresses=ips))
    return nics[:MAX_NICS]


# -- What the OS says of the hardware ----------------------------------------------------------

def _linux_hardware(sys_root: Path) -> Hardware:
    unreadable: list[Unreadable] = []
    dmi = sys_root / "class" / "dmi" / "id"
    if problem := tree_problem(dmi):
        # ARM boards and some VMs have no DMI; the fields stay unknown, and the report says why
        unreadable.append(Unreadable(source="dmi", reason=problem))
    disks = supplies = None
    if problem := tree_problem(sys_root, "class"):
        unreadable.append(Unreadable(source="sysfs", reason=problem))
    else:
        disks = _linux_disks(sys_root)
        supplies = _linux_power_supplies(sys_root)
    return Hardware(
        manufacturer=firmware_text(attr(dmi / "sys_vendor")),
        model=firmware_text(attr(dmi / "product_name")),
        serial=firmware_text(attr(dmi / "product_serial")),  # root-only: None for other users
        bios_vendor=firmware_text(attr(dmi / "bios_vendor")),
        bios_version=firmware_text(attr(dmi / "bios_version")),
        bios_date=_iso_date(attr(dmi / "bios_date")),
        physical_disks=disks,
        power_supplies=supplies,
        on_battery=_on_battery(supplies or []),
        unreadable=unreadable,
    )


NOT_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")
"""Block devices that are not physical disks: virtual, RAID/LVM layers, optical, floppy."""


def _linux_disks(sys_root: Path) -> list[PhysicalDisk]:
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


def _linux_power_supplies(sys_root: Path) -> list[PowerSupply]:
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


def _on_battery(supplies: list[PowerSupply]) -> bool | None:
    """Mains adapters decide when there are some (as psutil does); otherwise a discharging
    battery or UPS means the machine runs on it."""
    mains = [s.online for s in supplies if s.kind == "mains" and s.online is not None]
    if mains:
        return not any(mains)
    stored = [s.status for s in supplies if s.kind != "mains" and s.status]
    return any(status == "Discharging" for status in stored) if stored else None


def _psutil_battery() -> list[PowerSupply] | None:
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is None:
        return None  # psutil cannot tell "no battery" from "cannot read"
    return [PowerSupply(name="battery", kind="battery",
                        charge_ratio=min(max(battery.percent, 0), 100) / 100)]


def _psutil_on_battery() -> bool | None:
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    return None if battery is None or battery.power_plugged is None else not battery.power_plugged


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


def _windows_hardware(recorded: str | None, timeout: float) -> Hardware:
    unreadable: list[Unreadable] = []
    answers = {name: windows_query(name, command, recorded, timeout / len(WINDOWS_QUERIES),
                                   unreadable)
               for name, command in WINDOWS_QUERIES.items()}
    system = (answers["computer_system"] or [{}])[0]
    bios = (answers["bios"] or [{}])[0]
    disks = answers["physical_disks"]
    batteries = answers["battery"]
    supplies = None if batteries is None else [_windows_battery(b) for b in batteries]
    return Hardware(
        manufacturer=firmware_text(system.get("Manufacturer")),
        model=firmware_text(system.get("Model")),
        serial=firmware_text(bios.get("SerialNumber")),
        bios_vendor=firmware_text(bios.get("Manufacturer")),
        bios_version=firmware_text(bios.get("SMBIOSBIOSVersion")),
        bios_date=_iso_date(bios.get("ReleaseDate")),
        physical_disks=None if disks is None else [_windows_disk(d) for d in disks][:MAX_DISKS],
        power_supplies=None if supplies is None else supplies[:MAX_POWER_SUPPLIES],
        on_battery=_on_battery(supplies or []),
        unreadable=unreadable,
    )


def _windows_disk(disk: dict[str, Any]) -> PhysicalDisk:
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


def _windows_battery(battery: dict[str, Any]) -> PowerSupply:
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


_DMTF = re.compile(r"^(\d{4})(\d{2})(\d{2})\d{6}")
_JSON_DATE = re.compile(r"^/Date\((-?\d+)\)/$")
_US_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")


def _iso_date(value: object) -> str | None:
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


INFO = MetricSpec("wardready_host_info", "Host facts: operating system, CPU model, architecture.",
                  ("os", "os_version", "kernel", "arch", "cpu_model"))
CPU_LOGICAL = MetricSpec("wardready_host_cpu_logical_cores", "Logical CPU cores.")
CPU_PHYSICAL = MetricSpec("wardready_host_cpu_physical_cores", "Physical CPU cores.")
CPU_FREQ = MetricSpec("wardready_host_cpu_max_frequency_hertz", "Highest CPU frequency known.")
MEM_TOTAL = MetricSpec("wardready_host_memory_total_bytes", "Physical memory.")
MEM_AVAILABLE = MetricSpec("wardready_host_memory_available_bytes",
                           "Memory available to programs without swapping.")
BOOT_TIME = MetricSpec("wardready_host_boot_time_seconds", "Boot time, seconds since the epoch.")
DISK_SIZE = MetricSpec("wardready_host_disk_size_bytes", "Size of a mounted filesystem.",
                       ("mountpoint", "device", "fstype"))
DISK_FREE = MetricSpec("wardready_host_disk_free_bytes", "Free space on a mounted filesystem.",
                       ("mountpoint",))
NIC_INFO = MetricSpec("wardready_host_nic_info", "Network interface facts.", ("nic", "mac"))
NIC_UP = MetricSpec("wardready_host_nic_up", "1 if the network interface is up.", ("nic",))
NIC_SPEED = MetricSpec("wardready_host_nic_speed_bytes_per_second",
                       "Negotiated link speed, where the driver reports one.", ("nic",))
NIC_MTU = MetricSpec("wardready_host_nic_mtu_bytes", "Interface MTU.", ("nic",))
HARDWARE_INFO = MetricSpec("wardready_host_hardware_info",
                           "What the firmware says of the machine; empty where it does not tell.",
                           ("manufacturer", "model", "serial", "bios_vendor", "bios_version",
                            "bios_date"))
PHYSICAL_DISK_INFO = MetricSpec("wardready_host_physical_disk_info",
                                "A physical disk: model, serial, kind (ssd, hdd, unknown), bus.",
                                ("disk", "model", "serial", "kind", "bus"))
PHYSICAL_DISK_SIZE = MetricSpec("wardready_host_physical_disk_size_bytes",
                                "Capacity of a physical disk.", ("disk",))
PHYSICAL_DISK_REMOVABLE = MetricSpec("wardready_host_physical_disk_removable",
                                     "1 if the OS flags the physical disk as removable.",
                                     ("disk",))
POWER_SUPPLIES = MetricSpec("wardready_host_power_supplies",
                            "Power supplies the OS sees, by kind (battery, ups, mains); absent "
                            "when it could not be read. A UPS seen only by its own software "
                            "(e.g. NUT over USB) is not counted.", ("kind",))
POWER_SUPPLY_INFO = MetricSpec("wardready_host_power_supply_info",
                               "A battery, UPS or mains adapter the OS sees.",
                               ("supply", "kind", "model"))
BATTERY_CHARGE = MetricSpec("wardready_host_battery_charge_ratio",
                            "Charge of a battery or UPS, 0 to 1.", ("supply",))
ON_BATTERY = MetricSpec("wardready_host_on_battery",
                        "1 if the machine runs on a battery or UPS, 0 on mains; absent when "
                        "the OS does not say.")

METRICS = (INFO, CPU_LOGICAL, CPU_PHYSICAL, CPU_FREQ, MEM_TOTAL, MEM_AVAILABLE, BOOT_TIME,
           DISK_SIZE, DISK_FREE, NIC_INFO, NIC_UP, NIC_SPEED, NIC_MTU, HARDWARE_INFO,
           PHYSICAL_DISK_INFO, PHYSICAL_DISK_SIZE, PHYSICAL_DISK_REMOVABLE, POWER_SUPPLIES,
           POWER_SUPPLY_INFO, BATTERY_CHARGE, ON_BATTERY)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one host inventory result."""
    r = result
    yield Sample(INFO, (r.os, r.os_version, r.kernel, r.arch, r.cpu_model), 1)
    yield Sample(CPU_LOGICAL, (), r.cpu_logical_cores)
    if r.cpu_physical_cores is not None:
        yield Sample(CPU_PHYSICAL, (), r.cpu_physical_cores)
    if r.cpu_max_frequency_hertz is not None:
        yield Sample(CPU_FREQ, (), r.cpu_max_frequency_hertz)
    yield Sample(MEM_TOTAL, (), r.memory_total_bytes)
    yield Sample(MEM_AVAILABLE, (), r.memory_available_bytes)
    yield Sample(BOOT_TIME, (), r.boot_time_seconds)
    for d in r.disks:
        yield Sample(DISK_SIZE, (d.mountpoint, d.device, d.fstype), d.size_bytes)
        yield Sample(DISK_FREE, (d.mountpoint,), d.free_bytes)
    for n in r.nics:
        yield Sample(NIC_INFO, (n.name, n.mac or ""), 1)
        yield Sample(NIC_UP, (n.name,), 1 if n.up else 0)
        if n.speed_bits_per_second is not None:
            yield Sample(NIC_SPEED, (n.name,), n.speed_bits_per_second / 8)
        yield Sample(NIC_MTU, (n.name,), n.mtu)
    yield from _hardware_samples(r)


def _hardware_samples(r: Result) -> Iterator[Sample]:
    facts = (r.manufacturer, r.model, r.serial, r.bios_vendor, r.bios_version, r.bios_date)
    if any(facts):
        yield Sample(HARDWARE_INFO, tuple(f or "" for f in facts), 1)
    for d in r.physical_disks or []:
        yield Sample(PHYSICAL_DISK_INFO, (d.name, d.model or "", d.serial or "", d.kind,
                                          d.bus or ""), 1)
        if d.size_bytes is not None:
            yield Sample(PHYSICAL_DISK_SIZE, (d.name,), d.size_bytes)
        if d.removable is not None:
            yield Sample(PHYSICAL_DISK_REMOVABLE, (d.name,), 1 if d.removable else 0)
    if r.power_supplies is not None:
        for kind in ("battery", "ups", "mains"):
            yield Sample(POWER_SUPPLIES, (kind,),
                         sum(1 for s in r.power_supplies if s.kind == kind))
        for s in r.power_supplies:
            yield Sample(POWER_SUPPLY_INFO, (s.name, s.kind, s.model or ""), 1)
            if s.charge_ratio is not None:
                yield Sample(BATTERY_CHARGE, (s.name,), s.charge_ratio)
    if r.on_battery is not None:
        yield Sample(ON_BATTERY, (), 1 if r.on_battery else 0)


def inventory(result: Result) -> dict[str, list[InventoryItem]]:
    """The host, its physical disks and its UPSes by kind, for the server's equipment history;
    disks and UPSes only when the OS's lists could be read."""
    r = result
    items = {"host": [InventoryItem("host", r.serial or r.os_hostname, _facts(
        manufacturer=r.manufacturer, model=r.model, cpu_model=r.cpu_model,
        memory_gib=str(round(r.memory_total_bytes / 2**30)), bios_version=r.bios_version))]}
    if r.physical_disks is not None:
        items["disk"] = [
            InventoryItem("disk", d.serial or f"{d.model or d.name}:{d.size_bytes or 0}",
                          _facts(model=d.model, size_bytes=str(d.size_bytes or 0), kind=d.kind))
            for d in r.physical_disks]
    if r.power_supplies is not None:
        items["ups"] = [InventoryItem("ups", s.serial or s.model or s.name,
                                      _facts(model=s.model, manufacturer=s.manufacturer))
                        for s in r.power_supplies if s.kind == "ups"]
    return items


def _facts(**facts: str | None) -> tuple[tuple[str, str], ...]:
    """Known facts only: an unknown one is absent rather than an empty string."""
    return tuple((key, value) for key, value in facts.items() if value is not None)


CHECK = CheckSpec(name="host", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, inventory=inventory)
