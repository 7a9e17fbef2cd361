"""Responsiveness (RPM, round trips per minute) after draft-ietf-ippm-responsiveness.

The draft (section "Aggregating the Measurements", 4.3.1 in -03) probes latency while the
link is loaded with four kinds of measurement: on separate ("foreign") connections the TCP
handshake (tcp_f), the TLS handshake (tls_f) and an HTTP request/response (http_f), and on
the loaded ("self") connections an HTTP request/response (http_s). Each series is reduced
by a trimmed mean at the 95th percentile (TM: the slowest 5 % dropped) and

    Responsiveness = 60000 / (1/6 * (TM(tcp_f) + TM(tls_f) + TM(http_f)) + 1/2 * TM(http_s))

with the latencies in milliseconds (here: 60 / the same in seconds). A reference reading,
never judged. Pure arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

TRIM_PERCENTILE = 95.0
"""The draft's TMP default: values above this percentile are dropped before the mean."""


def trimmed_mean(values: Sequence[float], percentile: float = TRIM_PERCENTILE) -> float:
    """Mean of the lowest `percentile` % of the values: sorted, the first
    floor(n * percentile / 100) kept (at least one)."""
    if not values:
        raise ValueError("trimmed_mean: no values")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: {percentile!r} outside (0, 100]")
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"latency {v!r} is not a finite non-negative number")
    ordered = sorted(values)
    keep = max(1, math.floor(len(ordered) * percentile / 100))
    return sum(ordered[:keep]) / keep


def rpm(tcp_f: Sequence[float], tls_f: Sequence[float], http_f: Sequence[float],
        http_s: Sequence[float], percentile: float = TRIM_PERCENTILE) -> float:
    """The draft's responsiveness from its four latency series, in seconds."""
    foreign = sum(trimmed_mean(s, percentile) for s in (tcp_f, tls_f, http_f))
    seconds = foreign / 6 + trimmed_mean(http_s, percentile) / 2
    if seconds <= 0:
        raise ValueError("responsiveness: every latency is zero")
    return 60.0 / seconds


def rpm_from_connects(connects: Sequence[float],
                      percentile: float = TRIM_PERCENTILE) -> float | None:
    """What wardready can offer: its only probe under load is a TCP connect to the server on
    a new connection, a foreign-flow TCP handshake (tcp_f). It stands in for all four
    series (no TLS, no HTTP, nothing on the loaded connections), which reduces the formula
    to 60 / TM(tcp_f). None without probes (or all zero)."""
    if not connects or max(connects) <= 0:
        return None
    return rpm(connects, connects, connects, connects, percentile)
