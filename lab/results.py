"""Typed check results built from chosen figures: a link of so many Mbit/s, a UDP path with
so much loss, a PC with or without a webcam. For tests and benchmarks that need a PC's
results without measuring them."""

from __future__ import annotations

from typing import Any

from wardready.checks import bandwidth, host, latency, media, path, peripherals, probe
from wardready.core import emodel


def link(down_mbps: float, up_mbps: float, loaded_rtt_ms: float = 20.0) -> bandwidth.Result:
    def direction(name: str, mbps: float) -> dict[str, Any]:
        return {"direction": name, "bytes_per_second": mbps * 1e6 / 8, "bytes": 10**7,
                "seconds": 5.0, "warmup_seconds": 1.0, "measured_seconds": 4.0,
                "stop_reason": "converged", "streams": 4,
                "rtt_under_load_median_seconds": loaded_rtt_ms / 1e3,
                "rtt_under_load_p95_seconds": loaded_rtt_ms / 1e3, "load_probes": 10,
                "load_probes_lost": 0}
    return bandwidth.Result.model_validate({
        "server": "http://127.0.0.1:8470", "idle_rtt_median_seconds": 0.01,
        "slot_wait_seconds": 0.0,
        "directions": [direction("download", down_mbps), direction("upload", up_mbps)]})


def udp(reachable: bool = True, rtt_ms: float = 20.0, jitter_ms: float = 2.0,
        loss: float = 0.0) -> media.Result:
    received = 0 if not reachable else 500 - int(500 * loss)
    stats: dict[str, Any] = {
        "udp_reachable": reachable, "udp_port": 8471, "packet_rate": 50.0,
        "packet_bytes": 1200, "packets_sent": 500, "packets_received": received,
        "server_received_packets": received if reachable else 0, "server_dropped_packets": 0,
        "loss_ratio": 1.0 - received / 500, "forward_loss_ratio": loss if reachable else None,
        "return_loss_ratio": 0.0 if reachable else None, "reordered_packets": 0,
        "forward_reordered_packets": 0, "return_reordered_packets": 0, "duplicate_packets": 0,
        "forward_duplicate_packets": 0, "return_duplicate_packets": 0,
        "send_rate_packets_per_second": 50.0, "send_late_max_seconds": 0.0,
        "socket_errors": 0, "socket_error": None}
    for stat in ("min", "median", "p95", "max"):
        stats[f"rtt_{stat}_seconds"] = rtt_ms / 1e3 if reachable else None
    stats["jitter_forward_seconds"] = stats["jitter_return_seconds"] = (
        jitter_ms / 1e3 if reachable else None)
    if reachable:
        p = emodel.predict(rtt_ms, jitter_ms, loss * 100)
        stats.update(r_factor=p.r, predicted_mos=p.mos)
    # The window statistics of a 10 s run (one 15 s window) whose losses are spread
    # evenly: its worst window and worst 200 ms see the run's loss, no reordering.
    run_loss = stats["loss_ratio"]
    stats.update(
        reorder_ratio=0.0 if reachable else None, window_seconds=15.0, windows=1,
        window_loss={"start_seconds": 0.0, "length_seconds": 10.0, "value": run_loss},
        window_jitter={"start_seconds": 0.0, "length_seconds": 10.0,
                       "value": jitter_ms / 1e3} if reachable else None,
        burst_seconds=0.2,
        burst_loss={"start_seconds": 0.0, "length_seconds": 0.2, "value": run_loss})
    return media.Result.model_validate(stats)


def icmp(rtt_ms: float = 30.0) -> latency.Result:
    return latency.Result.model_validate({"targets": [{
        "target": "server", "address": "127.0.0.1", "method": "icmp-raw", "port": None,
        "sent": 20, "received": 20, "loss_ratio": 0.0, "rtt_min_seconds": rtt_ms / 1e3,
        "rtt_median_seconds": rtt_ms / 1e3, "rtt_p95_seconds": rtt_ms / 1e3,
        "rtt_max_seconds": rtt_ms / 1e3, "rtt_mean_seconds": rtt_ms / 1e3,
        "jitter_seconds": 0.001, "rtts_seconds": [rtt_ms / 1e3] * 20}]})


def kit(webcams: int | None = 1) -> peripherals.Result:
    return peripherals.Result(os="linux", counts={
        "webcam": webcams, "microphone": 1, "speaker": 1, "printer": 0, "scanner": 0,
        "usb": 3})


def probe_interval(rtt_ms: float = 20.0, lost: int = 0, sent: int = 58) -> probe.Result:
    """One interval of the continuous probe: `sent` probes a second apart, the first `lost`
    of them without an echo, the others back after `rtt_ms` (alternately 1 ms more, so
    consecutive answers differ by 1 ms)."""
    second = 10**9
    sent_ns = [i * second for i in range(sent)]
    echoes = [media.Echo(seq=i, server_received_ns=i * second, server_count=n,
                         received_ns=sent_ns[i] + round((rtt_ms + i % 2) * 1e6))
              for n, i in enumerate(range(lost, sent))]
    summary = probe.summarise(sent_ns, echoes, timeout=2.5, server_unique=sent - lost)
    size = 28 + probe.Config().packet_bytes
    return probe.Result.model_validate({
        **summary.model_dump(), "udp_port": 8471, "packet_rate": 1.0,
        "packet_bytes": probe.Config().packet_bytes, "send_late_max_seconds": 0.0,
        "udp_sent_bytes": sent * size, "udp_received_bytes": (sent - lost) * size,
        "http_sent_bytes": 300, "http_received_bytes": 200, "socket_errors": 0,
        "socket_error": None})


def segments(gateway_lost: int = 0, server_lost: int = 0, loss_start: int | None = None,
             sent: int = 100) -> path.Result:
    """A `path` round over gateway 10.10.1.1, the provider's 100.64.0.1 and the server
    10.200.0.10: `gateway_lost` and `server_lost` of `sent` probes lost, loss from hop
    `loss_start` on."""
    def hop(ttl: int, address: str) -> path.Hop:
        lost = 2 if loss_start is not None and ttl >= loss_start else 0
        return path.Hop(ttl=ttl, address=address, sent=10, lost=lost, loss_ratio=lost / 10,
                        rtt_median_seconds=0.002 * ttl, received_dscp=46)

    def target(address: str, lost: int) -> path.Target:
        return path.Target(address=address, method="icmp", sent=sent, lost=lost,
                           loss_ratio=lost / sent, rtt_median_seconds=0.01,
                           rtt_p95_seconds=0.012, jitter_seconds=0.001)
    return path.Result(
        gateway=target("10.10.1.1", gateway_lost), server=target("10.200.0.10", server_lost),
        hops=[hop(1, "10.10.1.1"), hop(2, "100.64.0.1"), hop(3, "10.200.0.10")],
        reached=True, loss_start_hop=loss_start, dscp_sent=46, dscp_changed_at_hop=None,
        method="icmp", packets_sent=2 * sent + 30, bytes_sent=(2 * sent + 30) * 60)


def results(**changes: Any) -> dict[str, Any]:
    base = {"host": host.collect(), "bandwidth": link(95, 40), "media": udp(),
            "latency": icmp(), "peripherals": kit()}
    return {**base, **changes}
