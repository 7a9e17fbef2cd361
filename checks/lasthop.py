"""The PC's own last hop: which interface carries its traffic toward the server, whether that
is a cable or Wi-Fi, at what speed and duplex, and for Wi-Fi how strong the signal is.

A ward PC can be the weak link itself: a 10 Mbit/s or half-duplex NIC, or Wi-Fi at -78 dBm
two walls away from the access point. Nothing here sends a packet.

How:
- The interface: a UDP socket is `connect()`ed to the server's address (this only asks the
  kernel for a route; nothing is sent) and its local address mapped to an interface through
  `psutil.net_if_addrs()`.
- Speed and duplex: `psutil.net_if_stats()` (Linux: ethtool's link settings; 0 Mbit/s or an
  unknown duplex is reported as unknown, never as zero or half).
- Medium, Linux: the interface is Wi-Fi when sysfs has `class/net/IF/wireless` or
  `class/net/IF/phy80211`; wired when it is otherwise an Ethernet-type device (`type` 1,
  ARPHRD_ETHER); unknown for anything else (loopback, tunnels, PPP).
  Wi-Fi details from `iw dev IF link` when `iw` is installed, else from
  `/proc/net/wireless` (signal only).
- Medium, Windows: Wi-Fi when `netsh wlan show interfaces` lists the interface (psutil names
  Windows interfaces by their alias, as netsh does); its figures come from there too.

A missing tool, a failed command or an unroutable server is a note in the result, not a
failure of the run. The sysfs and procfs roots and the command runner are injectable
(`measure`), so tests replay recorded outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import psutil
from pydantic import Field, model_validator

from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    ResultModel,
    in_thread,
)
from wardready.checks.sysfs import OsChoice, attr, attr_int, os_family
from wardready.core.metrics import MetricSpec, Sample

Medium = Literal["wired", "wifi", "unknown"]
Band = Literal["2.4GHz", "5GHz", "6GHz"]
WifiSource = Literal["iw", "proc", "netsh"]
MEDIA: tuple[Medium, ...] = ("wired", "wifi", "unknown")

MAX_NOTES = 8
ARPHRD_ETHER = 1
"""sysfs `type` of Ethernet-like devices (include/uapi/linux/if_arp.h): NICs, veth, TAP."""


class Config(CheckConfig):
    """Where the last hop is looked for and read from."""

    interval_seconds: float = Field(default=300.0, gt=0)
    timeout_seconds: float = Field(default=20.0, gt=0)
    target: str | None = Field(default=None, min_length=1, max_length=253)
    """Host or address whose route decides the interface; default: the agent's server."""
    os: OsChoice = "auto"
    sys_root: str = "/sys"
    proc_root: str = "/proc"
    command_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    """How long `iw` or `netsh` may take."""

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.command_timeout_seconds >= self.timeout_seconds:
            raise ValueError(f"command_timeout_seconds ({self.command_timeout_seconds:g}) must "
                             f"be below timeout_seconds ({self.timeout_seconds:g})")
        return self


class WifiLink(ResultModel):
    """The Wi-Fi association of the interface, as its source reported it; None where the
    source does not say (`/proc/net/wireless` gives the signal only)."""

    signal_dbm: float | None = None
    signal_quality_percent: float | None = None
    """Windows' signal quality (netsh's "Signal"), from which `signal_dbm` is derived."""
    tx_bitrate_bits_per_second: float | None = None
    rx_bitrate_bits_per_second: float | None = None
    frequency_mhz: float | None = None
    band: Band | None = None
    channel: int | None = None
    ssid: str | None = Field(default=None, max_length=64)
    source: WifiSource


class Result(CheckResult):
    """The interface toward the server and what it is."""

    target: str | None
    """The host the route was looked up for."""
    interface: str | None
    local_address: str | None
    medium: Medium
    speed_bits_per_second: float | None
    """The negotiated link speed (Wi-Fi drivers often report none: see `wifi`)."""
    full_duplex: bool | None
    wifi: WifiLink | None
    """None when wired, or when the Wi-Fi association could not be read (see `notes`)."""
    notes: list[str] = Field(default_factory=list, max_length=MAX_NOTES)
    """What could not be read, and why."""


# --- Wi-Fi figures from the tools' text -------------------------------------------------------

def band_of(frequency_mhz: float) -> Band | None:
    """The band of a channel's centre frequency (IEEE 802.11: 2.4 GHz 2400-2500 MHz, 5 GHz
    from 4.9 GHz up to 5925 MHz, 6 GHz 5925-7125 MHz)."""
    if 2400 <= frequency_mhz <= 2500:
        return "2.4GHz"
    if 4900 <= frequency_mhz < 5925:
        return "5GHz"
    if 5925 <= frequency_mhz <= 7125:
        return "6GHz"
    return None


def channel_of(frequency_mhz: float) -> int | None:
    """The channel number of a centre frequency, as iw's `ieee80211_frequency_to_channel`
    counts them: 2.4 GHz 2407 + 5n (2484 is 14), 5 GHz 5000 + 5n, 6 GHz 5950 + 5n (5935 is 2)."""
    f = round(frequency_mhz)
    if f == 2484:
        return 14
    if f == 5935:
        return 2
    if 2412 <= f < 2484:
        return (f - 2407) // 5
    if 4910 <= f <= 4980:
        return (f - 4000) // 5
    if 5000 < f < 5950:
        return (f - 5000) // 5
    if 5950 < f <= 7125:
        return (f - 5950) // 5
    return None


def frequency_of(band: Band, channel: int) -> float | None:
    """The centre frequency of a channel in a band (the inverse of `channel_of`)."""
    if band == "2.4GHz":
        return 2484.0 if channel == 14 else 2407.0 + 5 * channel if 1 <= channel <= 13 else None
    if band == "5GHz":
        return 5000.0 + 5 * channel if 1 <= channel <= 196 else None
    return 5935.0 if channel == 2 else 5950.0 + 5 * channel if 1 <= channel <= 233 else None


_IW_FIELD = re.compile(r"^\s*(SSID|freq|signal|rx bitrate|tx bitrate):\s*(.*?)\s*$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _number(text: str) -> float | None:
    m = _NUMBER.search(text)
    return float(m.group()) if m else None


def _mbit(text: str) -> float | None:
    """`866.7 MBit/s VHT-MCS 9 ...` in bits per second."""
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*MBit/s", text)
    return float(m.group(1)) * 1e6 if m else None


def parse_iw_link(text: str) -> WifiLink | None:
    """`iw dev IF link`: the association, or None when it says "Not connected." (or nothing
    recognisable). `signal` is in dBm; bitrates in MBit/s; `freq` in MHz (iw 5.x prints
    `5280`, newer ones `5280.0`). Drivers that keep no rx rate print no `rx bitrate` line."""
    if not re.search(r"^Connected to ", text, re.MULTILINE):
        return None
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = _IW_FIELD.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = m.group(2)
    freq = _number(found["freq"]) if "freq" in found else None
    return WifiLink(
        signal_dbm=_number(found["signal"]) if "signal" in found else None,
        tx_bitrate_bits_per_second=_mbit(found.get("tx bitrate", "")),
        rx_bitrate_bits_per_second=_mbit(found.get("rx bitrate", "")),
        frequency_mhz=freq,
        band=band_of(freq) if freq is not None else None,
        channel=channel_of(freq) if freq is not None else None,
        ssid=found.get("SSID") or None,
        source="iw")


def proc_level_dbm(raw: str) -> float | None:
    """A `/proc/net/wireless` signal level in dBm, or None when it is no dBm figure.

    The kernel (net/wireless/wext-proc.c) prints the level followed by "." when the driver
    updated it since the last read (so `-42.`: strip the dot), and subtracts 256 only when
    the driver flags the level as dBm (IW_QUAL_DBM). Older drivers set no flag and put dBm
    in the unsigned byte, so -53 dBm reads `203.`: as iwconfig does, a byte above 127 is
    taken as dBm + 256. A value from 1 to 127 is a relative level (e.g. 95 of 100), not dBm;
    0 means the driver gave none.
    """
    try:
        value = float(raw.rstrip(".").strip())
    except ValueError:
        return None
    if value < 0:
        return value
    if 128 <= value <= 255:
        return value - 256
    return None


def parse_proc_net_wireless(text: str, interface: str) -> WifiLink | None:
    """The signal of `interface` in `/proc/net/wireless` (two header lines, then one line
    per wireless interface: `name: status link level noise ...`); None when it is not listed
    or gives no dBm level."""
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or name.strip() != interface:
            continue
        fields = rest.split()
        if len(fields) < 3:
            return None
        dbm = proc_level_dbm(fields[2])
        return WifiLink(signal_dbm=dbm, source="proc") if dbm is not None else None
    return None


def quality_to_dbm(quality_percent: float) -> float:
    """Windows' signal quality (0-100 %) as dBm. Microsoft documents the quality as linear
    between 0 (-100 dBm) and 100 (-50 dBm) (`WLAN_ASSOCIATION_ATTRIBUTES.wlanSignalQuality`,
    `WLAN_REALTIME_CONNECTION_QUALITY.ulLinkQuality`), that is dBm = quality / 2 - 100.
    Stronger signals than -50 dBm all read 100 %."""
    return min(max(quality_percent, 0.0), 100.0) / 2 - 100


@dataclass(frozen=True)
class NetshInterface:
    """One interface block of `netsh wlan show interfaces`."""

    name: str
    description: str | None
    state: str | None
    link: WifiLink | None
    """None unless the state is "connected"."""


NETSH_BANDS: dict[float, Band] = {2.4: "2.4GHz", 5.0: "5GHz", 6.0: "6GHz"}
"""netsh's "Band" line ("2.4 GHz", "5 GHz", "6 GHz") by its number."""
_NETSH_LINE = re.compile(r"^\s*([^:]+?)\s*:\s(.*?)\s*$")


def parse_netsh_wlan(text: str) -> list[NetshInterface]:
    """The interfaces of `netsh wlan show interfaces` (English Windows). Keys are matched
    without case; "Signal" is a percentage (see `quality_to_dbm`), rates are in Mbps,
    "Band" is printed by recent Windows only, otherwise the band follows from the channel
    (1-14: 2.4 GHz, else 5 GHz: Windows versions without a Band line predate 6 GHz)."""
    blocks: list[dict[str, str]] = []
    for line in text.splitlines():
        m = _NETSH_LINE.match(line)
        if not m:
            continue
        key, value = m.group(1).casefold(), m.group(2)
        if key == "name":
            blocks.append({})
        if blocks and key not in blocks[-1]:
            blocks[-1][key] = value
    out = []
    for b in blocks:
        state = b.get("state")
        link = None
        if state is not None and state.strip().casefold() == "connected":
            quality = _number(b["signal"]) if "signal" in b else None
            channel_f = _number(b["channel"]) if "channel" in b else None
            channel = int(channel_f) if channel_f is not None else None
            band: Band | None = None
            if "band" in b:
                band_f = _number(b["band"])
                band = NETSH_BANDS.get(band_f or 0.0)
            elif channel is not None:
                band = "2.4GHz" if 1 <= channel <= 14 else "5GHz"
            rx = _number(b["receive rate (mbps)"]) if "receive rate (mbps)" in b else None
            tx = _number(b["transmit rate (mbps)"]) if "transmit rate (mbps)" in b else None
            link = WifiLink(
                signal_dbm=quality_to_dbm(quality) if quality is not None else None,
                signal_quality_percent=quality,
                tx_bitrate_bits_per_second=tx * 1e6 if tx is not None else None,
                rx_bitrate_bits_per_second=rx * 1e6 if rx is not None else None,
                frequency_mhz=(frequency_of(band, channel)
                               if band is not None and channel is not None else None),
                band=band, channel=channel, ssid=b.get("ssid") or None, source="netsh")
        out.append(NetshInterface(name=b.get("name", "").strip(),
                                  description=b.get("description"), state=state, link=link))
    return out


def netsh_lists(text: str, interface: str) -> bool:
    """Whether some line of netsh's output has the value `interface` (its "Name" line, in
    whatever language the keys are): a test that does not depend on the display language."""
    wanted = interface.strip().casefold()
    return any((m := _NETSH_LINE.match(line)) is not None
               and m.group(2).strip().casefold() == wanted for line in text.splitlines())


# --- the machine -------------------------------------------------------------------------------

class CommandFailed(Exception):
    """A command could not be run or failed; the message says why, in one line."""


Runner = Callable[[Sequence[str], float], str]
"""Runs argv with a timeout in seconds and returns its standard output; raises CommandFailed."""


def run_command(argv: Sequence[str], timeout: float) -> str:
    """The default runner: the command's stdout, or CommandFailed (missing, timed out, failed)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise CommandFailed(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{argv[0]} took longer than {timeout:g} s") from exc
    except OSError as exc:
        raise CommandFailed(f"{argv[0]}: {exc.strerror or exc}") from exc
    # Windows console programs (netsh) write the OEM code page, which Python names "oem";
    # the interface's name, matched against psutil's, may be Vietnamese.
    encoding = "oem" if sys.platform == "win32" else "utf-8"
    out = done.stdout.decode(encoding, errors="replace")
    if done.returncode != 0:
        err = done.stderr.decode(encoding, errors="replace").strip() or out.strip()
        raise CommandFailed(f"{' '.join(argv[:3])} exited {done.returncode}: "
                            f"{err.splitlines()[0][:200] if err else 'no output'}")
    return out


def target_host(config_target: str | None, context: Context) -> tuple[str, int] | None:
    """The host (and a port, for the route lookup) the last hop leads to."""
    if config_target:
        return config_target, 443
    if context.server is None:
        return None
    url = urlsplit(context.server.url)
    if not url.hostname:
        return None
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        port = 443
    return url.hostname, port


def local_address_toward(host: str, port: int) -> str:
    """The local address the kernel would send from toward `host` (a UDP `connect()` only
    looks up the route: nothing is sent). Raises OSError when it does not resolve or has
    no route."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.connect(address)
            except OSError as exc:
                error = exc
                continue
            return str(sock.getsockname()[0])
    raise error or OSError(f"{host} did not resolve")


def interface_of(address: str, addrs: Mapping[str, Sequence[object]]) -> str | None:
    """The interface holding `address`, from `psutil.net_if_addrs()`-shaped data."""
    wanted = ipaddress.ip_address(address.split("%")[0])
    for name, entries in addrs.items():
        for entry in entries:
            text = str(getattr(entry, "address", "")).split("%")[0]
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(text) == wanted:
                    return name
    return None


def speed_and_duplex(interface: str) -> tuple[float | None, bool | None]:
    """The link speed in bits per second and whether it is full duplex, from psutil; None
    for what the driver does not say (speed 0, NIC_DUPLEX_UNKNOWN)."""
    stat = psutil.net_if_stats().get(interface)
    if stat is None:
        return None, None
    speed = float(stat.speed) * 1e6 if stat.speed and stat.speed > 0 else None
    duplex = {psutil.NIC_DUPLEX_FULL: True, psutil.NIC_DUPLEX_HALF: False}.get(stat.duplex)
    return speed, duplex


def linux_medium(sys_root: Path, interface: str) -> Medium:
    """Wi-Fi, wired or unknown from sysfs (see the module's docstring)."""
    device = sys_root / "class" / "net" / interface
    if (device / "wireless").exists() or (device / "phy80211").exists():
        return "wifi"
    if attr_int(device / "type") == ARPHRD_ETHER:
        return "wired"
    return "unknown"


@dataclass(frozen=True)
class Sources:
    """What `measure` reads the machine through; tests replace each part."""

    runner: Runner = run_command
    which: Callable[[str], str | None] = shutil.which
    local_address: Callable[[str, int], str] = local_address_toward
    addrs: Callable[[], Mapping[str, Sequence[object]]] = psutil.net_if_addrs
    link: Callable[[str], tuple[float | None, bool | None]] = speed_and_duplex


def measure(config: Config, target: tuple[str, int] | None,
            sources: Sources | None = None) -> Result:
    """The last hop toward `target` (blocking: runs commands)."""
    src = sources or Sources()
    notes: list[str] = []

    def result(**kw: object) -> Result:
        fields: dict[str, object] = dict(
            target=target[0] if target else None, interface=None, local_address=None,
            medium="unknown", speed_bits_per_second=None, full_duplex=None, wifi=None)
        fields.update(kw)
        fields["notes"] = [n[:300] for n in notes[:MAX_NOTES]]
        return Result.model_validate(fields)

    if target is None:
        notes.append("no target: no server configured and no `target` set")
        return result()
    try:
        local = src.local_address(*target)
    except OSError as exc:
        notes.append(f"no route to {target[0]}: {exc.strerror or exc}")
        return result()
    interface = interface_of(local, src.addrs())
    if interface is None:
        notes.append(f"no interface holds the local address {local}")
        return result(local_address=local)
    speed, duplex = src.link(interface)
    family = os_family(config.os)
    medium: Medium = "unknown"
    wifi: WifiLink | None = None
    if family == "linux":
        medium = linux_medium(Path(config.sys_root), interface)
        if medium == "wifi":
            wifi = _linux_wifi(config, interface, src, notes)
    elif family == "windows":
        medium, wifi = _windows_wifi(config, interface, speed, src, notes)
    else:
        notes.append(f"the medium is not read on this OS ({family})")
    return result(interface=interface, local_address=local, medium=medium,
                  speed_bits_per_second=speed, full_duplex=duplex, wifi=wifi)


def _linux_wifi(config: Config, interface: str, src: Sources, notes: list[str]
                ) -> WifiLink | None:
    iw = src.which("iw")
    if iw is not None:
        try:
            link = parse_iw_link(src.runner([iw, "dev", interface, "link"],
                                            config.command_timeout_seconds))
        except CommandFailed as exc:
            notes.append(str(exc))
        else:
            if link is None:
                notes.append(f"iw: {interface} is not associated")
            return link
    else:
        notes.append("iw is not installed: signal only, from /proc/net/wireless")
    path = Path(config.proc_root) / "net" / "wireless"
    text = attr(path)
    if text is None:
        notes.append(f"{path} is missing or empty")
        return None
    link = parse_proc_net_wireless(text, interface)
    if link is None:
        notes.append(f"{path} gives no dBm signal level for {interface}")
    return link


def _windows_wifi(config: Config, interface: str, speed: float | None, src: Sources,
                  notes: list[str]) -> tuple[Medium, WifiLink | None]:
    try:
        text = src.runner(["netsh", "wlan", "show", "interfaces"],
                          config.command_timeout_seconds)
    except CommandFailed as exc:
        # Without the WLAN service nothing is on Wi-Fi through Windows, but a driver's own
        # utility might be: say unknown rather than guess.
        notes.append(str(exc))
        return "unknown", None
    for entry in parse_netsh_wlan(text):
        if entry.name.casefold() == interface.casefold():
            if entry.link is None:
                notes.append(f"netsh: {interface} is {entry.state or 'not connected'}")
            return "wifi", entry.link
    if netsh_lists(text, interface):
        # netsh speaks the display language (Vietnamese on many ward PCs): its keys are
        # not the English ones parsed, but the interface's own name is there all the same.
        notes.append(f"netsh lists {interface} in a language other than English: "
                     "Wi-Fi figures not read")
        return "wifi", None
    # netsh answered and does not list the interface: not Wi-Fi. With a link speed it is
    # a wired NIC; without one (a VPN adapter, a tunnel) we cannot tell.
    return ("wired" if speed is not None else "unknown"), None


async def run(config: Config, context: Context) -> Result:
    """Find and read the last hop toward the server (or `config.target`)."""
    target = target_host(config.target, context)

    def work(_halt: threading.Event) -> Result:
        # Each command is bounded by command_timeout_seconds: no halt needed.
        return measure(config, target)

    return await asyncio.wait_for(in_thread(work, name="lasthop"), config.timeout_seconds)


# --- metrics -----------------------------------------------------------------------------------

INFO = MetricSpec("wardready_lasthop_info",
                  "The interface that carries the PC's traffic toward the server, and its "
                  "medium (wired, wifi, unknown); always 1.", ("interface", "medium"))
SPEED = MetricSpec("wardready_lasthop_speed_bytes_per_second",
                   "Negotiated link speed of that interface (absent when the driver gives "
                   "none).", ("interface",))
FULL_DUPLEX = MetricSpec("wardready_lasthop_full_duplex",
                         "1 when that interface runs full duplex, 0 when half duplex (absent "
                         "when unknown).", ("interface",))
SIGNAL = MetricSpec("wardready_wifi_signal_dbm",
                    "Received signal strength of the PC's Wi-Fi association, in dBm (Windows: "
                    "derived from its signal quality).", ("interface",))
BITRATE = MetricSpec("wardready_wifi_bitrate_bytes_per_second",
                     "PHY bitrate of the PC's Wi-Fi association by direction (transmit, "
                     "receive), as the driver last used it.", ("interface", "direction"))
FREQUENCY = MetricSpec("wardready_wifi_frequency_hertz",
                       "Centre frequency of the PC's Wi-Fi channel.", ("interface",))
METRICS = (INFO, SPEED, FULL_DUPLEX, SIGNAL, BITRATE, FREQUENCY)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one last-hop result (none when no interface was found)."""
    if result.interface is None:
        return
    name = result.interface
    yield Sample(INFO, (name, result.medium), 1.0)
    if result.speed_bits_per_second is not None:
        yield Sample(SPEED, (name,), result.speed_bits_per_second / 8)
    if result.full_duplex is not None:
        yield Sample(FULL_DUPLEX, (name,), 1.0 if result.full_duplex else 0.0)
    w = result.wifi
    if w is None:
        return
    if w.signal_dbm is not None:
        yield Sample(SIGNAL, (name,), w.signal_dbm)
    if w.tx_bitrate_bits_per_second is not None:
        yield Sample(BITRATE, (name, "transmit"), w.tx_bitrate_bits_per_second / 8)
    if w.rx_bitrate_bits_per_second is not None:
        yield Sample(BITRATE, (name, "receive"), w.rx_bitrate_bits_per_second / 8)
    if w.frequency_mhz is not None:
        yield Sample(FREQUENCY, (name,), w.frequency_mhz * 1e6)


CHECK = CheckSpec(name="lasthop", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples)
