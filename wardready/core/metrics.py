"""Metric definitions and the one way both agent and server turn samples into families.

A check declares its metrics once as `MetricSpec`s and yields `Sample`s from a result. The
agent exposes them as they are; the server prepends the `ward` and `host` labels it takes
from the authenticated identity. Families are built at scrape time, never registered globally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

PREFIX = "wardready_"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
"""The series of a histogram: cumulative counts per bound (label `le`), the observations'
sum and their count."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric: name (with `wardready_` prefix and base unit), help, type and labels."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    kind: Literal["gauge", "counter", "histogram"] = "gauge"

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"metric {self.name!r} lacks the {PREFIX!r} prefix")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"metric {self.name!r}: counters, and only counters, end in _total")
        if self.name.endswith(HISTOGRAM_SUFFIXES) or "le" in self.labels:
            raise ValueError(f"metric {self.name!r}: a histogram's suffixes and its `le` label "
                             "are reserved")

    def label_names(self, suffix: str = "") -> tuple[str, ...]:
        """The labels of one series: a histogram's `_bucket` series end with `le`."""
        return (*self.labels, "le") if suffix == "_bucket" else self.labels


@dataclass(frozen=True)
class Sample:
    """One value of a metric, with label values in the spec's label order."""

    spec: MetricSpec
    labels: tuple[str, ...]
    value: float
    suffix: str = ""
    """A histogram's series: `_bucket` (its labels end with the bound, `le`), `_sum` or
    `_count`; empty for gauges and counters."""


def _check_labels(sample: Sample, extra: tuple[str, ...], extra_labels: tuple[str, ...]
                  ) -> tuple[str, ...]:
    """The sample's label names (after `extra_labels`); raises if they do not fit."""
    spec = sample.spec
    names = spec.label_names(sample.suffix)
    if ((spec.kind == "histogram") != (sample.suffix in HISTOGRAM_SUFFIXES)
            or len(sample.labels) != len(names) or len(extra) != len(extra_labels)):
        raise ValueError(f"{spec.name}{sample.suffix}: label values {extra + sample.labels} "
                         f"do not match labels {extra_labels + names}")
    return names


def histogram_samples(spec: MetricSpec, labels: tuple[str, ...], bounds: Sequence[float],
                      counts: Sequence[float], total: float) -> list[Sample]:
    """A histogram's series from the observations counted in each bucket (not cumulative:
    one count per bound, then one above the last bound) and their sum."""
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{spec.name}: {len(counts)} bucket counts for {len(bounds)} bounds")
    out, running = [], 0.0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        out.append(Sample(spec, (*labels, floatToGoString(bound)), running, "_bucket"))
    out.append(Sample(spec, labels, total, "_sum"))
    out.append(Sample(spec, labels, running, "_count"))
    return out


class Totals:
    """Running totals of samples that each count one run's events (a counter's increase,
    a histogram's buckets, sum and count): what a continuous check's intervals add up to."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[tuple[MetricSpec, str, tuple[str, ...]], float] = {}

    def add(self, samples: Iterable[Sample]) -> None:
        for s in samples:
            key = (s.spec, s.suffix, s.labels)
            self._values[key] = self._values.get(key, 0.0) + s.value

    def samples(self) -> Iterator[Sample]:
        """The totals so far, in the order their series first came."""
        for (spec, suffix, labels), value in self._values.items():
            yield Sample(spec, labels, value, suffix)


def families(
    specs: Sequence[MetricSpec],
    samples: Iterable[tuple[tuple[str, ...], Sample]],
    extra_labels: tuple[str, ...] = (),
) -> list[Metric]:
    """Build one family per spec (empty ones included, so HELP is always served).

    Each sample comes with values for `extra_labels`, which go before the spec's own labels.
    """
    built: dict[str, Metric] = {}
    for spec in specs:
        if spec.kind == "histogram":
            built[spec.name] = Metric(spec.name, spec.help, "histogram")
            continue
        cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        built[spec.name] = cls(name, spec.help, labels=(*extra_labels, *spec.labels))
    for extra, sample in samples:
        family = built[sample.spec.name]
        names = _check_labels(sample, extra, extra_labels)
        if sample.suffix:
            family.add_sample(sample.spec.name + sample.suffix,
                              dict(zip((*extra_labels, *names), (*extra, *sample.labels),
                                       strict=True)), sample.value)
        else:
            family.add_metric((*extra, *sample.labels), sample.value)  # type: ignore[attr-defined]
    return list(built.values())


class SampleCollector(Collector):
    """Serves one component's own metrics (no extra labels) from a function of samples."""

    def __init__(self, specs: Sequence[MetricSpec], samples: Callable[[], Iterable[Sample]]):
        self.specs, self.samples = specs, samples

    def collect(self) -> Iterator[Metric]:
        yield from families(self.specs, (((), s) for s in self.samples()))


DROPPED_REPORTS = MetricSpec("wardready_agent_dropped_reports_total",
                             "Reports the agent dropped undelivered (spool full or too old).",
                             kind="counter")
"""Exposed by the agent and, from its reports, by the server: loss is never silent."""

CLOCK_OFFSET = MetricSpec("wardready_agent_clock_offset_seconds",
                          "The agent's clock minus the server's: on the agent from the Date of "
                          "the server's last answer, on the server from the latest fresh "
                          "report.")
"""Both ends, each by its own evidence: the server cannot see a clock it refuses reports from
(over `CLOCK_AHEAD_SECONDS` ahead), the agent can."""

AGENT_INFO = MetricSpec("wardready_agent_info",
                        "The agent's version; on the agent and the server alike labelled with "
                        "the ward and host it reports as.", ("version",))
AGENT_LABELS = ("ward", "host")
"""The labels the server puts before an agent's own, and the agent before its info's."""

CHECK_SUCCESS = MetricSpec("wardready_agent_check_success",
                           "1 if the check's latest run produced a result.", ("check",))
CHECK_DURATION = MetricSpec("wardready_agent_check_duration_seconds",
                            "How long the check's latest run took.", ("check",))
CHECK_TIMESTAMP = MetricSpec("wardready_agent_check_timestamp_seconds",
                             "When the check's latest run started (agent clock).", ("check",))
OUTCOME_METRICS = (CHECK_SUCCESS, CHECK_DURATION, CHECK_TIMESTAMP)
"""What every check run says about itself, on the agent and on the server alike."""


def outcome_samples(check: str, ok: bool, duration: float, started_at: float) -> list[Sample]:
    """The samples describing one check run."""
    return [Sample(CHECK_SUCCESS, (check,), 1 if ok else 0),
            Sample(CHECK_DURATION, (check,), duration),
            Sample(CHECK_TIMESTAMP, (check,), started_at)]
