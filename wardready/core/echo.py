"""The UDP echo's wire format: what the media check and the probe send and the server's echo
answers.

Defined once, below both: `wardready.checks.media` and `wardready.checks.probe` speak it,
`wardready.server.udp_echo` answers it.

Every packet starts with `HEADER` (44 bytes). Version 2 adds `COS` (4 bytes) right after
it, the idea of RFC 8972's Class-of-Service TLV: the agent names the DS field (DSCP and ECN,
the IPv4 TOS or IPv6 Traffic Class byte) it wants the echo sent back with; the server writes
in the DS field the probe arrived with and the one it sent the echo with. A router on the way
that rewrites a call's marking (EF to 0, say) is then seen in the echo. A version-2 packet
is at least `V2_BYTES` long.

The server answers each probe in the version it came in: an agent from before version 2
sends version-1 probes (44 bytes and up) and gets version-1 echoes, as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"WR"
VERSION = 2
"""The version agents send (when the packet is large enough, `V2_BYTES`)."""
VERSIONS = (1, 2)
"""The versions the server answers."""
PROBE = 1
"""Kind of a packet from the agent; the server only ever answers this kind."""
ECHO = 2
"""Kind of a packet from the server: never echoed again, so two echo servers cannot loop."""
KEY_BYTES = 16
HEADER = struct.Struct("!2sBB16sIQQI")
"""Both versions: magic, version, kind, session key, sequence number, client send time (ns,
client clock), server receive time (ns, server clock; 0 in a probe), server count (packets
the server accepted in this session including this one; 0 in a probe). Network byte order;
padding (or, in version 2, `COS`) follows."""
COS = struct.Struct("!BBBB")
"""Version 2, right after `HEADER`: the DS field the agent asks the echo to be sent back
with (RFC 8972's DSCP1, with ECN bits); the DS field the probe arrived with at the server
(DSCP2 and ECN); the DS field the server sent the echo with; flags (`RECEIVED_KNOWN`). All
0 in a probe but the first. A DS field is DSCP << 2 | ECN."""
COS_OFFSET = HEADER.size
V2_BYTES = HEADER.size + COS.size
"""48: the shortest version-2 packet."""
RECEIVED_KNOWN = 0x01
"""Flag: the server read the DS field the probe arrived with (else that byte is 0, unknown)."""


def dscp(ds_field: int) -> int:
    """The DSCP of a DS field (the TOS or Traffic Class byte): its upper six bits."""
    return ds_field >> 2


@dataclass(frozen=True)
class Packet:
    """One packet's header."""

    kind: int
    key: bytes
    seq: int
    client_sent_ns: int
    server_received_ns: int = 0
    server_count: int = 0
    version: int | None = None
    """None when encoding: the highest that fits the size (`version_for`)."""
    reply_tos: int = 0
    """Version 2: the DS field the agent asks the echo to be sent back with."""
    received_tos: int | None = None
    """Version 2 echo: the DS field the probe arrived with at the server; None if unknown
    (version 1, or the server could not read it)."""
    sent_tos: int | None = None
    """Version 2 echo: the DS field the server sent the echo with."""


def version_for(size: int) -> int:
    """The version an agent sends in a packet of `size` bytes: 2 if it fits, else 1."""
    return VERSION if size >= V2_BYTES else 1


def encode(packet: Packet, size: int) -> bytes:
    """The packet as `size` bytes on the wire (header, then zero padding)."""
    version = packet.version or version_for(size)
    if version not in VERSIONS:
        raise ValueError(f"unknown echo version {version}")
    least = V2_BYTES if version == 2 else HEADER.size
    if size < least:
        raise ValueError(f"a version-{version} packet needs at least {least} bytes, not {size}")
    head = HEADER.pack(MAGIC, version, packet.kind, packet.key, packet.seq,
                       packet.client_sent_ns, packet.server_received_ns, packet.server_count)
    if version == 2:
        known = packet.received_tos is not None
        head += COS.pack(packet.reply_tos, packet.received_tos or 0, packet.sent_tos or 0,
                         RECEIVED_KNOWN if known else 0)
    return head + bytes(size - len(head))


def decode(data: bytes) -> Packet | None:
    """The header of a datagram, or None if it is not one of ours (short, foreign, unknown
    version or kind)."""
    if len(data) < HEADER.size:
        return None
    magic, version, kind, key, seq, sent, received, count = HEADER.unpack_from(data)
    if magic != MAGIC or version not in VERSIONS or kind not in (PROBE, ECHO):
        return None
    if version == 1:
        return Packet(kind, key, seq, sent, received, count, version=1)
    if len(data) < V2_BYTES:
        return None
    reply, got, sent_back, flags = COS.unpack_from(data, COS_OFFSET)
    known = kind == ECHO and bool(flags & RECEIVED_KNOWN)
    return Packet(kind, key, seq, sent, received, count, version=2, reply_tos=reply,
                  received_tos=got if known else None,
                  sent_tos=sent_back if kind == ECHO else None)
