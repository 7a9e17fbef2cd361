"""The figures and comparisons of the Prometheus shortfall rules, in Python, for the
equipment request list: both come from one criteria table (`wardready.model.criteria`), and
the figures are taken from the same metric samples the rules select, so the list and the
rules agree by construction. `tests/test_equipment_list.py` and `tests/test_flagging.py` feed
one simulated city to both and compare what they flag.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from wardready.checks import REGISTRY, devices
from wardready.checks.base import CheckResult
from wardready.core import i18n
from wardready.core.i18n import _, ngettext
from wardready.core.inventory import EndOfSupport, Profile
from wardready.core.metrics import MetricSpec, Sample
from wardready.model.criteria import (
    EVALUATION_SECONDS,
    LINK,
    LINK_BY_ID,
    LINK_CHECKS,
    Aggregation,
    LinkId,
    Source,
)
from wardready.model.report import Outcome

_AGGREGATE: dict[Aggregation, Callable[[Iterable[float]], float]] = {
    "max": max, "min": min, "sum": sum}


def aggregate(how: Aggregation, values: Iterable[float]) -> float:
    """PromQL's `max`, `min` or `sum` over a non-empty group of values."""
    return _AGGREGATE[how](values)


def source_value(source: Source, samples: Iterable[Sample]) -> float | None:
    """A PC's figure from one source, as the rules' `per_pc by (ward, host) (selector)`
    takes it from its samples; None when it has no such series."""
    values = [s.value for s in samples if s.spec.name == source.metric.name and all(
        s.labels[s.spec.labels.index(label)] in allowed
        for label, allowed in source.matchers.items())]
    return aggregate(source.per_pc, values) if values else None


def check_figures(check: str, result: CheckResult) -> dict[LinkId, float]:
    """The link figures one check's result offers, from its metric samples."""
    samples = list(REGISTRY[check].samples(result))
    figures: dict[LinkId, float] = {}
    for c in LINK:
        for source in c.sources:
            if source.check == check and (value := source_value(source, samples)) is not None:
                figures[c.id] = value
    return figures


def host_figures(outcomes: Mapping[str, Outcome],
                 figures_of: Callable[[str, Outcome], Mapping[LinkId, float]] | None
                 = None) -> dict[LinkId, float]:
    """One PC's link figures as the rules take them from its metrics: each criterion from
    the first of its sources the PC has (`or on (ward, host)`): delay, jitter and loss from
    the UDP media path, else from the latency probes. A figure the PC has not measured is
    left out. `figures_of(check, outcome)` may stand in for `check_figures` (a cache)."""
    per_check: dict[str, Mapping[LinkId, float]] = {}
    for check in LINK_CHECKS:
        o = outcomes.get(check)
        if o is not None and o.result is not None:
            per_check[check] = (figures_of(check, o) if figures_of
                                else check_figures(check, o.result))
    figures: dict[LinkId, float] = {}
    for c in LINK:
        for source in c.sources:
            if c.id in per_check.get(source.check, {}):
                figures[c.id] = per_check[source.check][c.id]
                break
    return figures


def ward_figures(hosts: Iterable[Mapping[LinkId, float]]
                 ) -> dict[LinkId, float]:
    """The ward's link: the best figure any of its PCs measured."""
    best: dict[LinkId, float] = {}
    for figures in hosts:
        for c, value in figures.items():
            best[c] = value if c not in best else aggregate(LINK_BY_ID[c].ward_aggregation,
                                                           (best[c], value))
    return best


def window_quantile(points: Sequence[tuple[float, float | None]], q: float, end: float,
                    window: float, step: float = EVALUATION_SECONDS) -> float | None:
    """`quantile_over_time(q, series[window])` at `end` for a series that holds each
    point's value from its time until the next point (None: no series then), sampled at
    evaluation instants `end - k*step` as the rules' recorded series is. None when the
    window holds no value."""
    counts: dict[float, int] = {}
    start = end - window
    for i, (at, value) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else math.inf
        if value is None:
            continue
        # The instants end - k*step that fall in the range (start, end] and in [at, until).
        k_max = math.floor((end - max(at, start)) / step)
        if at <= start and end - k_max * step <= start:
            k_max -= 1
        k_min = 0 if until > end else math.floor((end - until) / step) + 1
        if k_max >= k_min:
            counts[value] = counts.get(value, 0) + k_max - k_min + 1
    n = sum(counts.values())
    if n == 0:
        return None
    ordered = sorted(counts.items())

    def nth(index: int) -> float:
        seen = 0
        for value, count in ordered:
            seen += count
            if index < seen:
                return value
        return ordered[-1][0]

    # Prometheus' quantile: linear interpolation between the two nearest ranks.
    rank = q * (n - 1)
    lower = math.floor(rank)
    return nth(lower) + (nth(min(lower + 1, n - 1)) - nth(lower)) * (rank - lower)


def required(profile: Profile, criterion: LinkId) -> float:
    """The profile's figure in the units of the metrics (bytes/s, seconds, ratio)."""
    need = LINK_BY_ID[criterion].requirement.of(profile)
    assert need is not None  # every profile sets its link figures
    return need


def shortfall_ratio(criterion: LinkId, measured: float, need: float) -> float:
    """How far short, as a ratio of the requirement (`ward_criterion:wardready_shortfall:ratio`)."""
    if LINK_BY_ID[criterion].higher_is_better:
        return max(1 - measured / need, 0.0)
    return max(measured / need - 1, 0.0)


DeviceReason = Literal["port-speed", "end-of-support"]
DEVICE_REASONS: tuple[DeviceReason, ...] = ("port-speed", "end-of-support")


@dataclass(frozen=True)
class DeviceShortfall:
    reason: DeviceReason
    text: str


def device_shortfalls(poll: devices.DevicePoll, profile: Profile,
                      end_of_support: Sequence[EndOfSupport]) -> list[DeviceShortfall]:
    """Why a polled router or switch is below the profile: a connected Ethernet port slower
    than the profile's port speed, or an OS version the inventory lists as out of support."""
    found: list[DeviceShortfall] = []
    need = profile.network.min_port_speed_mbps if profile.network else None
    if poll.up and need is not None:
        slow = [(i.name, i.speed_bits_per_second) for i in poll.interfaces
                if i.oper_up and i.speed_bits_per_second is not None
                and devices.is_physical_port(i.name) and i.speed_bits_per_second < need * 1e6]
        if slow:
            # The text is the request list's reason, in the current language (i18n).
            shown = ", ".join(_("{port} at {speed} Mbit/s").format(
                port=name, speed=_figure((speed or 0) / 1e6)) for name, speed in slow[:3])
            if len(slow) > 3:
                shown = _("{ports} and {count} more").format(ports=shown, count=len(slow) - 3)
            found.append(DeviceShortfall("port-speed", ngettext(
                "{count} connected port below {speed} Mbit/s: {ports}",
                "{count} connected ports below {speed} Mbit/s: {ports}", len(slow)).format(
                    count=len(slow), speed=_figure(need), ports=shown)))
    if poll.os_version:
        for eos in end_of_support:
            if eos.device_type == poll.device_type and any(
                    fnmatch.fnmatchcase(poll.os_version, v) for v in eos.os_versions):
                found.append(DeviceShortfall("end-of-support", _(
                    "OS {version} is out of support ({note})").format(
                        version=poll.os_version, note=i18n.localized(eos.note))))
                break
    return found


def _figure(value: float) -> str:
    """`value` as `g` writes it, with the language's decimal mark (1,5 in Vietnamese)."""
    text = f"{value:g}"
    return text.replace(".", ",") if i18n.language() == "vi" else text


DEVICE_BELOW_SPEC = MetricSpec(
    "wardready_device_below_spec",
    "1 if a polled router or switch is below the ward's profile for the reason (port-speed: "
    "a connected Ethernet port slower than required; end-of-support: an OS version the "
    "inventory lists as unsupported), 0 if not.", ("device", "role", "reason"))
DEVICE_ROLES = ("router", "switch")
"""Roles held to the profile's network spec (others are polled, not judged)."""


def device_samples(result: devices.Result, profile: Profile,
                   end_of_support: Sequence[EndOfSupport]) -> list[Sample]:
    """The below-spec samples of one PC's device polls (devices that answered only)."""
    out = []
    for poll in result.devices:
        if poll.role in DEVICE_ROLES and poll.up:
            found = {f.reason for f in device_shortfalls(poll, profile, end_of_support)}
            out += [Sample(DEVICE_BELOW_SPEC, (poll.name, poll.role, reason),
                           1 if reason in found else 0) for reason in DEVICE_REASONS]
    return out
