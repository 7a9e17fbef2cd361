"""The devices check's metrics and the equipment it reports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from wardready.checks.base import InventoryItem
from wardready.checks.devices.result import Result
from wardready.core.errors import PollReason
from wardready.core.metrics import MetricSpec, Sample

REASONS: tuple[PollReason, ...] = get_args(PollReason)

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
