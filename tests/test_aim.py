"""Cloudflare AIM scores against Cloudflare's own definition: the point tables of
cloudflare/speedtest src/config/internalConfig.ts, the threshold rule of
src/utils/scaleThreshold.ts, and the examples of tests/unit/Results/ScoresCalculations.test.ts
(repository snapshot b387f42d, 2026-08-21)."""

from __future__ import annotations

import pytest

from wardready.core import aim


def by_experience(figures: aim.Measurements) -> dict[str, aim.Score]:
    return {s.experience: s for s in aim.scores(figures)}


def test_cloudflare_example_streaming_on_an_excellent_connection() -> None:
    # ScoresCalculations.test.ts "calculates streaming score for excellent connection":
    # latency 5 -> 20 points, packetLoss 0 -> 10, download 100e6 -> 30, loaded latency
    # max(15, 10) - 5 = 10 -> 10; 70 points, 'great' (index 4).
    s = by_experience(aim.Measurements(latency_ms=5, packet_loss=0, download_bps=100e6,
                                       loaded_latency_increase_ms=15 - 5))["streaming"]
    assert (s.points, s.classification, s.label) == (70, 4, "great")


def test_cloudflare_example_gaming_on_a_poor_connection_is_floored_at_zero() -> None:
    # "calculates gaming score for poor connection": latency 200 -> -10, packetLoss 0.3 ->
    # -10, loaded latency 500 - 200 = 300 -> -10; "All negative points => clamped to 0", bad.
    s = by_experience(aim.Measurements(latency_ms=200, packet_loss=0.3,
                                       loaded_latency_increase_ms=500 - 200))["gaming"]
    assert (s.points, s.classification, s.label) == (0, 0, "bad")


def test_cloudflare_examples_of_missing_inputs() -> None:
    # "skips experiences when required inputs are missing": latency alone scores nothing.
    assert aim.scores(aim.Measurements(latency_ms=10)) == []
    # "uses default points for packetLoss when not provided": latency 5 (20) + packetLoss
    # (0 by default) + download 100e6 (30) + loaded 10 - 5 = 5 (20).
    s = by_experience(aim.Measurements(latency_ms=5, download_bps=100e6,
                                       loaded_latency_increase_ms=10 - 5))["streaming"]
    assert s.points == 70


@pytest.mark.parametrize(("name", "value", "points"), [
    # internalConfig.ts tables; a value equal to a threshold falls in the band above it
    # (scaleThreshold: `while (value >= domain[i]) i++`).
    ("latency_ms", 9.99, 20), ("latency_ms", 10, 10), ("latency_ms", 20, 5),
    ("latency_ms", 50, 0), ("latency_ms", 100, -10), ("latency_ms", 500, -20),
    ("jitter_ms", 9.99, 10), ("jitter_ms", 10, 5), ("jitter_ms", 20, 0),
    ("jitter_ms", 100, -10), ("jitter_ms", 500, -20),
    ("packet_loss", 0.0099, 10), ("packet_loss", 0.01, 5), ("packet_loss", 0.05, 0),
    ("packet_loss", 0.25, -10), ("packet_loss", 0.5, -20),
    ("loaded_latency_increase_ms", 0, 20), ("loaded_latency_increase_ms", 100, -10),
    ("download_bps", 999_999, 0), ("download_bps", 1e6, 5), ("download_bps", 10e6, 10),
    ("download_bps", 50e6, 20), ("download_bps", 100e6, 30), ("upload_bps", 100e6, 30),
])
def test_point_tables_at_their_boundaries(name: str, value: float, points: int) -> None:
    assert aim.points(aim.Measurements(**{name: value}))[name] == points


def test_video_call_classes_at_cloudflares_thresholds() -> None:
    # rtc: latency, jitter, packetLoss, loaded-latency increase; classes at 5, 15, 25, 40.
    # latency 20 (5) + jitter 20 (0) + loss 0 (10) + increase 10 (10) = 25 -> 'good'.
    s = by_experience(aim.Measurements(latency_ms=20, jitter_ms=20, packet_loss=0,
                                       loaded_latency_increase_ms=10))["rtc"]
    assert (s.points, s.label) == (25, "good")
    # The same with an increase of 20 (5): 20 -> 'average' (15 <= 20 < 25).
    s = by_experience(aim.Measurements(latency_ms=20, jitter_ms=20, packet_loss=0,
                                       loaded_latency_increase_ms=20))["rtc"]
    assert (s.points, s.label) == (20, "average")
    # latency 50 (0) + jitter 10 (5) + loss 0.01 (5) + increase 50 (0) = 10 -> 'poor'.
    s = by_experience(aim.Measurements(latency_ms=50, jitter_ms=10, packet_loss=0.01,
                                       loaded_latency_increase_ms=50))["rtc"]
    assert (s.points, s.label) == (10, "poor")
    # Everything at its best: 20 + 10 + 10 + 20 = 60 -> 'great' (>= 40).
    s = by_experience(aim.Measurements(latency_ms=1, jitter_ms=1, packet_loss=0,
                                       loaded_latency_increase_ms=1))["rtc"]
    assert (s.points, s.label) == (60, "great")


def test_cloudflare_jitter_is_the_mean_of_consecutive_differences() -> None:
    assert aim.jitter([0.010, 0.014, 0.011]) == pytest.approx((0.004 + 0.003) / 2)
    assert aim.jitter([0.010]) is None


@pytest.mark.parametrize("bad", [{"latency_ms": -1}, {"jitter_ms": float("nan")},
                                 {"packet_loss": 1.5}])
def test_bad_input_is_one_clear_error(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        aim.Measurements(**bad)


def test_scores_travel_in_a_report_the_server_parses_strictly() -> None:
    # The bandwidth result carries its scores; the server validates reports strictly from
    # JSON (model.report.parse_report), which once refused every one of them (422).
    from pydantic import TypeAdapter

    scores = aim.scores(aim.Measurements(latency_ms=5, packet_loss=0, download_bps=100e6,
                                         loaded_latency_increase_ms=10))
    adapter = TypeAdapter(list[aim.Score])
    assert adapter.validate_json(adapter.dump_json(scores), strict=True) == scores
