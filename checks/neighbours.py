"""LAN neighbours of the ward PC: who shares its subnet, with vendor and kind where it can tell.

Methods:
- `arp-sweep` (Linux, root or CAP_NET_RAW): an ARP request to every address of each up,
  non-loopback interface's own IPv4 subnet (never beyond it: not the network, broadcast or
  own address), through scapy in a thread of its own, `packets_per_second` at most, each
  unanswered request sent once more, `sweep_timeout_seconds` allowed for the last answers.
  A subnet with more than `max_addresses` hosts is swept only over the `max_addresses`
  addresses nearest the machine's own, and the result says so (`truncated`). Link-local
  subnets (169.254/16) are skipped: their addresses are self-assigned at random, so a partial
  sweep around our own finds nothing worth its packets.
- `neighbour-table`: what the OS already knows, sending nothing. Linux: complete entries
  (flag 0x2) of `<proc_root>/net/arp`. Windows: `Get-NetNeighbor -AddressFamily IPv4` in
  state Reachable, Stale or Permanent (see `WINDOWS_STATES`). It lists only hosts this PC
  has talked to lately, so it is a floor, not a census.
- `auto`: `arp-sweep` when the process may, else `neighbour-table`.

Vendor: the IEEE registration of the MAC's prefix (netaddr's bundled registry); None for a
locally administered MAC (phones' private addresses, VMs) or an unregistered prefix.

Kind ("printer", "ip-camera", "phone", "network" or "unknown"): a device answering a TCP
connect on a printing port (9100 JetDirect, 631 IPP, 515 LPD) is a printer, on 554 (RTSP) an
IP camera, whatever its vendor: its behaviour says more than its maker's name. Otherwise the
vendor decides through `VENDOR_KINDS`. The port probe (a connect per neighbour and port,
`PROBE_CONCURRENCY` at once) also makes the kernel resolve each neighbour, so after a probed
sweep the OS table holds them too; the sweep alone does not (Linux ignores ARP replies it
did not ask for unless `arp_accept` is set).

Metrics are per kind, never per neighbour (unbounded); each neighbour is in the result and,
keyed by MAC, in the inventory when the listing was complete (see `inventory`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import psutil
from pydantic import Field, StringConstraints, model_validator

from wardready.checks import oswin
from wardready.checks.base import (
    CheckResult,
    CheckSpec,
    Context,
    InventoryItem,
    ResultModel,
    in_thread,
)
from wardready.checks.sysfs import OsSources, os_family
from wardready.core.metrics import MetricSpec, Sample

Method = Literal["arp-sweep", "neighbour-table"]
MethodChoice = Literal["auto", "arp-sweep", "neighbour-table"]
Kind = Literal["printer", "ip-camera", "phone", "network", "unknown"]
KINDS: tuple[Kind, ...] = ("printer", "ip-camera", "phone", "network", "unknown")

MAX_NEIGHBOURS = 1024
MAX_INTERFACES = 16
MAX_SUBNETS = 8
"""Bounds on the report's size and on the sweeps run at once (one thread per subnet)."""
MAX_ADDRESSES = 4096
"""Upper bound of `max_addresses`: scapy holds every request of a sweep (~2.2 KB each)."""
PRINTER_PORTS = (9100, 631, 515)
CAMERA_PORTS = (554,)
PROBE_PORTS = (*PRINTER_PORTS, *CAMERA_PORTS)
PROBE_CONCURRENCY = 64
TABLE_TIMEOUT_SECONDS = 15.0
"""How long PowerShell may take to list the neighbour table."""
START_SLACK_SECONDS = 5.0
"""Importing scapy and listing interfaces, on a slow office PC."""

VENDOR_KINDS: tuple[tuple[Kind, tuple[str, ...]], ...] = (
    ("printer", ("canon", "epson", "brother", "kyocera", "ricoh", "xerox", "lexmark")),
    ("ip-camera", ("hikvision", "dahua", "axis", "uniview")),
    ("phone", ("apple", "samsung", "xiaomi", "oppo", "vivo", "huawei device")),
    # Routerboard.com is how MikroTik's prefixes are registered.
    ("network", ("cisco", "tp-link", "mikrotik", "routerboard", "ubiquiti", "juniper",
                 "aruba")),
)
"""Whole-word, case-insensitive keywords of the IEEE organisation name, first match wins.
Deliberately short: a maker whose name fits several kinds (HP/Hewlett Packard: printers,
PCs, switches; Huawei Technologies: phones and routers; Intel, Realtek: any PC) decides
nothing, and its devices stay "unknown" unless a port says more."""
_VENDOR_PATTERNS = tuple(
    (kind, re.compile(r"\b(?:" + "|".join(re.escape(k) for k in words) + r")\b", re.IGNORECASE))
    for kind, words in VENDOR_KINDS)

InterfaceName = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                                 pattern=r"^[^\x00-\x1f]+$")]


class Config(OsSources):
    """How to find neighbours; `os`, `proc_root` and `windows_recorded` (whose
    `netneighbor.json` is Windows' neighbour table) let tests replay recorded machines."""

    interval_seconds: float = Field(default=3600.0, gt=0)
    method: MethodChoice = "auto"
    interfaces: list[InterfaceName] = Field(default_factory=list, max_length=MAX_INTERFACES)
    """Interface names (Windows: aliases) to look at; empty means every up, non-loopback one."""
    max_addresses: int = Field(default=1024, ge=1, le=MAX_ADDRESSES)
    """Most addresses swept per subnet, the nearest to the machine's own."""
    packets_per_second: float = Field(default=200.0, gt=0, le=1000)
    """ARP requests per second on each interface (interfaces are swept side by side)."""
    sweep_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    """How long answers are awaited after the last request of each pass."""
    probe_ports: bool = True
    """TCP connect to each neighbour's printer and camera ports to tell its kind."""
    probe_timeout_seconds: float = Field(default=0.5, gt=0, le=5)

    @model_validator(mode="after")
    def _check(self) -> Config:
        needed = budget_seconds(self)
        if needed > self.timeout_seconds:
            raise ValueError(
                f"max_addresses, packets_per_second, sweep_timeout_seconds and the port probe "
                f"need up to {needed:g} s, more than timeout_seconds ({self.timeout_seconds:g})")
        return self


def budget_seconds(config: Config) -> float:
    """The longest a run can take: the slower way of listing, then probing the most
    neighbours a result holds when every probed port stays silent."""
    sweep = 2 * (config.max_addresses / config.packets_per_second
                 + config.sweep_timeout_seconds)  # a pass, then one more for the unanswered
    listing = max(sweep, TABLE_TIMEOUT_SECONDS)
    probing = 0.0
    if config.probe_ports:
        rounds = math.ceil(MAX_NEIGHBOURS * len(PROBE_PORTS) / PROBE_CONCURRENCY)
        probing = rounds * config.probe_timeout_seconds
    return START_SLACK_SECONDS + listing + probing


class SweptNetwork(ResultModel):
    """One subnet swept: the interface, its own address and network, how much was swept."""

    interface: str
    address: str
    network: str
    addresses_swept: int
    truncated: bool
    """The subnet has more hosts than `max_addresses`: only the nearest were swept."""
    error: str | None = None
    """Why the sweep of this subnet failed (e.g. the interface went away); None when it ran."""


class Neighbour(ResultModel):
    """One device seen on the LAN."""

    ip: str
    mac: str
    interface: str | None
    vendor: str | None = Field(max_length=128)
    kind: Kind
    kind_from: Literal["port", "vendor"] | None
    """What decided the kind: an open service port, the vendor's name, or nothing."""
    open_ports: list[int] = Field(max_length=len(PROBE_PORTS))


class Result(CheckResult):
    """The neighbours found and how they were found."""

    method: Method
    networks: list[SweptNetwork] = Field(max_length=MAX_SUBNETS)
    """What the sweep covered (empty for the neighbour table)."""
    missing_interfaces: list[str] = Field(max_length=MAX_INTERFACES)
    """Configured interfaces that were absent, down or without an IPv4 subnet to sweep."""
    truncated: bool
    """Part of the LAN is missing: a subnet swept in part or not at all (failed, or more
    subnets than `MAX_SUBNETS`), or more neighbours than the list holds."""
    duration_seconds: float
    neighbours: list[Neighbour] = Field(max_length=MAX_NEIGHBOURS)
    counts: dict[Kind, int]
    """Neighbours by kind, every kind present."""


# --- what the machine is attached to ----------------------------------------------------------

@dataclass(frozen=True)
class LocalNetwork:
    """An IPv4 subnet the machine has an address in, on an interface with a MAC."""

    interface: str
    mac: str
    address: ipaddress.IPv4Address
    network: ipaddress.IPv4Network


def local_networks(names: Sequence[str] = ()) -> tuple[list[LocalNetwork], list[str]]:
    """The subnets to sweep (of `names`, or of every up, non-loopback interface) and which
    of `names` gave none."""
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    found: list[LocalNetwork] = []
    for name in sorted(names or addrs):
        stat = stats.get(name)
        flags = getattr(stat, "flags", "").split(",")
        if stat is None or not stat.isup or "loopback" in flags or "pointopoint" in flags:
            continue
        mac = next((normalise_mac(a.address) for a in addrs.get(name, [])
                    if a.family == psutil.AF_LINK), None)
        if mac is None:
            continue  # no Ethernet-like link (tun, ppp): nothing answers ARP there
        seen: set[ipaddress.IPv4Network] = set()
        for a in addrs.get(name, []):
            if a.family != socket.AF_INET or not a.netmask:
                continue
            iface = ipaddress.IPv4Interface(f"{a.address}/{a.netmask}")
            if (iface.network in seen or iface.network.prefixlen == 32
                    or iface.ip.is_loopback or iface.ip.is_link_local):
                continue
            seen.add(iface.network)
            found.append(LocalNetwork(name, mac, iface.ip, iface.network))
    missing = [n for n in names if not any(f.interface == n for f in found)]
    return found, missing


def sweep_targets(address: ipaddress.IPv4Address, network: ipaddress.IPv4Network,
                  limit: int) -> tuple[list[ipaddress.IPv4Address], bool]:
    """The hosts of `network` to sweep, ascending: all but `address` (and the network and
    broadcast addresses, except in a /31), or the `limit` nearest to `address` when there
    are more; and whether some were left out."""
    if network.prefixlen >= 31:  # RFC 3021: both addresses of a /31 are hosts
        first, last = int(network.network_address), int(network.broadcast_address)
    else:
        first, last = int(network.network_address) + 1, int(network.broadcast_address) - 1
    own = int(address)
    below, above = own - 1, own + 1
    picked: list[int] = []
    for _ in range(limit):  # each pass takes the nearer of the next address below and above
        take_below = below >= first and (above > last or own - below <= above - own)
        if take_below:
            picked.append(below)
            below -= 1
        elif above <= last:
            picked.append(above)
            above += 1
        else:
            break
    truncated = below >= first or above <= last
    return [ipaddress.IPv4Address(i) for i in sorted(picked)], truncated


# --- finding neighbours -----------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    """A neighbour as a method found it, before vendor and kind."""

    ip: str
    mac: str
    interface: str | None


def can_sweep() -> bool:
    """Whether this process may send ARP itself: Linux with root or CAP_NET_RAW (an
    AF_PACKET socket opens). Protocol 0: the test socket receives nothing."""
    if sys.platform != "linux":
        return False  # scapy on Windows needs Npcap, which ward PCs do not have
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except OSError:  # EPERM without CAP_NET_RAW
        return False
    return True


def choose_method() -> Method:
    """What `auto` means for this process."""
    return "arp-sweep" if can_sweep() else "neighbour-table"


async def _sweep(config: Config) -> tuple[list[SweptNetwork], list[str], bool, list[Seen]]:
    """What was swept, which configured interfaces were missing, whether subnets were left
    out (more than `MAX_SUBNETS`) and who answered. A subnet whose sweep failed says why
    and the others stand; when all fail the run fails (no count is better than zero)."""
    nets, missing = local_networks(config.interfaces)
    plans = [(net, *sweep_targets(net.address, net.network, config.max_addresses))
             for net in nets[:MAX_SUBNETS]]
    def sweep(net: LocalNetwork, targets: Sequence[ipaddress.IPv4Address]
              ) -> Callable[[threading.Event], list[Seen]]:
        # Bounded by its own timeout: the sweep need not watch for a halt.
        return lambda _halt: arp_sweep(net, targets, config.packets_per_second,
                                       config.sweep_timeout_seconds)

    outcomes = await asyncio.gather(*(
        in_thread(sweep(net, targets), name=f"arp sweep {net.interface}")
        for net, targets, _ in plans), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    for failure in failures:
        if not isinstance(failure, Exception):
            raise failure  # cancellation and the like are not a subnet's fault
    if failures and len(failures) == len(plans):
        raise failures[0]
    swept = [SweptNetwork(interface=net.interface, address=str(net.address),
                          network=str(net.network), addresses_swept=len(targets),
                          truncated=truncated,
                          error=(f"{type(o).__name__}: {o}"[:300]
                                 if isinstance(o, BaseException) else None))
             for (net, targets, truncated), o in zip(plans, outcomes, strict=True)]
    seen = [s for o in outcomes if not isinstance(o, BaseException) for s in o]
    return swept, missing, len(nets) > MAX_SUBNETS, seen


def arp_sweep(net: LocalNetwork, targets: Sequence[ipaddress.IPv4Address],
              packets_per_second: float, timeout: float) -> list[Seen]:
    """ARP-request each target on `net`'s interface (blocking); who answered. Sends at most
    `packets_per_second`, resends unanswered requests once; lasts at most
    2 * (len(targets) / packets_per_second + timeout) s plus the time to build the packets."""
    if not targets:
        return []
    # Imported here: scapy costs ~45 MiB and only this method needs it; just the layers used.
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp

    packets = [Ether(dst="ff:ff:ff:ff:ff:ff", src=net.mac)
               / ARP(op=1, hwsrc=net.mac, psrc=str(net.address), pdst=str(t)) for t in targets]
    answered, _ = srp(packets, iface=net.interface, inter=1 / packets_per_second,
                      timeout=timeout, retry=1, verbose=0)
    wanted = {str(t) for t in targets}
    found: list[Seen] = []
    for _, reply in answered:
        arp = reply[ARP]
        mac = normalise_mac(str(arp.hwsrc))
        if str(arp.psrc) in wanted and mac is not None and mac != net.mac:
            found.append(Seen(str(arp.psrc), mac, net.interface))
    return found


def read_proc_arp(proc_root: Path) -> list[Seen]:
    """Complete entries (ATF_COM, flag 0x2) with a unicast MAC of Linux's ARP table."""
    text = (proc_root / "net" / "arp").read_text(encoding="ascii", errors="replace")
    found: list[Seen] = []
    for line in text.splitlines()[1:]:  # after the header
        fields = line.split()
        if len(fields) < 6:
            continue
        ip, _, flags, hw, _, device = fields[:6]
        mac = normalise_mac(hw)
        try:
            complete = int(flags, 16) & 0x2
            ipaddress.IPv4Address(ip)
        except ValueError:
            continue
        if complete and mac is not None:
            found.append(Seen(ip, mac, device))
    return found


WINDOWS_STATES = ("Unreachable", "Incomplete", "Probe", "Delay", "Stale", "Reachable",
                  "Permanent")
"""MSFT_NetNeighbor's State by number (NL_NEIGHBOR_STATE order), for PowerShell 5.1, whose
ConvertTo-Json writes enums as numbers; PowerShell 7 may write the names."""
WINDOWS_USABLE = frozenset({"reachable", "stale", "permanent"})
NEIGHBOR_QUERY = ("Get-NetNeighbor -AddressFamily IPv4 | "
                  "Select-Object ifIndex, InterfaceAlias, IPAddress, LinkLayerAddress, State | "
                  "ConvertTo-Json")


def read_windows_neighbours(recorded: Path | None = None) -> list[Seen]:
    """Entries of Windows' IPv4 neighbour table in a usable state with a unicast MAC."""
    found: list[Seen] = []
    for item in oswin.query("netneighbor", NEIGHBOR_QUERY, recorded=recorded,
                            timeout=TABLE_TIMEOUT_SECONDS):
        state = item.get("State")
        if isinstance(state, int) and not isinstance(state, bool):
            state = WINDOWS_STATES[state] if 0 <= state < len(WINDOWS_STATES) else None
        ip, mac = item.get("IPAddress"), normalise_mac(str(item.get("LinkLayerAddress") or ""))
        alias = item.get("InterfaceAlias")
        if (not isinstance(state, str) or state.strip().lower() not in WINDOWS_USABLE
                or not isinstance(ip, str) or mac is None):
            continue
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            continue
        found.append(Seen(ip, mac, alias if isinstance(alias, str) else None))
    return found


async def _read_table(config: Config) -> list[Seen]:
    if os_family(config.os) == "windows":
        recorded = Path(config.windows_recorded) if config.windows_recorded else None
        found = await asyncio.to_thread(read_windows_neighbours, recorded)
    else:
        found = await asyncio.to_thread(read_proc_arp, Path(config.proc_root))
    if config.interfaces:
        found = [s for s in found if s.interface in config.interfaces]
    return found


_MAC_SEPARATORS = re.compile(r"[-:.]")


def normalise_mac(text: str) -> str | None:
    """`aa:bb:cc:dd:ee:ff` from any usual spelling; None for anything but a unicast MAC
    (all zeros as in incomplete entries, broadcast, multicast, malformed)."""
    digits = _MAC_SEPARATORS.sub("", text.strip()).lower()
    if len(digits) != 12 or not all(c in "0123456789abcdef" for c in digits):
        return None
    if int(digits, 16) == 0 or int(digits[:2], 16) & 0x01:  # I/G bit: group address
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


# --- vendor and kind --------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def vendor(mac: str) -> str | None:
    """The IEEE-registered organisation of `mac`'s prefix, or None (locally administered,
    unregistered or malformed)."""
    normal = normalise_mac(mac)
    if normal is None or int(normal[:2], 16) & 0x02:  # U/L bit: no registry entry applies
        return None
    # Imported here: the registry lookup is needed only once neighbours are found.
    import netaddr

    try:
        eui = netaddr.EUI(normal)
        registration = eui.iab.registration() if eui.is_iab() else eui.oui.registration()
    except (netaddr.NotRegisteredError, netaddr.AddrFormatError, IndexError):
        return None
    org = " ".join(str(registration.org).split())
    return org[:128] or None


def kind_of(vendor_name: str | None, open_ports: Iterable[int] = ()
            ) -> tuple[Kind, Literal["port", "vendor"] | None]:
    """A neighbour's kind and what decided it: its open ports first, then its vendor."""
    ports = set(open_ports)
    if ports & set(PRINTER_PORTS):
        return "printer", "port"
    if ports & set(CAMERA_PORTS):
        return "ip-camera", "port"
    if vendor_name:
        for kind, pattern in _VENDOR_PATTERNS:
            if pattern.search(vendor_name):
                return kind, "vendor"
    return "unknown", None


_LINGER_RST = struct.pack("ii", 1, 0)


async def port_open(ip: str, port: int, timeout: float) -> bool:
    """Whether a TCP connect to `ip`:`port` completes within `timeout` s. Closed with RST, so
    a printer keeps no half-open connection."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout)
        except (OSError, TimeoutError):
            return False
        return True


async def probe_ports(ips: Sequence[str], timeout: float,
                      concurrency: int = PROBE_CONCURRENCY) -> dict[str, list[int]]:
    """The open `PROBE_PORTS` of each address, `concurrency` connects at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ip: str, port: int) -> bool:
        async with gate:
            return await port_open(ip, port, timeout)

    pairs = [(ip, port) for ip in ips for port in PROBE_PORTS]
    answers = await asyncio.gather(*(one(ip, port) for ip, port in pairs))
    found: dict[str, list[int]] = {ip: [] for ip in ips}
    for (ip, port), is_open in zip(pairs, answers, strict=True):
        if is_open:
            found[ip].append(port)
    return found


# --- the check --------------------------------------------------------------------------------

async def run(config: Config, context: Context) -> Result:
    """List the LAN's neighbours by the configured method, then tell their kinds."""
    started = time.monotonic()
    method = choose_method() if config.method == "auto" else config.method
    networks: list[SweptNetwork] = []
    missing: list[str] = []
    subnets_left_out = False
    if method == "arp-sweep":
        if not can_sweep():
            raise PermissionError("arp-sweep needs Linux and root or CAP_NET_RAW (e.g. "
                                  "systemd AmbientCapabilities=CAP_NET_RAW for the agent); "
                                  "or use method neighbour-table")
        networks, missing, subnets_left_out, seen = await _sweep(config)
    else:
        seen = await _read_table(config)
    unique = sorted({(ipaddress.IPv4Address(s.ip), s.mac): s for s in seen}.items())
    kept = [s for _, s in unique[:MAX_NEIGHBOURS]]
    ports: dict[str, list[int]] = {}
    if config.probe_ports and kept:
        ports = await probe_ports(sorted({s.ip for s in kept}), config.probe_timeout_seconds)
    neighbours = []
    for s in kept:
        name = vendor(s.mac)
        open_ports = ports.get(s.ip, [])
        kind, kind_from = kind_of(name, open_ports)
        neighbours.append(Neighbour(ip=s.ip, mac=s.mac, interface=s.interface, vendor=name,
                                    kind=kind, kind_from=kind_from, open_ports=open_ports))
    return Result(
        method=method, networks=networks, missing_interfaces=missing,
        truncated=(subnets_left_out or len(unique) > MAX_NEIGHBOURS
                   or any(n.truncated or n.error for n in networks)),
        duration_seconds=time.monotonic() - started, neighbours=neighbours,
        counts={k: sum(n.kind == k for n in neighbours) for k in KINDS})


NEIGHBOURS = MetricSpec("wardready_lan_neighbours",
                        "LAN neighbours found by the latest run, by kind.", ("kind",))
SCAN_INFO = MetricSpec("wardready_lan_scan_info",
                       "1, labelled with how the latest run found neighbours.", ("method",))
SCAN_DURATION = MetricSpec("wardready_lan_scan_duration_seconds",
                           "How long the latest neighbour scan took.")
SCAN_TRUNCATED = MetricSpec("wardready_lan_scan_truncated",
                            "1 if the latest run covered only part of the LAN.")
METRICS = (NEIGHBOURS, SCAN_INFO, SCAN_DURATION, SCAN_TRUNCATED)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one neighbours result: counts only, never one per device."""
    for kind in KINDS:
        yield Sample(NEIGHBOURS, (kind,), result.counts.get(kind, 0))
    yield Sample(SCAN_INFO, (result.method,), 1)
    yield Sample(SCAN_DURATION, (), result.duration_seconds)
    yield Sample(SCAN_TRUNCATED, (), 1 if result.truncated else 0)


def inventory(result: Result) -> dict[str, list[InventoryItem]]:
    """The neighbours by MAC (the IP is left out of the facts: DHCP changes it), only from a
    complete sweep. The neighbour table lists just the hosts this PC talked to lately and a
    truncated sweep misses part of the LAN: a device absent from those is not gone, so they
    count nothing (the server then removes nothing)."""
    if result.method != "arp-sweep" or result.truncated:
        return {}
    items: dict[str, InventoryItem] = {}
    for n in result.neighbours:
        facts = (("vendor", n.vendor),) if n.vendor else ()
        items.setdefault(n.mac, InventoryItem(kind="lan-neighbour", key=n.mac,
                                              facts=(*facts, ("kind", n.kind))))
    return {"lan-neighbour": list(items.values())}


CHECK = CheckSpec(name="neighbours", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, inventory=inventory,
                  isolated=True)
