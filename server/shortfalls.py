"""The figures and comparisons of the Prometheus shortfall rules
(prometheus/rules/wardready.rules.yml), in Python, for the equipment request list.

The rules and this module must agree: `tests/test_equipment_list.py` feeds one simulated city
to both and compares what they flag. The window and its quantiles are stated here once for
the server, and `tests/test_rules.py` checks the rules file uses the same.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from wardready.checks import REGISTRY, bandwidth, devices, latency, media
from wardready.checks.base import CheckResult
from wardready.core.inventory import EndOfSupport, Profile
from wardready.core.metrics import MetricSpec, Sample
from wardready.model.report import Outcome

LinkCriterion = Literal["download", "upload", "rtt", "jitter", "loss"]
LINK_CRITERIA: tuple[LinkCriterion, ...] = ("download", "upload", "rtt", "jitter", "loss")
WINDOW_SECONDS = 6 * 3600.0
"""The rules judge a ward's link over the last 6 h (`[6h]`), not one test."""
WINDOW_QUANTILE: dict[LinkCriterion, float] = {
    "download": 0.25, "upload": 0.25, "rtt": 0.75, "jitter": 0.75, "loss": 0.75}
"""Throughput is short when a quarter of the window was; delay, jitter and loss when a
quarter of the window was worse than allowed."""
EVALUATION_SECONDS = 15.0
"""How often Prometheus evaluates the rules (prometheus/prometheus.yml): the window's
quantile is taken over the values at these instants, as `quantile_over_time` does."""
HIGHER_IS_BETTER: dict[LinkCriterion, bool] = {
    "download": True, "upload": True, "rtt": False, "jitter": False, "loss": False}
"""The ward's link is its best PC's: the highest throughput, the lowest delay."""


def _values(samples: Iterable[Sample], spec: MetricSpec, **labels: str | tuple[str, ...]
            ) -> list[float]:
    wanted = [(spec.labels.index(k), v if isinstance(v, tuple) else (v,))
              for k, v in labels.items()]
    return [s.value for s in samples
            if s.spec is spec and all(s.labels[i] in allowed for i, allowed in wanted)]


LINK_SOURCES: dict[str, tuple[tuple[LinkCriterion, MetricSpec, dict[str, str | tuple[str, ...]]],
                               ...]] = {
    "bandwidth": (("download", bandwidth.RATE, {"direction": "download"}),
                  ("upload", bandwidth.RATE, {"direction": "upload"})),
    "media": (("rtt", media.RTT, {"statistic": "median"}), ("jitter", media.JITTER, {}),
              ("loss", media.LOSS, {"direction": ("forward", "return")})),
    "latency": (("rtt", latency.RTT, {"statistic": "median"}), ("jitter", latency.JITTER, {}),
                ("loss", latency.LOSS, {})),
}
"""Which metric of which check gives each link figure (as the rules select them)."""


def check_figures(check: str, result: CheckResult) -> dict[LinkCriterion, float]:
    """The link figures one check's result offers, from its metric samples: the best over
    directions and targets for throughput and the UDP path (the rules' `max`), the best
    target's for the latency probes (`min`)."""
    samples = list(REGISTRY[check].samples(result))
    best = min if check == "latency" else max
    figures: dict[LinkCriterion, float] = {}
    for criterion, spec, labels in LINK_SOURCES[check]:
        values = _values(samples, spec, **labels)
        if values:
            figures[criterion] = best(values)
    return figures


def host_figures(outcomes: Mapping[str, Outcome],
                 figures_of: Callable[[str, Outcome], Mapping[LinkCriterion, float]] | None
                 = None) -> dict[LinkCriterion, float]:
    """One PC's link figures as the rules take them from its metrics: throughput from the
    speed test; delay, jitter and loss from the UDP media path, else from the latency
    probes (`or on (ward, host)`). A figure the PC has not measured is left out.
    `figures_of(check, outcome)` may stand in for `check_figures` (a cache)."""
    per_check: dict[str, Mapping[LinkCriterion, float]] = {}
    for check in LINK_SOURCES:
        o = outcomes.get(check)
        if o is not None and o.result is not None:
            per_check[check] = (figures_of(check, o) if figures_of
                                else check_figures(check, o.result))
    figures = {c: v for c, v in per_check.get("bandwidth", {}).items()}
    media_figures, latency_figures = per_check.get("media", {}), per_check.get("latency", {})
    criterion: LinkCriterion
    for criterion in ("rtt", "jitter", "loss"):
        if criterion in media_figures:
            figures[criterion] = media_figures[criterion]
        elif criterion in latency_figures:
            figures[criterion] = latency_figures[criterion]
    return figures


def ward_figures(hosts: Iterable[Mapping[LinkCriterion, float]]
                 ) -> dict[LinkCriterion, float]:
    """The ward's link: the best figure any of its PCs measured."""
    best: dict[LinkCriterion, float] = {}
    for figures in hosts:
        for c, value in figures.items():
            if c not in best:
                best[c] = value
            else:
                best[c] = max(best[c], value) if HIGHER_IS_BETTER[c] else min(best[c], value)
    return best


def window_quantile(points: Sequence[tuple[float, float | None]], q: float, end: float,
                    window: float = WINDOW_SECONDS, step: float = EVALUATION_SECONDS
                    ) -> float | None:
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


def required(profile: Profile, criterion: LinkCriterion) -> float:
    """The profile's figure in the units of the metrics (bytes/s, seconds, ratio)."""
    link = profile.link
    return {"download": link.min_download_mbps * 1e6 / 8, "upload": link.min_upload_mbps * 1e6 / 8,
            "rtt": link.max_rtt_ms / 1e3, "jitter": link.max_jitter_ms / 1e3,
            "loss": link.max_loss_percent / 100}[criterion]


def shortfall_ratio(criterion: LinkCriterion, measured: float, need: float) -> float:
    """How far short, as a ratio of the requirement (`ward_criterion:wardready_shortfall:ratio`)."""
    if HIGHER_IS_BETTER[criterion]:
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
            shown = ", ".join(f"{name} at {(speed or 0) / 1e6:g} Mbit/s"
                              for name, speed in slow[:3]) + (f" and {len(slow) - 3} more"
                                                    if len(slow) > 3 else "")
            found.append(DeviceShortfall(
                "port-speed", f"{len(slow)} connected port{'s' if len(slow) > 1 else ''} below "
                f"{need:g} Mbit/s: {shown}"))
    if poll.os_version:
        for eos in end_of_support:
            if eos.device_type == poll.device_type and any(
                    fnmatch.fnmatchcase(poll.os_version, v) for v in eos.os_versions):
                found.append(DeviceShortfall(
                    "end-of-support", f"OS {poll.os_version} is out of support ({eos.note})"))
                break
    return found


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
