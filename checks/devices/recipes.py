"""What to ask each kind of network device, and how to read its answers: ntc-templates'
TextFSM templates, then the phrases of the interface blocks the templates leave out."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wardready.checks.devices.result import Facts, Interface
from wardready.core.errors import PollError


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


def up_or_down(text: str | None) -> bool | None:
    """An admin, link or protocol state word as a flag; None for a word it does not know."""
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
    admin = up_or_down(_text(r, ("admin_state", "enabled")))
    if admin is None and link is not None:
        # IOS-like platforms fold the admin state into the link state.
        admin = not link.lower().startswith("admin")
    oper = up_or_down(link)
    protocol = up_or_down(_text(r, ("protocol_status",)))
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
