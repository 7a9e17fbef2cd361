"""The history of the CRC error counters of the ward's switch and router ports, kept for
the 24 h the segment verdict counts them over (`wardready.model.segments`)."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from wardready.checks import devices
from wardready.model.report import Outcome
from wardready.model.segments import PORT_ERRORS_WINDOW_SECONDS

__all__ = ["PORT_ERRORS_WINDOW_SECONDS", "PortErrorStore", "crc_per_day", "record_port_errors"]

PortPoints = Mapping[tuple[str, str, str], Sequence[tuple[float, float]]]
"""(ward, device, interface) -> (time, CRC counter) from the oldest kept."""


def record_port_errors(db: sqlite3.Connection, ward: str, outcome: Outcome) -> None:
    """Add the CRC counters of a devices outcome's physical ports (inside the caller's
    transaction); other outcomes add nothing."""
    result = outcome.result
    if not isinstance(result, devices.Result):
        return
    db.executemany(
        "INSERT INTO port_errors (ward, device, interface, at, crc) VALUES (?,?,?,?,?)",
        [(ward, poll.name, i.name, outcome.started_at, i.crc_errors)
         for poll in result.devices if poll.up for i in poll.interfaces
         if i.crc_errors is not None and devices.is_physical_port(i.name)])


def increase(points: Iterable[tuple[float, float]]) -> float:
    """How much a counter grew over its points, a drop being a reset (the device rebooted
    or its counters were cleared), as Prometheus' `increase()` reads it, without its
    extrapolation to the window's edges."""
    total, last = 0.0, None
    for _, value in sorted(points):
        if last is not None:
            total += value - last if value >= last else value
        last = value
    return total


def crc_per_day(points: PortPoints, ward: str, now: float
                ) -> dict[tuple[str, str], float]:
    """The ward's ports' CRC errors over the last 24 h: from the last count before the
    window (or the first in it) to the newest."""
    start = now - PORT_ERRORS_WINDOW_SECONDS
    out: dict[tuple[str, str], float] = {}
    for (w, device, interface), series in points.items():
        if w != ward:
            continue
        before = [p for p in series if p[0] <= start]
        inside = [p for p in series if start < p[0] <= now]
        if inside:
            out[device, interface] = increase(before[-1:] + inside)
    return out


class PortErrorStore:
    """The `Store`'s port counter history."""

    db: sqlite3.Connection

    def port_error_points(self, since: float) -> dict[tuple[str, str, str],
                                                     list[tuple[float, float]]]:
        """(ward, device, interface) -> its CRC counts from `since`, after the one it had
        then."""
        points: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
        for ward, device, interface, at, crc in self.db.execute(
                "SELECT ward, device, interface, max(at), crc FROM port_errors WHERE at <= ?"
                " GROUP BY ward, device, interface", (since,)):
            points[ward, device, interface].append((at, crc))
        for ward, device, interface, at, crc in self.db.execute(
                "SELECT ward, device, interface, at, crc FROM port_errors WHERE at > ?"
                " ORDER BY at", (since,)):
            points[ward, device, interface].append((at, crc))
        return points

    def prune_port_errors(self, before: float) -> int:
        """Forget counts older than `before`, but for the one each port had then."""
        with self.db:
            cur = self.db.execute(
                "DELETE FROM port_errors WHERE at < ? AND rowid NOT IN (SELECT rowid FROM"
                " (SELECT rowid, max(at) FROM port_errors WHERE at < ?"
                " GROUP BY ward, device, interface))", (before, before))
        return cur.rowcount
