"""Peripherals: webcams, microphones, speakers, printers, scanners and USB devices in general.

Linux: USB devices and their interface classes from sysfs, video4linux nodes, ALSA cards
(sysfs for capture and playback PCMs, procfs for names), and CUPS print queues (`lpstat -v`)
for network printers. Windows: present PnP devices and print queues through PowerShell.

A count the agent could not take (a tree it cannot read, a query that failed) is unknown,
reported as None with the reason, never as zero: "no webcam" and "could not look" lead to
different actions in a ward.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from wardready.checks.base import CheckResult, CheckSpec, Context, InventoryItem, ResultModel
from wardready.checks.sysfs import (
    OsSources,
    Unreadable,
    attr,
    attr_int,
    entries,
    os_family,
    text,
    tree_problem,
    windows_query,
)
from wardready.core.metrics import MetricSpec, Sample

Kind = Literal["webcam", "microphone", "speaker", "printer", "scanner", "usb"]
KINDS: tuple[Kind, ...] = ("webcam", "microphone", "speaker", "printer", "scanner", "usb")
MAX_DEVICES = 256
"""Devices listed at most (counts stay exact beyond it): bounds odd machines' reports."""
MAX_INFO_SERIES = 64
"""Devices exported as `wardready_peripheral_info` series at most: bounds label cardinality."""


class Config(OsSources):
    """Peripheral settings; every source is injectable so tests replay recorded machines."""

    interval_seconds: float = Field(default=3600.0, gt=0)
    sys_root: str = "/sys"
    lpstat_recorded: str | None = None
    """A file of recorded `lpstat -v` output to read instead of running lpstat."""


class Device(ResultModel):
    kind: Kind
    name: str
    bus: str | None
    """`usb`, `pci` (e.g. onboard HD Audio), `network` (a print queue's printer), ..."""
    path: str
    """Where the OS puts it: a USB port path (`1-6`), an ALSA card (`card1`), a CUPS queue,
    a Windows PnP instance id."""
    vendor_id: str | None = None
    product_id: str | None = None
    serial: str | None = None
    driver: str | None = None


class Result(CheckResult):
    os: str
    """Whose readers counted: `linux`, `windows` or `other`."""
    counts: dict[Kind, int | None]
    """Devices of each kind; None when the kind could not be counted (see `unreadable`)."""
    devices: list[Device] = Field(default_factory=list, max_length=MAX_DEVICES)
    """The devices counted, by kind; a USB webcam is listed as a webcam and as a USB device."""
    unreadable: list[Unreadable] = Field(default_factory=list, max_length=16)


async def run(config: Config, context: Context) -> Result:
    """Count the peripherals (in a thread: file reads and child processes block)."""
    return await asyncio.to_thread(collect, config)


def collect(config: Config | None = None) -> Result:
    """Count the peripherals synchronously."""
    config = config or Config()
    family = os_family(config.os)
    found = _Found()
    if family == "linux":
        _linux(config, found)
    elif family == "windows":
        _windows(config, found)
    else:
        found.unknown(KINDS, "os", f"no peripheral reader for {platform.system()}")
    return found.result(family)


@dataclass
class _Found:
    """Devices by kind, keyed by what identifies one physical device (two video nodes of one
    camera, or a card seen twice, count once); kinds in `unknown_kinds` are not counted."""

    by_kind: dict[Kind, dict[str, Device]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    unknown_kinds: set[Kind] = field(default_factory=set)
    unreadable: list[Unreadable] = field(default_factory=list)

    def add(self, key: str, device: Device) -> None:
        self.by_kind[device.kind].setdefault(key, device)

    def unknown(self, kinds: tuple[Kind, ...], source: str, reason: str) -> None:
        self.unknown_kinds.update(kinds)
        self.unreadable.append(Unreadable(source=source, reason=reason))

    def result(self, os_name: str) -> Result:
        counts = {kind: None if kind in self.unknown_kinds else len(self.by_kind[kind])
                  for kind in KINDS}
        devices = [device for kind in KINDS if kind not in self.unknown_kinds
                   for device in self.by_kind[kind].values()]
        return Result(os=os_name, counts=counts, devices=devices[:MAX_DEVICES],
                      unreadable=self.unreadable)


# -- Which USB devices are scanners ------------------------------------------------------------

KNOWN_SCANNERS = frozenset({
    "04a9:1904", "04a9:1905", "04a9:1909", "04a9:190a", "04a9:190e", "04a9:190f",
    "03f0:4505", "03f0:4605", "07b3:0900",
})
"""Scanners that show only a vendor-specific interface: Canon CanoScan LiDE 100, 200, 110, 210,
120, 220; HP ScanJet G4010, G4050; Plustek OpticBook 3600 (USB ids from sane-backends 1.0.25,
doc/descriptions/genesys.desc). Most others announce interface class 06 (still image)."""
MULTIFUNCTION = re.compile(r"\bMFP\b|\bMFC-|\bDCP-|All[- ]in[- ]One|\bscan", re.IGNORECASE)
"""Printer names that say the printer also scans (HP "MFP", Brother "MFC-"/"DCP-")."""


def _is_scanner(vendor_id: str | None, product_id: str | None, classes: set[int],
                name: str) -> bool:
    if 0x06 in classes or f"{vendor_id}:{product_id}" in KNOWN_SCANNERS:
        return True  # class 06 is also what cameras and phones in PTP mode announce
    return 0x07 in classes and MULTIFUNCTION.search(name) is not None


# -- Linux -------------------------------------------------------------------------------------

USB_CLASS_AUDIO, USB_CLASS_PRINTER, USB_CLASS_VIDEO, USB_CLASS_HUB = 0x01, 0x07, 0x0E, 0x09
_USB_DEVICE = re.compile(r"^\d+-[\d.]+$")
"""A USB device's sysfs name is its port path (`1-6`, `3-1.4`); root hubs are `usbN` and
interfaces `1-6:1.0`."""


@dataclass(frozen=True)
class _Usb:
    port: str
    real: Path
    """The device's directory in /sys/devices, which video and sound nodes lead back to."""
    vendor_id: str | None
    product_id: str | None
    name: str
    serial: str | None
    classes: frozenset[int]
    """Interface classes (bInterfaceClass) of the active configuration."""

    def device(self, kind: Kind, name: str | None = None, driver: str | None = None) -> Device:
        return Device(kind=kind, name=name or self.name, bus="usb", path=self.port,
                      vendor_id=self.vendor_id, product_id=self.product_id, serial=self.serial,
                      driver=driver)

    @property
    def key(self) -> str:
        return str(self.real)


def _linux(config: Config, found: _Found) -> None:
    sys_root, proc_root = Path(config.sys_root), Path(config.proc_root)
    if problem := tree_problem(sys_root, "class"):
        found.unknown(KINDS, "sysfs", problem)
        return
    # a class or bus directory missing under a readable sysfs means no driver registered
    # one such device: a true zero (this is how a machine without USB or sound looks)
    usb = _usb_devices(sys_root)
    by_path = {u.real: u for u in usb}
    for u in usb:
        found.add(u.key, u.device("usb"))
        if USB_CLASS_VIDEO in u.classes:
            found.add(u.key, u.device("webcam"))
        if USB_CLASS_PRINTER in u.classes:
            found.add(u.key, u.device("printer"))
        if _is_scanner(u.vendor_id, u.product_id, set(u.classes), u.name):
            found.add(u.key, u.device("scanner"))
    for node in entries(sys_root / "class" / "video4linux"):
        # a UVC camera has a capture and a metadata node (and an IR camera two more): all
        # lead back to one USB device. Nodes not on USB (codecs, tuners, ISPs) cannot be told
        # from cameras without opening them, so they are left out.
        owner = _usb_owner(node / "device", by_path)
        if owner is not None:
            found.add(owner.key, owner.device("webcam"))
    for node in (*entries(sys_root / "class" / "usbmisc"), *entries(sys_root / "class" / "usb")):
        # usblp's nodes (`usbmisc` since Linux 2.6.x, `usb` before); interface class 07 already
        # finds printers whether usblp is bound or not (CUPS often runs with it blacklisted)
        if node.name.startswith("lp") and (owner := _usb_owner(node / "device", by_path)):
            found.add(owner.key, owner.device("printer", driver="usblp"))
    _alsa(sys_root, proc_root, by_path, found)
    _cups(config, found)


def _usb_devices(sys_root: Path) -> list[_Usb]:
    links = entries(sys_root / "bus" / "usb" / "devices")
    devices = []
    for link in links:
        if not _USB_DEVICE.match(link.name) or attr_int(link / "bDeviceClass", 16) == USB_CLASS_HUB:
            continue
        classes = frozenset(c for i in links if i.name.startswith(link.name + ":")
                            if (c := attr_int(i / "bInterfaceClass", 16)) is not None)
        vendor, product = attr(link / "idVendor"), attr(link / "idProduct")
        name = " ".join(filter(None, (attr(link / "manufacturer"), attr(link / "product"))))
        devices.append(_Usb(port=link.name, real=link.resolve(), vendor_id=vendor,
                            product_id=product, name=name or f"USB device {vendor}:{product}",
                            serial=attr(link / "serial"), classes=classes))
    return devices


def _usb_owner(device_link: Path, by_path: dict[Path, _Usb]) -> _Usb | None:
    """The USB device a class device (video node, sound card) belongs to, if any: its
    `device` link points at a USB interface or device, whose directory is under the device's."""
    if not device_link.exists():
        return None  # virtual (v4l2loopback, snd-aloop): no hardware behind it
    path = device_link.resolve()
    for candidate in (path, *path.parents):
        if candidate in by_path:
            return by_path[candidate]
    return None


_PCM = re.compile(r"^pcmC(\d+)D(\d+)([cp])$")
PCM_KINDS: tuple[tuple[str, Kind], ...] = (("c", "microphone"), ("p", "speaker"))
"""ALSA PCM directions: capture (`c`) and playback (`p`)."""
_HDMI = re.compile(r"HDMI|DisplayPort|\bDP\b", re.IGNORECASE)
"""A playback PCM to a monitor's HDMI or DisplayPort input, not to speakers."""


def _alsa(sys_root: Path, proc_root: Path, by_path: dict[Path, _Usb], found: _Found) -> None:
    names = _alsa_card_names(proc_root)
    pcms: dict[str, set[str]] = {}
    for node in entries(sys_root / "class" / "sound"):
        if match := _PCM.match(node.name):
            card, pcm, direction = match.groups()
            info = attr(proc_root / "asound" / f"card{card}" / f"pcm{pcm}{direction}" / "info")
            if direction == "p" and info and _HDMI.search(info):
                continue
            pcms.setdefault(card, set()).add(direction)
    for card, directions in sorted(pcms.items()):
        node = sys_root / "class" / "sound" / f"card{card}"
        if not (node / "device").exists():
            continue  # a virtual card (snd-aloop, snd-dummy): no microphone or speaker
        owner = _usb_owner(node / "device", by_path)
        driver_link = node / "device" / "driver"
        driver = driver_link.resolve().name if driver_link.exists() else None
        name = names.get(card) or attr(node / "id") or f"card{card}"
        for direction, kind in PCM_KINDS:
            if direction not in directions:
                continue
            if owner is not None:
                found.add(f"{owner.key}:{card}", owner.device(kind, name=name, driver=driver))
            else:
                found.add(f"card{card}", Device(kind=kind, name=name, bus=_bus(node / "device"),
                                                path=f"card{card}", driver=driver))


_CARD_LINE = re.compile(r"^\s*(\d+)\s+\[[^\]]*\]:\s+\S+\s+-\s+(.+)$")


def _alsa_card_names(proc_root: Path) -> dict[str, str]:
    """Card number to name from /proc/asound/cards (` 1 [C920 ]: USB-Audio - HD Pro Webcam C920`);
    names only, so a missing file costs names, not counts."""
    cards = attr(proc_root / "asound" / "cards") or ""
    return {m[1]: m[2].strip() for line in cards.splitlines() if (m := _CARD_LINE.match(line))}


def _bus(device_link: Path) -> str | None:
    parts = device_link.resolve().parts
    return "usb" if any(p.startswith("usb") for p in parts) else (
        "pci" if any(p.startswith("pci") for p in parts) else "platform")


NETWORK_SCHEMES = frozenset({"ipp", "ipps", "http", "https", "socket", "lpd", "smb", "dnssd",
                             "implicitclass"})
"""CUPS device URIs of printers on the network; `usb:`/`hp:/usb` queues are counted from
the USB device itself, and `cups-pdf:`, `file:` are not printers."""


def _cups(config: Config, found: _Found) -> None:
    """Network printers known to CUPS, one per printer host (two queues on one printer, e.g.
    a driverless and a vendor one, are one printer)."""
    if config.lpstat_recorded is not None:
        try:
            output = Path(config.lpstat_recorded).read_text(encoding="utf-8")
        except OSError as exc:
            found.unknown(("printer",), "cups", f"no recorded lpstat output ({exc.strerror})")
            return
    elif (lpstat := shutil.which("lpstat")) is None:
        return  # no CUPS client: nothing can print to a network printer through CUPS
    else:
        try:
            done = subprocess.run([lpstat, "-v"], capture_output=True, timeout=10, check=False,
                                  env={**os.environ, "LC_ALL": "C"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            found.unknown(("printer",), "cups", f"lpstat -v: {exc}")
            return
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        if done.returncode != 0 and "No destinations added" not in output:
            found.unknown(("printer",), "cups",
                          f"lpstat -v: exit {done.returncode}: {output.strip()[:200]}")
            return
    for line in output.splitlines():
        queue, sep, uri = line.removeprefix("device for ").partition(": ")
        if not sep or not line.startswith("device for "):
            continue
        parts = urlsplit(uri.strip())
        if parts.scheme in NETWORK_SCHEMES or (parts.scheme == "hp" and "/net/" in parts.path):
            host = parts.hostname or queue
            found.add(f"cups:{host}", Device(kind="printer", name=queue, bus="network",
                                             path=queue))


# -- Windows -----------------------------------------------------------------------------------

PNP_QUERY = ("Get-PnpDevice -PresentOnly | Where-Object { $_.Class -in "
             "@('Camera','Image','AudioEndpoint') -or $_.InstanceId -like 'USB\\VID_*' } | "
             "Select-Object Class,FriendlyName,InstanceId,Status,Manufacturer,CompatibleID | "
             "ConvertTo-Json")
"""Present cameras, imaging devices (WIA scanners, older webcams), audio endpoints, and
every USB device whatever its class (keyboards are HIDClass, sticks DiskDrive)."""
PRINTER_QUERY = "Get-Printer | Select-Object Name,PortName,DriverName | ConvertTo-Json"
VIRTUAL_PORTS = frozenset({"portprompt:", "nul:", "shrfax:", "file:", "xpsport:"})
"""Ports of the queues Windows installs without any printer: Print to PDF, XPS Document
Writer, OneNote, Fax."""
VIRTUAL_PRINTERS = re.compile(r"PDF|XPS|OneNote|\bFax\b", re.IGNORECASE)
_USB_ID = re.compile(r"^USB\\VID_([0-9A-F]{4})&PID_([0-9A-F]{4})(&MI_[0-9A-F]{2})?\\(.+)$",
                     re.IGNORECASE)


def _windows(config: Config, found: _Found) -> None:
    timeout = config.timeout_seconds / 2
    pnp = windows_query("pnp_devices", PNP_QUERY, config.windows_recorded, timeout,
                        found.unreadable)
    if pnp is None:
        found.unknown_kinds.update(k for k in KINDS if k != "printer")
    else:
        for device in pnp:
            _windows_device(device, found)
    printers = windows_query("printers", PRINTER_QUERY, config.windows_recorded, timeout,
                             found.unreadable)
    if printers is None:
        found.unknown_kinds.add("printer")
    else:
        for queue in printers:
            _windows_printer(queue, found)


def _windows_device(pnp: dict[str, Any], found: _Found) -> None:
    instance = text(pnp.get("InstanceId")) or ""
    name = text(pnp.get("FriendlyName")) or instance
    pnp_class = text(pnp.get("Class"))
    compatible = " ".join(str(c) for c in pnp.get("CompatibleID") or [])
    usb = _USB_ID.match(instance)
    vendor, product = (usb[1].lower(), usb[2].lower()) if usb else (None, None)
    # an interface's instance is `<parent's id>&<interface>`: cut the last part to group the
    # interfaces (RGB and IR camera, camera and microphone) of one USB device
    parent = usb[4].rpartition("&")[0] if usb and usb[3] else None
    serial = usb[4] if usb and not usb[3] and "&" not in usb[4] else None
    device_key = f"{vendor}:{product}:{parent}" if parent else instance

    def add(kind: Kind) -> None:
        found.add(device_key, Device(kind=kind, name=name, bus="usb" if usb else None,
                                     path=instance, vendor_id=vendor, product_id=product,
                                     serial=serial))

    if pnp_class == "Camera" or (pnp_class == "Image" and "CLASS_0E" in compatible.upper()):
        add("webcam")
    elif pnp_class == "Image" or _is_scanner(vendor, product, set(), name):
        add("scanner")
    elif pnp_class == "AudioEndpoint":
        # MMDevice ids: {0.0.0.00000000}.{guid} renders (speakers), {0.0.1.00000000} captures
        if "{0.0.1." in instance:
            add("microphone")
        elif "{0.0.0." in instance:
            add("speaker")
    if usb and not usb[3] and "CLASS_09" not in compatible.upper():
        add("usb")  # a device node, not one of its interfaces, and not a hub


def _windows_printer(queue: dict[str, Any], found: _Found) -> None:
    name = text(queue.get("Name")) or "printer"
    port = text(queue.get("PortName")) or name
    driver = text(queue.get("DriverName")) or ""
    if port.lower() in VIRTUAL_PORTS or VIRTUAL_PRINTERS.search(f"{name} {driver}"):
        return
    local = port.upper().startswith(("USB", "DOT4", "LPT"))
    # queues sharing a port print to one printer (e.g. an MFP's printer and fax queues)
    found.add(f"port:{port.lower()}", Device(kind="printer", name=name,
                                             bus="usb" if local else "network", path=port))


# -- Metrics and inventory ---------------------------------------------------------------------

COUNT = MetricSpec("wardready_peripherals", "Peripherals of each kind the OS sees; absent when "
                   "the kind could not be counted (see wardready_peripherals_known).", ("kind",))
KNOWN = MetricSpec("wardready_peripherals_known",
                   "1 if peripherals of this kind could be counted, 0 if unknown.", ("kind",))
INFO = MetricSpec("wardready_peripheral_info",
                  f"A peripheral the OS sees (at most {MAX_INFO_SERIES} listed).",
                  ("kind", "device", "name", "bus", "vendor_id", "product_id"))
METRICS = (COUNT, KNOWN, INFO)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one peripherals result."""
    for kind in KINDS:
        count = result.counts.get(kind)
        yield Sample(KNOWN, (kind,), 0 if count is None else 1)
        if count is not None:
            yield Sample(COUNT, (kind,), count)
    for d in result.devices[:MAX_INFO_SERIES]:
        yield Sample(INFO, (d.kind, d.path, d.name, d.bus or "", d.vendor_id or "",
                            d.product_id or ""), 1)


def inventory(result: Result) -> dict[str, list[InventoryItem]]:
    """The devices by kind, for the server's equipment history; a kind that could not be
    counted is left out, so its items are not taken as removed."""
    items: dict[str, list[InventoryItem]] = {
        kind: [] for kind in KINDS if result.counts.get(kind) is not None}
    for d in result.devices:
        if d.kind in items:
            key = f"{d.vendor_id}:{d.product_id}:{d.serial}" if d.serial else d.path
            items[d.kind].append(InventoryItem(d.kind, key, (("name", d.name),)))
    return items


CHECK = CheckSpec(name="peripherals", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, inventory=inventory)
