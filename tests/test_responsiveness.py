"""Responsiveness (RPM) against draft-ietf-ippm-responsiveness's formula (section 4.3.1 of
-03, "Aggregating the Measurements"): RPM = 60000 / (1/6 (TM(tcp_f) + TM(tls_f) +
TM(http_f)) + 1/2 TM(http_s)), latencies in ms, TM a trimmed mean at the 95th percentile.
Expected values are computed by hand below."""

from __future__ import annotations

import pytest

from wardready.core import responsiveness as r


def test_the_formula_with_hand_computed_numbers() -> None:
    # TM(tcp_f) 10 ms, TM(tls_f) 20 ms, TM(http_f) 30 ms, TM(http_s) 40 ms:
    # 1/6 (10 + 20 + 30) + 1/2 40 = 10 + 20 = 30 ms -> 60000 / 30 = 2000 RPM.
    assert r.rpm([0.010], [0.020], [0.030], [0.040]) == pytest.approx(2000)
    # All four at 100 ms: 1/6 300 + 50 = 100 ms -> 600 RPM.
    assert r.rpm([0.1], [0.1], [0.1], [0.1]) == pytest.approx(600)


def test_the_trimmed_mean_drops_the_slowest_five_percent() -> None:
    # 20 samples 1..20 ms: 95 % of 20 = 19 kept, mean of 1..19 = 10 ms.
    assert r.trimmed_mean([i / 1000 for i in range(20, 0, -1)]) == pytest.approx(0.010)
    # 40 samples: 38 kept; 38 of 25 ms and two stalls of 2 s -> 25 ms.
    assert r.trimmed_mean([0.025] * 38 + [2.0, 2.0]) == pytest.approx(0.025)
    # Fewer than 20: floor(n 0.95) drops one only from 20 on; 10 samples keep 9.
    assert r.trimmed_mean([0.01] * 9 + [1.0]) == pytest.approx(0.01)


def test_one_probe_kind_standing_in_for_all_four_reduces_to_60_over_its_mean() -> None:
    # 1/6 (3 t) + 1/2 t = t: 50 ms -> 1200 RPM; with a stall trimmed away.
    assert r.rpm_from_connects([0.050] * 19 + [3.0]) == pytest.approx(1200)
    assert r.rpm_from_connects([]) is None


@pytest.mark.parametrize(("values", "message"), [
    ([], "no values"), ([float("inf")], "finite"), ([-0.01], "non-negative")])
def test_bad_input_is_one_clear_error(values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        r.trimmed_mean(values)
