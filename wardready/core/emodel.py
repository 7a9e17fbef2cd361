"""Predicted call quality of a link: the ITU-T G.107 E-model, simplified to network figures.

Operators compare wards by one number per link, the predicted MOS (conversational quality, 1 to
4.5), instead of juggling RTT, jitter and loss. This module is pure arithmetic: no I/O, no
metrics. `docs/emodel.md` gives the formulas, their sources, the reference values the tests
check and the limits of the model.

    R      = R0 - Id - Ie,eff + A                  (G.107 §7.1, with R0 = Ro - Is at defaults)
    Id     = Idd(Ta)                               (G.107 §7.4; talker echo assumed cancelled)
    Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl/BurstR + Bpl)   (G.107 §7.5, 2005 and later)
    MOS    = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6, clamped to [1, 4.5]   (G.107 Annex B)

The E-model is a narrowband voice planning model; wardready uses it as a proxy for the audio of
a video call. Video quality itself is not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R0_DEFAULT = 93.2
"""R for G.107's default parameters with no delay and no codec impairment (G.107 §7.7). It is
Ro - Is - Id at T = Ta = Tr = 0, so the small listener-echo term Idle (about 0.15) is inside."""

MAX_ADVANTAGE = 20.0
"""The largest advantage factor G.107 §7.6 lists (multi-hop satellite to hard-to-reach places)."""


@dataclass(frozen=True)
class Codec:
    """A codec as the E-model sees it, plus the delay it adds before the first bit is sent.

    `ie` and `bpl` are G.113 Appendix I planning values; `packet_ms` is the speech carried in
    one packet (the sender waits that long to fill it) and `lookahead_ms` the encoder's
    algorithmic look-ahead.
    """

    name: str
    ie: float
    bpl: float
    packet_ms: float = 20.0
    lookahead_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.ie < 95:
            raise ValueError(f"codec {self.name!r}: Ie must be in [0, 95), not {self.ie}")
        if not self.bpl > 0:
            raise ValueError(f"codec {self.name!r}: Bpl must be positive, not {self.bpl}")
        if self.packet_ms < 0 or self.lookahead_ms < 0:
            raise ValueError(f"codec {self.name!r}: packet and look-ahead times must be >= 0")

    @property
    def delay_ms(self) -> float:
        """Sender-side delay: packetisation plus look-ahead (wardready's assumption)."""
        return self.packet_ms + self.lookahead_ms


G711_PLC = Codec("G.711 with PLC", ie=0.0, bpl=25.1)
"""G.711 with packet loss concealment (G.711 Appendix I), 20 ms packets: what soft clients do."""
G711 = Codec("G.711 without PLC", ie=0.0, bpl=4.3)
"""G.711 that plays silence for a lost packet; loss hurts about five times as much."""
G729A = Codec("G.729A with VAD", ie=11.0, bpl=19.0, packet_ms=20.0, lookahead_ms=5.0)
"""G.729A with voice activity detection, two 10 ms frames per packet, 5 ms look-ahead."""
CODECS = {c.name: c for c in (G711_PLC, G711, G729A)}
"""The named codecs. Opus is absent: G.113 gives it no narrowband Ie or Bpl."""

QUALITY_CATEGORIES = (
    (90.0, "very satisfied"),
    (80.0, "satisfied"),
    (70.0, "some users dissatisfied"),
    (60.0, "many users dissatisfied"),
    (50.0, "nearly all users dissatisfied"),
)
"""Lower R limit of each user-satisfaction category (G.109 Table 1, G.107 Table B.1)."""
NOT_RECOMMENDED = "not recommended"


@dataclass(frozen=True)
class Prediction:
    """The E-model's verdict on a link and the inputs it was computed from."""

    r: float
    """Transmission rating R; not clamped, so a very bad link shows how bad (can be < 0)."""
    mos: float
    """Predicted conversational MOS (MOS-CQE), 1 to 4.5."""
    category: str
    """User satisfaction for this R (G.109)."""
    one_way_delay_ms: float
    """Mouth-to-ear delay Ta fed to the model."""
    id: float
    """Delay impairment Id."""
    ie_eff: float
    """Effective equipment impairment Ie,eff (codec plus loss)."""


def _check(name: str, value: float, low: float, high: float = math.inf) -> None:
    # `not (low <= value <= high)` is also true for NaN, which would otherwise flow through
    # every formula and come out as a NaN MOS.
    if not (low <= value <= high) or math.isinf(value):
        span = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number {span}, not {value!r}")


def delay_impairment(one_way_delay_ms: float) -> float:
    """Id for a mouth-to-ear delay Ta: G.107's Idd, with talker echo perfectly cancelled.

    Idd = 0 up to 100 ms; above, with X = log2(Ta / 100),
    Idd = 25 {(1 + X^6)^(1/6) - 3 (1 + (X/3)^6)^(1/6) + 2}   (default mT = 100 ms, sT = 1).
    """
    _check("one-way delay (ms)", one_way_delay_ms, 0.0)
    if one_way_delay_ms <= 100.0:
        return 0.0
    x = math.log2(one_way_delay_ms / 100.0)
    return 25.0 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


def effective_equipment_impairment(loss_percent: float, codec: Codec = G711_PLC,
                                   burst_ratio: float = 1.0) -> float:
    """Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl/BurstR + Bpl), Ppl in percent (G.107 §7.5)."""
    _check("packet loss (%)", loss_percent, 0.0, 100.0)
    if not 0 < burst_ratio < math.inf:
        raise ValueError(f"burst ratio must be a finite number > 0 (1 is random loss, "
                         f"> 1 bursty), not {burst_ratio!r}")
    return codec.ie + (95 - codec.ie) * loss_percent / (loss_percent / burst_ratio + codec.bpl)


def r_factor(one_way_delay_ms: float, loss_percent: float, codec: Codec = G711_PLC,
             burst_ratio: float = 1.0, advantage: float = 0.0) -> float:
    """Transmission rating R = R0 - Id - Ie,eff + A for a mouth-to-ear delay and a loss."""
    _check("advantage factor", advantage, 0.0, MAX_ADVANTAGE)
    return (R0_DEFAULT - delay_impairment(one_way_delay_ms)
            - effective_equipment_impairment(loss_percent, codec, burst_ratio) + advantage)


def mos_from_r(r: float) -> float:
    """MOS-CQE from R (G.107 Annex B), kept within the scale's 1 to 4.5.

    Between R = 0 and about 6.5 the Annex B cubic dips to about 0.99; flooring it at 1 keeps
    MOS from ever rising as R falls.
    """
    if math.isnan(r):
        raise ValueError("R must be a number, not NaN")
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def quality_category(r: float) -> str:
    """G.109's user-satisfaction category for R ("not recommended" below 50)."""
    if math.isnan(r):
        raise ValueError("R must be a number, not NaN")
    for lower, label in QUALITY_CATEGORIES:
        if r >= lower:
            return label
    return NOT_RECOMMENDED


def one_way_delay(rtt_ms: float, jitter_ms: float, codec: Codec = G711_PLC,
                  jitter_buffer_factor: float = 2.0, extra_delay_ms: float = 0.0) -> float:
    """Mouth-to-ear delay estimated from measured figures (wardready's mapping, not ITU's).

    RTT / 2 (the path assumed symmetric) + a dejitter buffer of `jitter_buffer_factor` times
    the RFC 3550 jitter + the codec's packetisation and look-ahead + `extra_delay_ms` (sound
    devices, operating system; not measured, so 0 unless the caller knows better).
    """
    _check("RTT (ms)", rtt_ms, 0.0)
    _check("jitter (ms)", jitter_ms, 0.0)
    _check("jitter buffer factor", jitter_buffer_factor, 0.0)
    _check("extra delay (ms)", extra_delay_ms, 0.0)
    return rtt_ms / 2 + jitter_buffer_factor * jitter_ms + codec.delay_ms + extra_delay_ms


def predict(rtt_ms: float, jitter_ms: float, loss_percent: float, codec: Codec = G711_PLC,
            burst_ratio: float = 1.0, advantage: float = 0.0, jitter_buffer_factor: float = 2.0,
            extra_delay_ms: float = 0.0) -> Prediction:
    """R, MOS and category for a link from its RTT, jitter and one-way loss.

    `loss_percent` is the loss in the direction the audio flows (Ppl), not the round trip's.
    """
    delay = one_way_delay(rtt_ms, jitter_ms, codec, jitter_buffer_factor, extra_delay_ms)
    id_ = delay_impairment(delay)
    ie_eff = effective_equipment_impairment(loss_percent, codec, burst_ratio)
    r = r_factor(delay, loss_percent, codec, burst_ratio, advantage)
    return Prediction(r=r, mos=mos_from_r(r), category=quality_category(r),
                      one_way_delay_ms=delay, id=id_, ie_eff=ie_eff)
