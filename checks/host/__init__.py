"""Host inventory: CPU, memory, filesystems, network interfaces, OS and boot time through
psutil; maker, model, serial, BIOS, physical disks and power supplies (battery, UPS, mains)
from what the OS says: DMI, block devices and power supplies in sysfs on Linux, CIM on
Windows.

The common part is here (config, result, psutil's facts, metrics); `hardware` holds what the
firmware says in any OS's terms, and `linux` and `windows` read it.
"""

from __future__ import annotations

import asyncio
import platform
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
from pydantic import Field

from wardready.checks.base import (
    CheckResult,
    CheckSpec,
    Context,
    InventoryItem,
    ResultModel,
)
from wardready.checks.host import linux, windows
from wardready.checks.host.hardware import (
    MAX_DISKS,
    MAX_POWER_SUPPLIES,
    DiskKind,
    Hardware,
    PhysicalDisk,
    PowerKind,
    PowerSupply,
)
from wardready.checks.sysfs import OsSources, os_family
from wardready.core.metrics import MetricSpec, Sample

MAX_NICS = 64
"""As the bounds in `hardware`: keeps the `nic` label cardinality (and report size) finite."""


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
        hardware = linux.hardware(Path(config.sys_root))
    elif family == "windows":
        hardware = windows.hardware(config.windows_recorded, config.timeout_seconds)
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


def _psutil_battery() -> list[PowerSupply] | None:
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is None:
        return None  # psutil cannot tell "no battery" from "cannot read"
    return [PowerSupply(name="battery", kind="battery",
                        charge_ratio=min(max(battery.percent, 0), 100) / 100)]


def _psutil_on_battery() -> bool | None:
    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    return None if battery is None or battery.power_plugged is None else not battery.power_plugged


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

__all__ = ["CHECK", "MAX_DISKS", "MAX_NICS", "MAX_POWER_SUPPLIES", "METRICS", "Config", "Disk",
           "DiskKind", "Hardware", "Nic", "PhysicalDisk", "PowerKind", "PowerSupply", "Result",
           "collect", "inventory", "run", "samples"]
