"""The ward's routers and switches, polled over SSH with netmiko.

For each device of the inventory (`context.devices`): model, OS version, serial, hostname,
uptime, interfaces (admin and operational state, speed, duplex, error counters), CPU and memory
where the platform tells them. Network operating systems are parsed with ntc-templates' TextFSM
templates; netmiko's `linux` type with one shell command and a small parser of our own.

Credentials never come from the inventory: environment variables or a secrets file readable
only by the agent's user. netmiko is imported only when a ward has devices to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    DeviceTarget,
    InventoryItem,
    ResultModel,
)
from wardready.checks.sysfs import firmware_text
from wardready.core.errors import CredentialsError, PollError, PollReason
from wardready.core.metrics import MetricSpec, Sample

log = logging.getLogger(__name__)

MAX_DEVICES = 64
MAX_INTERFACES = 128
"""Bounds on the `device` and `interface` label cardinality and on the report's size."""
MAX_ERROR_CHARS = 200
ENV_PREFIX = "WARDREADY_DEVICE_"

REASONS: tuple[PollReason, ...] = get_args(PollReason)


class Config(CheckConfig):
    """How to reach the devices, where their credentials are, and how long each may take."""

    enabled: bool = False
    """Off by default: one agent per ward polls its devices (e.g. the conference-room PC's),
    not every counter PC."""
    interval_seconds: float = Field(default=900.0, gt=0)
    timeout_seconds: float = Field(default=300.0, gt=0)
    credentials_file: Annotated[Path, Field(strict=False)] | None = None
    """YAML with `default:` and/or `devices: {name: ...}` entries of username, password and
    (enable) secret; it must not be readable by group or others."""
    max_concurrent: int = Field(default=4, ge=1, le=32)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    banner_timeout_seconds: float = Field(default=10.0, gt=0)
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=20.0, gt=0)
    """For each command's output (and netmiko's prompt detection)."""
    device_timeout_seconds: float = Field(default=60.0, gt=0)
    """Deadline for one device, from TCP connect to the last command."""
    known_hosts_file: Annotated[Path, Field(strict=False)] | None = None
    """OpenSSH known_hosts with the devices' host keys (`ssh-keyscan -p PORT ADDRESS`); when
    given, a device whose key is missing from it or differs is not logged into (reason
    `host-key`). Without it any key is accepted: a machine posing as the router would get
    the login."""

    @model_validator(mode="after")
    def _deadlines_fit(self) -> Config:
        # Otherwise the agent cancels the whole check and every device's result is lost.
        if self.device_timeout_seconds >= self.timeout_seconds:
            raise ValueError("device_timeout_seconds must be less than timeout_seconds")
        return self


class Interface(ResultModel):
    """One interface of a device; None where the platform does not say."""

    name: str
    admin_up: bool | None = None
    oper_up: bool | None = None
    speed_bits_per_second: float | None = None
    full_duplex: bool | None = None
    input_errors: int | None = None
    output_errors: int | None = None
    crc_errors: int | None = None


_LOGICAL_PORT = re.compile(
    r"^(lo(opback)?|vl(an)?|tu(nnel)?|tun|tap|nu(ll)?|di(aler)?|bvi|nve|br|docker|veth|virbr"
    r"|wg|se(rial)?|cellular|mgmt|ma(nagement)?)(?=[0-9/.:_-]|$)", re.IGNORECASE)
"""Loopbacks, VLAN and tunnel interfaces, bridges, serial lines and management ports: their
"speed" is a configured figure or not the LAN's, so only Ethernet ports are held to one."""


def is_physical_port(name: str) -> bool:
    """Whether an interface is a LAN Ethernet port (GigabitEthernet0/1, Et1, eth0, enp3s0)."""
    return _LOGICAL_PORT.match(name) is None


class Facts(ResultModel):
    """What a device's outputs say; None where the platform does not say."""

    hostname: str | None = None
    model: str | None = None
    os_version: str | None = None
    serial: str | None = None
    uptime_seconds: float | None = None
    cpu_utilisation_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    interfaces: list[Interface] = Field(default_factory=list)


class DevicePoll(Facts):
    """What one poll of one device found, or why it failed."""

    name: str
    address: str
    device_type: str
    role: str
    up: bool
    """Logged in and parsed the device's facts and interfaces."""
    reason: PollReason | None = None
    error: str | None = None
    duration_seconds: float
    interfaces: list[Interface] = Field(default=[], max_length=MAX_INTERFACES)
    interfaces_dropped: int = 0
    """Interfaces beyond MAX_INTERFACES, left out."""


class Result(CheckResult):
    """One poll per device, in inventory order."""

    devices: list[DevicePoll] = Field(max_length=MAX_DEVICES)


# --- credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A login; secrets are kept out of repr so they cannot reach a log by accident."""

    username: str
    password: str = field(repr=False)
    secret: str = field(default="", repr=False)


class _Login(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    secret: str = ""


class _SecretsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    default: _Login | None = None
    devices: dict[str, _Login] = {}


def load_credentials_file(path: Path) -> _SecretsFile:
    """Read the secrets file, refusing one that group or others may read."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read credentials file: "
                               f"{exc.strerror or exc}") from None
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        raise CredentialsError(f"{path}: credentials file is readable by group or others "
                               f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return _SecretsFile.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise CredentialsError(f"{path}: cannot read credentials file: "
                               f"{type(exc).__name__}") from None
    except ValidationError as exc:
        # Only where the mistake is: the values themselves may be secrets.
        where = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise CredentialsError(f"{path}: invalid credentials file at {where}") from None


def _env_login(environ: Mapping[str, str], prefix: str) -> Credentials | None:
    username, password = environ.get(prefix + "USERNAME"), environ.get(prefix + "PASSWORD")
    if not username or not password:
        return None
    return Credentials(username, password, environ.get(prefix + "SECRET", ""))


def env_name(device: str) -> str:
    """The prefix of a device's own environment variables, e.g. WARDREADY_DEVICE_CORE_SW_1_."""
    return f"{ENV_PREFIX}{re.sub(r'[^A-Za-z0-9]', '_', device).upper()}_"


def resolve_credentials(devices: Iterable[DeviceTarget], config: Config,
                        environ: Mapping[str, str] | None = None
                        ) -> dict[str, Credentials | None]:
    """Each device's login: the first complete one of its own environment variables, its
    entry in the secrets file, the default environment variables, the file's default."""
    env = os.environ if environ is None else environ
    file = load_credentials_file(config.credentials_file) if config.credentials_file else None

    def from_file(login: _Login | None) -> Credentials | None:
        return Credentials(login.username, login.password, login.secret) if login else None

    resolved: dict[str, Credentials | None] = {}
    for device in devices:
        candidates = (
            _env_login(env, env_name(device.name)),
            from_file(file.devices.get(device.name)) if file else None,
            _env_login(env, ENV_PREFIX),
            from_file(file.default) if file else None,
        )
        resolved[device.name] = next((c for c in candidates if c), None)
    return resolved


# --- platforms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """What to ask one kind of device, and which ntc-templates platform parses it."""

    platform: str
    facts: tuple[str, ...]
    """Commands whose first records give model, version, serial, hostname, uptime."""
    interfaces: tuple[str, ...]
    """Commands with one record per interface, merged by name."""
    extras: tuple[str, ...] = ()
    """Optional commands (CPU, memory): a device that refuses them is still up."""
    enable: bool = False
    memory_unit: int = 1
    """Bytes per unit of memory figures that carry no unit of their own."""


CISCO_IOS = Recipe("cisco_ios", ("show version",), ("show interfaces",),
                   ("show processes cpu", "show processes memory sorted"), enable=True)
RECIPES: dict[str, Recipe] = {
    "cisco_ios": CISCO_IOS,
    # IOS-XE answers like IOS and ntc-templates parses it with the IOS templates.
    "cisco_xe": CISCO_IOS,
    "cisco_nxos": Recipe("cisco_nxos", ("show version",), ("show interface",),
                         ("show processes cpu",)),
    "arista_eos": Recipe("arista_eos", ("show version", "show hostname"), ("show interfaces",),
                         ("show processes top once",), enable=True, memory_unit=1024),
    "juniper_junos": Recipe("juniper_junos", ("show version",), ("show interfaces",)),
    "hp_procurve": Recipe("hp_procurve", ("show system", "show version"),
                          ("show interfaces brief", "show interfaces"), enable=True),
    "huawei": Recipe("huawei_vrp", ("display version",), ("display interface",)),
    "mikrotik_routeros": Recipe(
        "mikrotik_routeros",
        ("/system resource print", "/system routerboard print", "/system identity print"),
        ("/interface print detail",)),
}

# Field names the templates of the various platforms use for the same fact, in preference order.
HOSTNAME_KEYS = ("hostname", "name")
MODEL_KEYS = ("hardware", "model", "platform", "hardware_model", "board_name")
VERSION_KEYS = ("version", "image", "os", "junos_version", "software_version", "vrp_version")
SERIAL_KEYS = ("serial", "serial_number")
CPU_PERCENT_KEYS = ("cpu_usage_1_min", "cpu_1_min", "cpu_util", "cpu_load")
CPU_IDLE_KEYS = ("global_cpu_percent_idle",)
MEM_TOTAL_KEYS = ("memory_total", "total_memory", "mem_tot", "global_mem_total")
MEM_USED_KEYS = ("memory_used", "global_mem_used")
MEM_FREE_KEYS = ("memory_free", "free_memory", "mem_free", "global_mem_free")

_UNITS = {"year": 365 * 86400, "week": 7 * 86400, "day": 86400, "hour": 3600, "minute": 60,
          "second": 1}
_DURATION = re.compile(r"(\d+)\s*(year|week|day|hour|minute|second)s?", re.IGNORECASE)
_SPEED = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg])(?:b(?:it)?)?(?:/s|ps)?\b", re.IGNORECASE)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]i?b)?$", re.IGNORECASE)
_SIZE_UNITS = {"kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3,
               "gib": 1024**3}
# IOS, EOS and NX-OS all print one block per interface with these phrases; they fill in what a
# platform's template leaves out (EOS's has no duplex or error counters).
_BLOCK_START = re.compile(r"^(\S+) is (?:up|down|administratively down)\b", re.MULTILINE)
_BLOCK_FIELDS = {
    # At a line's start: a port-channel's member lines ("Member 0 : Te0/0/0 , Full-duplex,
    # 10000Mb/s") describe the members, not the channel.
    "duplex": re.compile(r"^\s*(full|half)-duplex", re.IGNORECASE | re.MULTILINE),
    "speed": re.compile(r"^\s*(?:full|half)-duplex,\s*(\d+\s*[kmg]b/s)",
                        re.IGNORECASE | re.MULTILINE),
    "input_errors": re.compile(r"(\d+) input errors"),
    "crc": re.compile(r"(\d+) CRC"),
    "output_errors": re.compile(r"(\d+) output errors"),
}


Parse = Callable[[str, str, str], list[dict[str, Any]]]
"""(platform, command, output) -> TextFSM records."""


def _ntc_parse(platform: str, command: str, output: str) -> list[dict[str, Any]]:
    from ntc_templates.parse import parse_output  # lazy: textfsm only where devices are

    records: list[dict[str, Any]] = parse_output(platform=platform, command=command,
                                                 data=output)
    return records


def parse_outputs(recipe: Recipe, outputs: Mapping[str, str], parse: Parse = _ntc_parse) -> Facts:
    """Turn a device's command outputs into facts; raises PollError("parse") when the
    facts or the interfaces cannot be read."""
    def records(command: str) -> list[dict[str, Any]]:
        try:
            return parse(recipe.platform, command, outputs.get(command, ""))
        except Exception as exc:  # textfsm's errors have no common base worth naming
            raise PollError("parse", f"cannot parse {command!r}: {type(exc).__name__}") from None

    facts_records = [r[0] for r in map(records, recipe.facts) if r]
    first = _first_of(facts_records)
    model, os_version = first(MODEL_KEYS), first(VERSION_KEYS)
    if model is None and os_version is None:
        raise PollError("parse", f"no model or version in the output of {recipe.facts[0]!r}")
    uptime = first(("uptime",))

    interfaces: dict[str, dict[str, Any]] = {}
    for command in recipe.interfaces:
        for record in records(command):
            name = _text(record, ("interface", "port", "name"))
            if name:
                merged = interfaces.setdefault(name, {})
                merged.update({k: v for k, v in record.items() if v not in ("", [], None)})
        for name, extra in _blocks(outputs.get(command, "")).items():
            if name in interfaces:
                for key, value in extra.items():
                    interfaces[name].setdefault(key, value)
    if not interfaces:
        raise PollError("parse", f"no interfaces in the output of {recipe.interfaces[0]!r}")

    extra_records = [r[0] for c in recipe.extras if (r := _optional(records, c))]
    memory_total, memory_used = _memory(facts_records + extra_records, recipe.memory_unit)
    return Facts(hostname=first(HOSTNAME_KEYS), model=model, os_version=os_version,
                 serial=first(SERIAL_KEYS),
                 uptime_seconds=_duration_seconds(uptime) if uptime else None,
                 cpu_utilisation_ratio=_cpu_ratio(_first_of(extra_records)),
                 memory_total_bytes=memory_total, memory_used_bytes=memory_used,
                 interfaces=[_interface(name, r) for name, r in interfaces.items()])


def _optional(records: Callable[[str], list[dict[str, Any]]],
              command: str) -> list[dict[str, Any]]:
    try:
        return records(command)
    except PollError:
        return []  # a platform or image without the command: the figure stays unknown


def _first_of(records: list[dict[str, Any]]) -> Callable[[tuple[str, ...]], str | None]:
    return lambda keys: next((v for r in records if (v := _text(r, keys))), None)


def _text(record: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, list):  # e.g. IOS stacks list one serial per member
            value = value[0] if value else None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _duration_seconds(text: str) -> float | None:
    parts = _DURATION.findall(text)
    return float(sum(int(n) * _UNITS[u.lower()] for n, u in parts)) if parts else None


def _state(text: str | None) -> bool | None:
    value = (text or "").strip().lower()
    if value.startswith(("up", "enabled", "yes", "connected")):
        return True
    if value.startswith(("down", "disabled", "no", "admin", "notconnect", "lowerlayerdown")):
        return False
    return None


def _count(record: Mapping[str, Any], key: str) -> int | None:
    value = record.get(key)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _bits_per_second(text: str | None) -> float | None:
    match = _SPEED.search(text or "")
    if match is None:
        return None
    return float(match.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]


def _interface(name: str, r: Mapping[str, Any]) -> Interface:
    link = _text(r, ("link_status", "status"))
    admin = _state(_text(r, ("admin_state", "enabled")))
    if admin is None and link is not None:
        # IOS-like platforms fold the admin state into the link state.
        admin = not link.lower().startswith("admin")
    oper = _state(link)
    protocol = _state(_text(r, ("protocol_status",)))
    if oper and protocol is False:
        oper = False
    duplex = (_text(r, ("duplex",)) or "").lower()
    # The negotiated speed where the platform gives it; else the configured bandwidth.
    speed = _bits_per_second(_text(r, ("speed",))) or _bits_per_second(_text(r, ("bandwidth",)))
    return Interface(
        name=name, admin_up=admin, oper_up=oper, speed_bits_per_second=speed,
        full_duplex=True if "full" in duplex else False if "half" in duplex else None,
        input_errors=_count(r, "input_errors") if "input_errors" in r else _count(r, "errors_rx"),
        output_errors=_count(r, "output_errors"), crc_errors=_count(r, "crc"))


def _blocks(output: str) -> dict[str, dict[str, str]]:
    starts = list(_BLOCK_START.finditer(output))
    blocks: dict[str, dict[str, str]] = {}
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(output)
        body = output[start.start():end]
        blocks[start.group(1)] = {key: m.group(1) for key, rx in _BLOCK_FIELDS.items()
                                  if (m := rx.search(body))}
    return blocks


def _cpu_ratio(first: Callable[[tuple[str, ...]], str | None]) -> float | None:
    try:
        if (percent := first(CPU_PERCENT_KEYS)) is not None:
            return float(percent.rstrip("%")) / 100
        if (idle := first(CPU_IDLE_KEYS)) is not None:
            return (100 - float(idle)) / 100
    except ValueError:
        pass  # an odd figure (e.g. "n/a"): unknown rather than a failed poll
    return None


def _size(text: str | None, unit: int) -> float | None:
    match = _SIZE.match((text or "").strip())
    if match is None:
        return None
    return float(match.group(1)) * (_SIZE_UNITS[match.group(2).lower()] if match.group(2)
                                    else unit)


def _memory(records: list[dict[str, Any]], unit: int) -> tuple[float | None, float | None]:
    """Total and used memory from the first record that gives both (used may be total - free):
    figures from different commands would not add up."""
    for record in records:
        total = _size(_text(record, MEM_TOTAL_KEYS), unit)
        used = _size(_text(record, MEM_USED_KEYS), unit)
        free = _size(_text(record, MEM_FREE_KEYS), unit)
        if used is None and total is not None and free is not None:
            used = total - free
        if total is not None and used is not None:
            return total, used
    return None, None


# --- linux ---------------------------------------------------------------------------------

LINUX_COMMAND = (
    "s(){ printf '@%s\\n' \"$1\"; };{ s hostname;hostname;s os-release;cat /etc/os-release;"
    "s uptime;cat /proc/uptime;cd /sys/class;s serial;cat dmi/id/product_serial;"
    "s model;cat dmi/id/product_name;s meminfo;cat /proc/meminfo;s stat;head -n1 /proc/stat;"
    "sleep 0.5;s stat2;head -n1 /proc/stat;cd net;for i in *;do s \"net $i\";for f in flags "
    "operstate speed duplex statistics/rx_errors statistics/tx_errors statistics/rx_crc_errors;"
    "do printf %s= $f;cat $i/$f||echo;done;done;} 2>/dev/null;s end"
)
"""One round trip, under 511 characters (netmiko's terminal width: longer echoes wrap); every
file read is optional (no DMI in VMs, no speed on virtual links)."""
LINUX_END = r"(?m)^@end\s*$"
"""Where the output ends: the prompt ('$') also occurs in the command's own echo."""


def parse_linux(output: str) -> Facts:
    """Parse LINUX_COMMAND's output."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("@"):
            current = sections.setdefault(line[1:].strip(), [])
        elif current is not None:
            current.append(line.strip())
    if "uptime" not in sections or not any(k.startswith("net ") for k in sections):
        raise PollError("parse", "the Linux command's output lacks uptime or interfaces")

    def one(name: str) -> str | None:
        return next((v for v in sections.get(name, []) if v), None)

    release = dict(_key_value(line, "=") for line in sections.get("os-release", []))
    meminfo = {k: v for k, v in (_key_value(line, ":") for line in sections.get("meminfo", []))}
    total, available = _kib(meminfo.get("MemTotal")), _kib(meminfo.get("MemAvailable"))
    try:
        uptime: float | None = float((one("uptime") or "").split()[0])
    except (ValueError, IndexError):
        uptime = None
    return Facts(
        hostname=one("hostname"), model=firmware_text(one("model")),
        os_version=release.get("PRETTY_NAME") or release.get("NAME"),
        serial=firmware_text(one("serial")), uptime_seconds=uptime,
        cpu_utilisation_ratio=_stat_busy(one("stat"), one("stat2")),
        memory_total_bytes=total,
        memory_used_bytes=total - available if total is not None and available is not None
        else None,
        interfaces=[_linux_interface(name[4:], lines) for name, lines in sections.items()
                    if name.startswith("net ") and name != "net lo"])


def _key_value(line: str, sep: str) -> tuple[str, str]:
    key, _, value = line.partition(sep)
    return key.strip(), value.strip().strip('"')


def _kib(text: str | None) -> float | None:
    parts = (text or "").split()
    return float(parts[0]) * 1024 if parts and parts[0].isdigit() else None


def _stat_busy(before: str | None, after: str | None) -> float | None:
    """Busy share of CPU time between two `cpu` lines of /proc/stat."""
    try:
        a = [int(x) for x in (before or "").split()[1:]]
        b = [int(x) for x in (after or "").split()[1:]]
    except ValueError:
        return None
    if len(a) < 4 or len(a) != len(b):
        return None
    total = sum(b) - sum(a)
    idle = (b[3] + (b[4] if len(b) > 4 else 0)) - (a[3] + (a[4] if len(a) > 4 else 0))
    return max(0.0, min(1.0, 1 - idle / total)) if total > 0 else None


def _linux_interface(name: str, lines: list[str]) -> Interface:
    values = dict(_key_value(line, "=") for line in lines)

    def number(key: str) -> int | None:
        value = values.get(key, "")
        return int(value) if value.lstrip("-").isdigit() else None

    flags = int(values["flags"], 16) if values.get("flags", "").startswith("0x") else None
    speed = number("speed")  # Mb/s; -1 or absent when there is no link or no PHY
    duplex = values.get("duplex", "")
    return Interface(
        name=name, admin_up=None if flags is None else bool(flags & 0x1),  # IFF_UP
        oper_up=_state(values.get("operstate")),
        speed_bits_per_second=speed * 1e6 if speed and speed > 0 else None,
        full_duplex=True if duplex == "full" else False if duplex == "half" else None,
        input_errors=number("statistics/rx_errors"), output_errors=number("statistics/tx_errors"),
        crc_errors=number("statistics/rx_crc_errors"))


# --- polling -------------------------------------------------------------------------------


async def run(config: Config, context: Context) -> Result:
    """Poll every device, at most `max_concurrent` at a time; one failing device never
    affects the others, and a Result comes back even if all of them failed."""
    devices = context.devices
    if len(devices) > MAX_DEVICES:
        raise ValueError(f"{len(devices)} devices; at most {MAX_DEVICES} are polled")
    if not devices:
        return Result(devices=[])
    logins = resolve_credentials(devices, config)
    bound = asyncio.Semaphore(config.max_concurrent)

    async def bounded(device: DeviceTarget) -> DevicePoll:
        async with bound:
            return await poll(device, logins[device.name], config)

    return Result(devices=list(await asyncio.gather(*(bounded(d) for d in devices))))


async def poll(device: DeviceTarget, login: Credentials | None, config: Config) -> DevicePoll:
    """Poll one device; never raises (except on cancellation): failures are in the result."""
    started = time.perf_counter()
    holder: list[socket.socket] = []
    facts: Facts | None = None
    reason: PollReason | None = None
    error: str | None = None
    try:
        if device.device_type not in RECIPES and device.device_type != "linux":
            raise PollError("unsupported", f"no recipe for device type {device.device_type!r}")
        if login is None:
            raise PollError("no-credentials", f"no credentials for {device.name} (set "
                            f"{env_name(device.name)}USERNAME/PASSWORD or credentials_file)")
        facts = await asyncio.wait_for(_connect_and_poll(device, login, config, holder),
                                       config.device_timeout_seconds)
    except TimeoutError:
        reason = "timeout"
        error = f"no complete answer within {config.device_timeout_seconds:g} s"
    except PollError as exc:
        reason, error = exc.reason, str(exc)
    except Exception as exc:  # whatever else goes wrong stays with this device
        reason, error = "protocol", type(exc).__name__
    finally:
        for sock in holder:
            # Ends a netmiko thread still blocked on this device: its reads fail at once.
            _abort(sock)
    duration = time.perf_counter() - started
    if error is not None and login is not None:
        error = _scrub(error, login)
    if reason is not None:
        log.info("device %s: %s", device.name, reason)
    base = dict(name=device.name, address=device.address, device_type=device.device_type,
                role=device.role, duration_seconds=duration)
    if facts is None:
        return DevicePoll(**base, up=False, reason=reason, error=error)
    kept = facts.interfaces[:MAX_INTERFACES]
    return DevicePoll(**base, **{**vars(facts), "interfaces": kept}, up=True,
                      interfaces_dropped=len(facts.interfaces) - len(kept))


async def _connect_and_poll(device: DeviceTarget, login: Credentials, config: Config,
                            holder: list[socket.socket]) -> Facts:
    sock = await _connect(device, config.connect_timeout_seconds)
    holder.append(sock)
    return await asyncio.to_thread(_session, sock, device, login, config)


async def _connect(device: DeviceTarget, timeout: float) -> socket.socket:
    """TCP connect on the event loop, so refusal and unreachability are told apart cleanly
    and the socket is ours to abort when the deadline passes."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(device.address, device.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PollError("unreachable", f"cannot resolve {device.address}: "
                        f"{exc.strerror}") from None
    error: PollError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, sockaddr)
        except TimeoutError:
            sock.close()
            error = PollError("timeout", f"TCP connect to {device.address}:{device.port} "
                              f"timed out after {timeout:g} s")
            continue
        except ConnectionRefusedError:
            sock.close()
            error = PollError("refused", f"connection refused by {device.address}:{device.port}")
            continue
        except OSError as exc:
            sock.close()
            error = PollError("unreachable", f"{device.address}:{device.port}: "
                              f"{os.strerror(exc.errno) if exc.errno else type(exc).__name__}")
            continue
        except BaseException:
            sock.close()
            raise
        sock.setblocking(True)
        return sock
    raise error or PollError("unreachable", f"{device.address} has no address")


def _session(sock: socket.socket, device: DeviceTarget, login: Credentials,
             config: Config) -> Facts:
    """Log in, run the recipe's commands and parse them (blocking: runs in a thread)."""
    # Lazy: netmiko and paramiko cost ~35 MiB, and most wards have no devices in the inventory.
    from netmiko import ConnectHandler
    from netmiko.exceptions import (
        NetmikoAuthenticationException,
        NetmikoTimeoutException,
        ReadTimeout,
    )

    # netmiko's own timeouts all fit in the device's deadline, so the thread ends by itself.
    timeouts = dict(conn_timeout=config.connect_timeout_seconds,
                    banner_timeout=config.banner_timeout_seconds,
                    auth_timeout=config.auth_timeout_seconds,
                    blocking_timeout=config.read_timeout_seconds,
                    session_timeout=config.device_timeout_seconds,
                    read_timeout_override=config.read_timeout_seconds)
    pinning: dict[str, Any] = {}
    if config.known_hosts_file is not None:
        pinning = dict(ssh_strict=True, system_host_keys=False, alt_host_keys=True,
                       alt_key_file=str(config.known_hosts_file))
    try:
        conn = ConnectHandler(
            device_type=device.device_type, host=device.address, port=device.port,
            username=login.username, password=login.password, secret=login.secret,
            sock=sock, use_keys=False, allow_agent=False, **timeouts, **pinning)
    except NetmikoAuthenticationException:
        raise PollError("auth", f"{device.address}:{device.port} rejected the login of "
                        f"{login.username!r}") from None
    except NetmikoTimeoutException as exc:
        if any(s in str(exc) for s in ("known_hosts", "does not match")):
            raise PollError("host-key", f"{device.address}:{device.port} presented a host key "
                            f"not in {config.known_hosts_file}") from None
        # paramiko gives up either reading the banner or, when its connect timeout ends
        # first, waiting for the key exchange ("No existing session"): both a silent peer.
        if any(s in str(exc).lower() for s in ("banner", "no existing session")):
            raise PollError("timeout", f"{device.address}:{device.port} completed no SSH "
                            f"handshake within {config.banner_timeout_seconds:g} s") from None
        raise PollError("protocol", "SSH negotiation failed") from None
    except ReadTimeout:
        raise PollError("timeout", "no prompt after login") from None
    except (OSError, EOFError) as exc:
        raise PollError("protocol", f"SSH session failed: {type(exc).__name__}") from None
    try:
        if device.device_type == "linux":
            return parse_linux(str(conn.send_command(
                LINUX_COMMAND, expect_string=LINUX_END, read_timeout=config.read_timeout_seconds)))
        recipe = RECIPES[device.device_type]
        if recipe.enable and not conn.check_enable_mode():
            conn.enable()
        outputs = {command: str(conn.send_command(command,
                                                  read_timeout=config.read_timeout_seconds))
                   for command in (*recipe.facts, *recipe.interfaces, *recipe.extras)}
        return parse_outputs(recipe, outputs)
    except ReadTimeout:
        raise PollError("timeout", "a command's output did not end within "
                        f"{config.read_timeout_seconds:g} s") from None
    except (OSError, EOFError) as exc:
        raise PollError("protocol", f"SSH session failed: {type(exc).__name__}") from None
    finally:
        try:
            conn.disconnect()
        except Exception:  # the peer may be gone already; the socket is closed regardless
            log.debug("device %s: disconnect failed", device.name)


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _scrub(text: str, login: Credentials) -> str:
    """Belt and braces: whatever a peer or library echoed, no secret leaves in an error."""
    for secret in (login.password, login.secret):
        if secret:
            text = text.replace(secret, "********")
    return text[:MAX_ERROR_CHARS]


# --- metrics and inventory -----------------------------------------------------------------

UP = MetricSpec("wardready_device_up", "1 if the device was logged into and its facts read.",
                ("device", "role", "device_type"))
POLL_ERROR = MetricSpec("wardready_device_poll_error",
                        "1 for the reason the latest poll failed (refused, timeout, auth, "
                        "host-key, unreachable, no-credentials, protocol, parse, unsupported), "
                        "0 for the others.", ("device", "reason"))
POLL_DURATION = MetricSpec("wardready_device_poll_duration_seconds",
                           "How long the latest poll of the device took.", ("device",))
INFO = MetricSpec("wardready_device_info", "Device facts: model, OS version, serial, hostname.",
                  ("device", "model", "os_version", "serial", "hostname"))
UPTIME = MetricSpec("wardready_device_uptime_seconds", "Time since the device booted.",
                    ("device",))
CPU = MetricSpec("wardready_device_cpu_utilisation_ratio",
                 "Busy share of the device's CPU (0-1), where the platform reports it.",
                 ("device",))
MEM_USED = MetricSpec("wardready_device_memory_used_bytes", "Memory in use on the device.",
                      ("device",))
MEM_TOTAL = MetricSpec("wardready_device_memory_total_bytes", "Memory of the device.",
                       ("device",))
IF_UP = MetricSpec("wardready_device_interface_up", "1 if the interface is operationally up.",
                   ("device", "interface"))
IF_ADMIN_UP = MetricSpec("wardready_device_interface_admin_up",
                         "1 if the interface is administratively enabled.",
                         ("device", "interface"))
IF_SPEED = MetricSpec("wardready_device_interface_speed_bytes_per_second",
                      "Negotiated speed of the interface (or its configured bandwidth).",
                      ("device", "interface"))
IF_DUPLEX = MetricSpec("wardready_device_interface_full_duplex",
                       "1 if the interface runs full duplex, 0 if half.",
                       ("device", "interface"))
IF_ERRORS = MetricSpec("wardready_device_interface_errors_total",
                       "Errors counted by the interface since its counters were last cleared.",
                       ("device", "interface", "direction"), kind="counter")
IF_CRC = MetricSpec("wardready_device_interface_crc_errors_total",
                    "Frames received with a bad CRC (a cabling or duplex problem).",
                    ("device", "interface"), kind="counter")

METRICS = (UP, POLL_ERROR, POLL_DURATION, INFO, UPTIME, CPU, MEM_USED, MEM_TOTAL, IF_UP,
           IF_ADMIN_UP, IF_SPEED, IF_DUPLEX, IF_ERRORS, IF_CRC)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one devices result."""
    for d in result.devices:
        yield Sample(UP, (d.name, d.role, d.device_type), 1 if d.up else 0)
        # Every reason, 0 or 1: the series stay put, so alerts need no absent().
        for reason in REASONS:
            yield Sample(POLL_ERROR, (d.name, reason), 1 if d.reason == reason else 0)
        yield Sample(POLL_DURATION, (d.name,), d.duration_seconds)
        if not d.up:
            continue
        yield Sample(INFO, (d.name, d.model or "", d.os_version or "", d.serial or "",
                            d.hostname or ""), 1)
        for spec, value in ((UPTIME, d.uptime_seconds), (CPU, d.cpu_utilisation_ratio),
                            (MEM_USED, d.memory_used_bytes), (MEM_TOTAL, d.memory_total_bytes)):
            if value is not None:
                yield Sample(spec, (d.name,), value)
        for i in d.interfaces:
            labels = (d.name, i.name)
            for spec, flag in ((IF_UP, i.oper_up), (IF_ADMIN_UP, i.admin_up),
                               (IF_DUPLEX, i.full_duplex)):
                if flag is not None:
                    yield Sample(spec, labels, 1 if flag else 0)
            if i.speed_bits_per_second is not None:
                yield Sample(IF_SPEED, labels, i.speed_bits_per_second / 8)
            for direction, count in (("input", i.input_errors), ("output", i.output_errors)):
                if count is not None:
                    yield Sample(IF_ERRORS, (*labels, direction), count)
            if i.crc_errors is not None:
                yield Sample(IF_CRC, labels, i.crc_errors)


def inventory(result: Result) -> dict[str, list[InventoryItem]]:
    """The ward's network devices, for the server's equipment history: only when every
    device answered, since a device that did not is unknown this time, not removed."""
    if not all(d.up for d in result.devices):
        return {}
    return {"network-device": [
        InventoryItem(kind="network-device", key=d.name, facts=(
            ("model", d.model or ""), ("os_version", d.os_version or ""),
            ("serial", d.serial or "")))
        for d in result.devices]}


CHECK = CheckSpec(name="devices", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, inventory=inventory,
                  isolated=True)
