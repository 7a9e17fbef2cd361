"""Loss from the continuous probe (`checks.probe`) against what the kernel dropped, on an
emulated ward link with 3 % random loss each way (lab/netlab.py): an hour's worth of probes
at the default rate (3,600), time compressed to 200 a second over four echo sessions, run as
the agent runs them (one process, interval after interval, its connection kept), against a
real server in the city namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import netlab
from lab.netlab import LinkSpec, WardLink
from wardready.checks import probe

LOSS_PERCENT = 3.0
PROBES, RATE, SESSIONS = 3600, 200.0, 4
ECHO_PORT = 8471
TOLERANCE = 0.005
"""±0.5 percentage point."""

@pytest.fixture
def netlab_ready() -> None:
    """Skip (a failure under CI=true) where namespaces cannot be built."""
    reason = netlab.require_netlab()
    if reason:
        pytest.skip(f"emulated links: {reason}")


def test_probe_loss_is_what_the_kernel_dropped_over_an_hours_worth_of_probes(
        netlab_ready: None, tmp_path: Path) -> None:
    config = probe.Config(interval_seconds=PROBES / SESSIONS / RATE, packet_rate=RATE,
                          probe_timeout_seconds=1.5, timeout_seconds=60)
    with WardLink(LinkSpec(loss_percent=LOSS_PERCENT)) as link:
        token = netlab.start_city_server(link, tmp_path, echo_port=ECHO_PORT,
                                         echo={"max_packet_rate": 2 * RATE})
        # The echo's UDP as it reaches the router ("in", before the loss rules) and as it
        # leaves it ("out", what they let through), each way.
        for way, match in (("up", f"udp dport {ECHO_PORT}"),
                           ("down", f"udp sport {ECHO_PORT}")):
            link.add_counter(f"{way}-in", match)
            link.add_counter(f"{way}-out", match, after_loss=True)
        results = netlab.probe_intervals(link, config, SESSIONS, token)
        counted = link.counters()
        all_drops = link.loss_drops()  # the loss rules' own counters: TCP included
    assert len(results) == SESSIONS
    sent = sum(r.packets_sent for r in results)
    lost = sum(r.packets_lost for r in results)
    assert sent == PROBES
    assert sum(r.packets_late for r in results) == 0
    kernel = {name: packets for name, (packets, _) in counted.items()}

    # Every probe crosses the router once on its way to the server; the loss rule drops
    # up-in - up-out of them. The server echoes every probe that reaches it (it refused
    # none: its caps are above this rate), so the echoes reach the router as many as the
    # probes that left it, and the rule drops down-in - down-out of those. A probe is lost
    # when either its request or its echo was dropped, never both (a dropped request has
    # no echo), so the round trip lost exactly the sum of both ways' drops, out of up-in.
    assert kernel["up-in"] == sent
    assert kernel["down-in"] == kernel["up-out"]
    dropped_up = kernel["up-in"] - kernel["up-out"]
    dropped_down = kernel["down-in"] - kernel["down-out"]
    kernel_ratio = (dropped_up + dropped_down) / kernel["up-in"]
    probe_ratio = lost / sent
    figures = (f"probe: {lost} of {sent} lost = {probe_ratio:.4%}; kernel: {dropped_up} up + "
               f"{dropped_down} down dropped = {kernel_ratio:.4%} (configured "
               f"{netlab.round_trip_loss(LOSS_PERCENT):.4%}); the loss rules with TCP: "
               f"{all_drops}")
    print(figures)
    assert abs(probe_ratio - kernel_ratio) <= TOLERANCE, figures
    # The server's count splits it by direction, as the kernel's counters do.
    assert sum(r.server_received_packets or 0 for r in results) == kernel["up-out"], figures
    # The bytes the probe says it moved are the IP packets the kernel counted.
    assert sum(r.udp_sent_bytes for r in results) == counted["up-in"][1] == sent * (48 + 28)
    assert sum(r.udp_received_bytes for r in results) == counted["down-out"][1]
