"""Linux TCP_INFO: what a sending socket's kernel knows about why it went no faster.

ndt7 (m-lab/ndt-server `spec/ndt7-protocol.md`) reports the sender's `struct tcp_info`
(linux/include/uapi/linux/tcp.h): retransmissions, and how long the sender was limited by
the receiver's window (`tcpi_rwnd_limited`) or by its own send buffer
(`tcpi_sndbuf_limited`) out of the time it had data to send (`tcpi_busy_time`). The kernel
splits busy time into exactly three states (net/ipv4/tcp.c, `tcp_get_info_chrono_stats`):
cwnd-limited (the network), rwnd-limited (the receiving PC) and sndbuf-limited (the sending
application or its buffer); so `1 - rwnd - sndbuf` of it was the network's doing.

The struct is parsed by offset: older kernels return a shorter one, and a field beyond what
the kernel filled is None. Pure but for `read`, a getsockopt that returns None off Linux.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

TCP_INFO = getattr(socket, "TCP_INFO", 11)
BUFFER = 512
"""More than any kernel's struct (248 bytes in 6.x): the kernel fills what it knows."""

# (field, offset, struct format) after linux/include/uapi/linux/tcp.h; native byte order.
LAYOUT: tuple[tuple[str, int, str], ...] = (
    ("state", 0, "B"), ("ca_state", 1, "B"), ("retransmits", 2, "B"),
    ("rto", 8, "I"), ("snd_mss", 16, "I"), ("rcv_mss", 20, "I"),
    ("unacked", 24, "I"), ("lost", 32, "I"), ("retrans", 36, "I"),
    ("pmtu", 60, "I"), ("rtt", 68, "I"), ("rttvar", 72, "I"),
    ("snd_ssthresh", 76, "I"), ("snd_cwnd", 80, "I"), ("rcv_space", 96, "I"),
    ("total_retrans", 100, "I"),
    ("pacing_rate", 104, "Q"), ("bytes_acked", 120, "Q"), ("bytes_received", 128, "Q"),
    ("segs_out", 136, "I"), ("segs_in", 140, "I"), ("notsent_bytes", 144, "I"),
    ("min_rtt", 148, "I"), ("data_segs_in", 152, "I"), ("data_segs_out", 156, "I"),
    ("delivery_rate", 160, "Q"),  # Linux 4.9
    ("busy_time", 168, "Q"), ("rwnd_limited", 176, "Q"), ("sndbuf_limited", 184, "Q"),  # 4.10
    ("delivered", 192, "I"), ("delivered_ce", 196, "I"),  # 4.18
    ("bytes_sent", 200, "Q"), ("bytes_retrans", 208, "Q"),  # 4.19
    ("dsack_dups", 216, "I"), ("reord_seen", 220, "I"),
    ("rcv_ooopack", 224, "I"), ("snd_wnd", 228, "I"),  # 5.4
)


@dataclass(frozen=True)
class TcpInfo:
    """One socket's counters, in the kernel's units: times in microseconds, rates in bytes
    per second, windows in segments (snd_cwnd) or bytes. None: the kernel's struct ends
    before the field."""

    state: int | None = None
    ca_state: int | None = None
    retransmits: int | None = None
    rto: int | None = None
    snd_mss: int | None = None
    rcv_mss: int | None = None
    unacked: int | None = None
    lost: int | None = None
    retrans: int | None = None
    pmtu: int | None = None
    rtt: int | None = None
    rttvar: int | None = None
    snd_ssthresh: int | None = None
    snd_cwnd: int | None = None
    rcv_space: int | None = None
    total_retrans: int | None = None
    pacing_rate: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None
    segs_out: int | None = None
    segs_in: int | None = None
    notsent_bytes: int | None = None
    min_rtt: int | None = None
    data_segs_in: int | None = None
    data_segs_out: int | None = None
    delivery_rate: int | None = None
    busy_time: int | None = None
    rwnd_limited: int | None = None
    sndbuf_limited: int | None = None
    delivered: int | None = None
    delivered_ce: int | None = None
    bytes_sent: int | None = None
    bytes_retrans: int | None = None
    dsack_dups: int | None = None
    reord_seen: int | None = None
    rcv_ooopack: int | None = None
    snd_wnd: int | None = None

    def as_dict(self) -> dict[str, int]:
        """The fields the kernel gave (for JSON)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TcpInfo:
        """Back from `as_dict` (unknown keys ignored, so a newer server's are harmless)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items()  # type: ignore[call-overload]
                      if k in known and v is not None})

    def minus(self, before: TcpInfo) -> TcpInfo:
        """The cumulative counters' growth since `before` (the same socket, earlier);
        instantaneous fields (rtt, cwnd, ...) are this snapshot's."""
        grown = {}
        for name in CUMULATIVE:
            now, then = getattr(self, name), getattr(before, name)
            grown[name] = None if now is None else now - (then or 0)
        return TcpInfo(**{**self.as_dict(), **grown})


CUMULATIVE = ("total_retrans", "bytes_acked", "bytes_received", "segs_out", "segs_in",
              "data_segs_in", "data_segs_out", "busy_time", "rwnd_limited", "sndbuf_limited",
              "delivered", "delivered_ce", "bytes_sent", "bytes_retrans", "dsack_dups",
              "reord_seen", "rcv_ooopack")


def parse(raw: bytes) -> TcpInfo:
    """A `struct tcp_info` as getsockopt returned it (any length: fields past its end are
    None)."""
    values = {}
    for name, offset, fmt in LAYOUT:
        end = offset + struct.calcsize(fmt)
        if end <= len(raw):
            values[name] = struct.unpack_from("=" + fmt, raw, offset)[0]
    return TcpInfo(**values)


def read(sock: Any) -> TcpInfo | None:
    """TCP_INFO of a connected TCP socket (or asyncio's TransportSocket); None off Linux,
    or when the socket is closed."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, BUFFER)
    except (OSError, ValueError, AttributeError):
        return None
    return parse(raw) if isinstance(raw, bytes) and raw else None




@dataclass(frozen=True)
class Summary:
    """Several streams' TCP_INFO summed: the sender's view of one direction."""

    streams: int
    bytes_sent: int | None
    bytes_retrans: int | None
    data_segs_out: int | None
    total_retrans: int | None
    dsack_dups: int | None
    busy_seconds: float | None
    rwnd_limited_seconds: float | None
    sndbuf_limited_seconds: float | None
    rtt_seconds: float | None
    """The largest smoothed RTT among the streams at the end."""

    @property
    def retransmitted_ratio(self) -> float | None:
        """bytes_retrans / bytes_sent: M-Lab's ndt7 `LossRate` (bytes_sent counts the
        retransmissions too, RFC 4898 tcpEStatsPerfHCDataOctetsOut)."""
        if not self.bytes_sent or self.bytes_retrans is None:
            return None
        return self.bytes_retrans / self.bytes_sent

    @property
    def loss_ratio(self) -> float | None:
        """(retransmitted segments - those the receiver reported as duplicates by DSACK)
        / data segments sent: the retransmissions that were needed, the sender's estimate
        of the path's loss. Spurious retransmissions (a timer firing during a delay) are
        what DSACK reports (RFC 2883, RFC 3708)."""
        if not self.data_segs_out or self.total_retrans is None or self.dsack_dups is None:
            return None
        return max(0, self.total_retrans - self.dsack_dups) / self.data_segs_out

    @property
    def rwnd_limited_ratio(self) -> float | None:
        return _share(self.rwnd_limited_seconds, self.busy_seconds)

    @property
    def sndbuf_limited_ratio(self) -> float | None:
        return _share(self.sndbuf_limited_seconds, self.busy_seconds)



def _share(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return min(1.0, part / whole)


def _total(infos: list[TcpInfo], name: str) -> int | None:
    values = [getattr(i, name) for i in infos]
    return None if any(v is None for v in values) or not values else sum(values)


def summarize(infos: Iterable[TcpInfo]) -> Summary:
    """Sum the streams' counters (times in seconds)."""
    items = list(infos)
    busy, rwnd, sndbuf = (_total(items, n) for n in ("busy_time", "rwnd_limited",
                                                      "sndbuf_limited"))
    rtts = [i.rtt for i in items if i.rtt is not None]
    return Summary(
        streams=len(items), bytes_sent=_total(items, "bytes_sent"),
        bytes_retrans=_total(items, "bytes_retrans"),
        data_segs_out=_total(items, "data_segs_out"),
        total_retrans=_total(items, "total_retrans"), dsack_dups=_total(items, "dsack_dups"),
        busy_seconds=None if busy is None else busy / 1e6,
        rwnd_limited_seconds=None if rwnd is None else rwnd / 1e6,
        sndbuf_limited_seconds=None if sndbuf is None else sndbuf / 1e6,
        rtt_seconds=max(rtts) / 1e6 if rtts else None)
