"""netmiko's `linux` device type: one shell command that prints the facts and interfaces,
and its parser."""

from __future__ import annotations

from wardready.checks.devices.recipes import up_or_down
from wardready.checks.devices.result import Facts, Interface
from wardready.checks.sysfs import firmware_text
from wardready.core.errors import PollError

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
        interfaces=[_interface(name[4:], lines) for name, lines in sections.items()
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


def _interface(name: str, lines: list[str]) -> Interface:
    values = dict(_key_value(line, "=") for line in lines)

    def number(key: str) -> int | None:
        value = values.get(key, "")
        return int(value) if value.lstrip("-").isdigit() else None

    flags = int(values["flags"], 16) if values.get("flags", "").startswith("0x") else None
    speed = number("speed")  # Mb/s; -1 or absent when there is no link or no PHY
    duplex = values.get("duplex", "")
    return Interface(
        name=name, admin_up=None if flags is None else bool(flags & 0x1),  # IFF_UP
        oper_up=up_or_down(values.get("operstate")),
        speed_bits_per_second=speed * 1e6 if speed and speed > 0 else None,
        full_duplex=True if duplex == "full" else False if duplex == "half" else None,
        input_errors=number("statistics/rx_errors"), output_errors=number("statistics/tx_errors"),
        crc_errors=number("statistics/rx_crc_errors"))
