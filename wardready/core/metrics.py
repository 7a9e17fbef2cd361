"""Metric definitions and the one way both agent and server turn samples into families.

A check declares its metrics once as `MetricSpec`s and yields `Sample`s from a result. The
agent exposes them as they are; the server prepends the `ward` and `host` labels it takes
from the authenticated identity. Families are built at scrape time, never registered globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "wardready_"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: name (with `wardready_` prefix and base unit), help, type and labels."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    kind: Literal["gauge", "counter"] = "gauge"

    def __post_init__(self) -> None:
        if not self.name.startswith(PREFIX):
            raise ValueError(f"metric {self.name!r} lacks the {PREFIX!r} prefix")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"metric {self.name!r}: counters, and only counters, end in _total")


@dataclass(frozen=True)
class Sample:
    """One value of a metric, with label values in the spec's label order."""

    spec: MetricSpec
    labels: tuple[str, ...]
    value: float


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
        cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        built[spec.name] = cls(name, spec.help, labels=(*extra_labels, *spec.labels))
    for extra, sample in samples:
        family = built[sample.spec.name]
        if len(sample.labels) != len(sample.spec.labels) or len(extra) != len(extra_labels):
            raise ValueError(f"{sample.spec.name}: label values {extra + sample.labels} do not "
                             f"match labels {extra_labels + sample.spec.labels}")
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
