"""Host inventory through psutil: CPU, memory, disks, network interfaces, OS, boot time."""

from __future__ import annotations

import asyncio
import platform
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
from pydantic import Field

from checks.base import CheckConfig, CheckResult, CheckSpec, Context, ResultModel
from wardready.metrics import MetricSpec, Sample

MAX_DISKS = 32
MAX_NICS = 64
"""Bounds that keep label cardinality (and report size) finite on odd machines."""


class Config(CheckConfig):
    """Host inventory settings; the proc root is injectable so tests can use fixtures."""

    proc_root: str = "/proc"


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


class Result(CheckResult):
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
    """Read the host's facts (in a thread: psutil calls block)."""
    return await asyncio.to_thread(collect, Path(config.proc_root))


def collect(proc_root: Path = Path("/proc")) -> Result:
    """Read the host's facts synchronously."""
    freq = psutil.cpu_freq()
    max_mhz = (freq.max or freq.current) if freq else 0.0
    memory = psutil.virtual_memory()
    return Result(
        os=platform.system(),
        os_version=_os_version(),
        kernel=platform.release(),
        arch=platform.machine(),
        os_hostname=socket.gethostname(),
        cpu_model=_cpu_model(proc_root),
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

METRICS = (INFO, CPU_LOGICAL, CPU_PHYSICAL, CPU_FREQ, MEM_TOTAL, MEM_AVAILABLE, BOOT_TIME,
           DISK_SIZE, DISK_FREE, NIC_INFO, NIC_UP, NIC_SPEED, NIC_MTU)


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


CHECK = CheckSpec(name="host", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples)
