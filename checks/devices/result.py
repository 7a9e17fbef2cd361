"""What one poll of the ward's devices found: each device's facts and interfaces, or why it
failed."""

from __future__ import annotations

import re

from pydantic import Field

from wardready.checks.base import CheckResult, ResultModel
from wardready.core.errors import PollReason

MAX_DEVICES = 64
MAX_INTERFACES = 128
"""Bounds on the `device` and `interface` label cardinality and on the report's size."""


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
