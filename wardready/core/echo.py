"""The UDP echo's wire format: what the media check sends and the server's echo answers.

Defined once, below both: `wardready.checks.media` speaks it, `wardready.server.udp_echo`
answers it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"WR"
VERSION = 1
PROBE = 1
"""Kind of a packet from the agent; the server only ever answers this kind."""
ECHO = 2
"""Kind of a packet from the server: never echoed again, so two echo servers cannot loop."""
KEY_BYTES = 16
HEADER = struct.Struct("!2sBB16sIQQI")
"""magic, version, kind, session key, sequence number, client send time (ns, client clock),
server receive time (ns, server clock; 0 in a probe), server count (packets the server accepted
in this session including this one; 0 in a probe). Network byte order; padding follows."""


@dataclass(frozen=True)
class Packet:
    """One packet's header."""

    kind: int
    key: bytes
    seq: int
    client_sent_ns: int
    server_received_ns: int = 0
    server_count: int = 0


def encode(packet: Packet, size: int) -> bytes:
    """The packet as `size` bytes on the wire (header, then zero padding)."""
    if size < HEADER.size:
        raise ValueError(f"a packet needs at least {HEADER.size} bytes, not {size}")
    return HEADER.pack(MAGIC, VERSION, packet.kind, packet.key, packet.seq,
                       packet.client_sent_ns, packet.server_received_ns,
                       packet.server_count) + bytes(size - HEADER.size)


def decode(data: bytes) -> Packet | None:
    """The header of a datagram, or None if it is not one of ours (short, foreign, other
    version, unknown kind)."""
    if len(data) < HEADER.size:
        return None
    magic, version, kind, key, seq, sent, received, count = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or kind not in (PROBE, ECHO):
        return None
    return Packet(kind, key, seq, sent, received, count)
