"""Cloudflare's AIM (Aggregated Internet Measurement) scores: a reference reading, not judged.

The definition is Cloudflare's own code, `cloudflare/speedtest` (src/config/internalConfig.ts
for the point tables, src/Results/ScoresCalculations.ts for how they add up, src/utils/
scaleThreshold.ts for the thresholds' meaning), and the page
https://developers.cloudflare.com/fundamentals/speed/aim/. Each measured figure earns points
from a threshold table (a value equal to a threshold falls in the band above it, as d3's
scaleThreshold does); an experience (streaming, gaming, rtc = video calls) sums the points
of its inputs, floors the sum at 0, and maps it to bad / poor / average / good / great by
its own thresholds. An experience any of whose inputs is missing is not scored, except
packet loss, which then counts 0 points (Cloudflare's `defaultPoints`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from wardready.core.metrics import MetricSpec, Sample

Experience = Literal["streaming", "gaming", "rtc"]
CLASSES = ("bad", "poor", "average", "good", "great")


@dataclass(frozen=True)
class Table:
    """Points by threshold: below thresholds[0] -> points[0], at or above thresholds[i] and
    below thresholds[i+1] -> points[i+1]."""

    thresholds: tuple[float, ...]
    points: tuple[int, ...]

    def __call__(self, value: float) -> int:
        return self.points[bisect.bisect_right(self.thresholds, value)]


# Cloudflare's aimMeasurementScoring (internalConfig.ts): ms, a ratio, bits per second.
TABLES: dict[str, Table] = {
    "packet_loss": Table((0.01, 0.05, 0.25, 0.5), (10, 5, 0, -10, -20)),
    "latency_ms": Table((10, 20, 50, 100, 500), (20, 10, 5, 0, -10, -20)),
    "loaded_latency_increase_ms": Table((10, 20, 50, 100, 500), (20, 10, 5, 0, -10, -20)),
    "jitter_ms": Table((10, 20, 100, 500), (10, 5, 0, -10, -20)),
    "download_bps": Table((1e6, 10e6, 50e6, 100e6), (0, 5, 10, 20, 30)),
    "upload_bps": Table((1e6, 10e6, 50e6, 100e6), (0, 5, 10, 20, 30)),
}
# Cloudflare's aimExperiencesDefs: inputs, and the point thresholds of poor..great.
EXPERIENCES: dict[Experience, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "streaming": (("latency_ms", "packet_loss", "download_bps", "loaded_latency_increase_ms"),
                  (15, 20, 40, 60)),
    "gaming": (("latency_ms", "packet_loss", "loaded_latency_increase_ms"), (5, 15, 25, 30)),
    "rtc": (("latency_ms", "jitter_ms", "packet_loss", "loaded_latency_increase_ms"),
            (5, 15, 25, 40)),
}


@dataclass(frozen=True)
class Measurements:
    """AIM's inputs. Latency and jitter unloaded; the loaded-latency increase is the larger
    of the download's and upload's loaded latency minus the unloaded one."""

    latency_ms: float | None = None
    jitter_ms: float | None = None
    packet_loss: float | None = None
    """A ratio, 0..1."""
    loaded_latency_increase_ms: float | None = None
    download_bps: float | None = None
    upload_bps: float | None = None

    def __post_init__(self) -> None:
        for name in TABLES:
            value = getattr(self, name)
            if value is not None and not value >= 0:  # NaN fails too
                raise ValueError(f"{name}: {value!r} is not a non-negative number")
        if self.packet_loss is not None and self.packet_loss > 1:
            raise ValueError(f"packet_loss: {self.packet_loss!r} is a ratio, above 1")


class Score(BaseModel):
    """One experience's AIM score (a model, not a dataclass: reports carry it, and the
    server validates them strictly from JSON, which takes a dataclass only as an instance)."""

    model_config = ConfigDict(frozen=True)

    experience: Experience
    points: int
    """The sum of its inputs' points, floored at 0."""
    classification: int
    """0 bad .. 4 great."""
    label: str
    """bad, poor, average, good or great."""


def points(figures: Measurements) -> dict[str, int]:
    """Each available figure's points (packet loss 0 when not measured)."""
    earned = {name: table(v) for name, table in TABLES.items()
              if (v := getattr(figures, name)) is not None}
    earned.setdefault("packet_loss", 0)
    return earned


def scores(figures: Measurements) -> list[Score]:
    """Every experience whose inputs are all available."""
    earned = points(figures)
    done = []
    for experience, (inputs, thresholds) in EXPERIENCES.items():
        if all(name in earned for name in inputs):
            total = max(0, sum(earned[name] for name in inputs))
            level = bisect.bisect_right(thresholds, total)
            done.append(Score(experience=experience, points=total, classification=level,
                              label=CLASSES[level]))
    return done


def jitter(rtts: Sequence[float]) -> float | None:
    """Mean absolute difference of consecutive latencies, as Cloudflare's speed test
    computes jitter (None with fewer than two)."""
    if len(rtts) < 2:
        return None
    return sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)


POINTS = MetricSpec("wardready_aim_points",
                    "Cloudflare AIM points of the latest throughput test, by experience "
                    "(streaming, gaming, rtc = video calls); a reference reading, not judged.",
                    ("experience",))
CLASSIFICATION = MetricSpec("wardready_aim_classification",
                            "Cloudflare AIM class of the latest throughput test: 0 bad, 1 poor, "
                            "2 average, 3 good, 4 great.", ("experience",))


def samples(found: Sequence[Score]) -> list[Sample]:
    out = []
    for s in found:
        out += [Sample(POINTS, (s.experience,), s.points),
                Sample(CLASSIFICATION, (s.experience,), s.classification)]
    return out
