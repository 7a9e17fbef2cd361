"""DSCP survival: the continuous probe (`checks.probe`) marks its probes EF, AF41 and default,
and the echo (`server.udp_echo`, wire version 2 of `wardready.core.echo`) reports the DS field
each arrived with, as RFC 8972's Class-of-Service TLV does. On loopback against a real server
app (the marks read back from the kernel's ancillary data); a version-1 probe still gets a
version-1 echo; and on emulated ward links (lab/netlab.py) whose router leaves the marking
alone or rewrites it with an nftables rule, whose own counters confirm what it did.

Expected values come from the published code points (RFC 3246: EF = 46; RFC 2597: AF41 = 34;
RFC 2474: the DSCP is the DS field's upper six bits), from the kernel, and from the nftables
rules the tests install, never from the code under test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from lab import netlab
from lab.netlab import NFT_TABLE, WardLink
from tests.conftest import exposition, promtool_check_metrics
from wardready.checks import media, probe
from wardready.checks.base import Context, ServerLink
from wardready.checks.media import Echo
from wardready.core.echo import ECHO, PROBE, V2_BYTES, Packet, decode, encode
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.config import EchoConfig, ServerConfig
from wardready.server.store import Store
from wardready.server.udp_echo import ECHO_SERVICE, EchoService, SessionRequest

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]
WARD, HOST = "sai-gon", "counter-01"
EF, AF41, AF11 = 46, 34, 10
"""RFC 3246 (EF), RFC 2597 (AF41, AF11)."""
QUIET = 0.5
"""Seconds without a datagram after which a loopback echo is not coming."""
V1 = struct.Struct("!2sBB16sIQQI")
"""Version 1 as docs/api.md published it before version 2, written out here so the test
does not take the layout from the code it tests."""


@pytest.fixture(autouse=True)
def no_kept_connections() -> Iterator[None]:
    yield
    probe.close_connections()


@pytest.fixture
def token(config: ServerConfig) -> str:
    with Store(config.database) as store:
        return store.issue_token(WARD, HOST)


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: ServerConfig) -> Client:
    return await aiohttp_client(create_app(config, load_inventory(config.inventory)))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the wire format ---------------------------------------------------------------------------

def test_version_2_carries_the_ds_fields_and_version_1_stays_as_it_was() -> None:
    key = bytes(range(16))
    v2 = encode(Packet(ECHO, key, 7, 11, 22, 3, reply_tos=EF << 2, received_tos=0x89,
                       sent_tos=EF << 2), 60)
    assert len(v2) == 60 and V2_BYTES == 48
    assert v2[2] == 2 and v2[44:48] == bytes([0xB8, 0x89, 0xB8, 0x01])
    got = decode(v2)
    assert got is not None
    assert (got.version, got.reply_tos, got.received_tos, got.sent_tos) == (2, 184, 137, 184)
    # 0x89 = DSCP 34 (AF41) with ECN 01 (ECT(1)).
    assert got.received_tos is not None and got.received_tos >> 2 == AF41
    # Version 1: the old layout, byte for byte, no DS fields.
    v1 = encode(Packet(PROBE, key, 7, 11, version=1), 50)
    assert v1 == V1.pack(b"WR", 1, PROBE, key, 7, 11, 0, 0) + bytes(6)
    old = decode(v1)
    assert old is not None and (old.version, old.received_tos, old.sent_tos) == (1, None, None)
    # The highest version that fits when none is named; a version-2 header does not fit 47.
    assert encode(Packet(PROBE, key, 0, 0), 47)[2] == 1
    assert encode(Packet(PROBE, key, 0, 0), 48)[2] == 2
    with pytest.raises(ValueError, match="version-2 packet needs at least 48 bytes"):
        encode(Packet(PROBE, key, 0, 0, version=2), 47)
    assert decode(v2[:47]) is None  # a truncated version 2 is not one of ours
    unknown = bytearray(v2)
    unknown[47] = 0  # flag clear: the server could not read the DS field
    reread = decode(bytes(unknown))
    assert reread is not None and reread.received_tos is None


# -- the probe's figures on crafted echoes -----------------------------------------------------

def test_each_class_counts_what_the_server_received() -> None:
    classes: tuple[probe.DscpClass, ...] = ("ef", "af41", "default")
    # Probes 0..8 marked ef, af41, default in turn; the server saw EF rewritten to 0 twice
    # and kept once, AF41 kept, default untouched; probe 8 lost, probe 5's echo in twice.
    received = {0: 0, 1: AF41 << 2, 2: 0, 3: 0, 4: AF41 << 2 | 1, 5: 0, 6: EF << 2, 7: AF41 << 2}
    echoes = [Echo(seq, 0, seq + 1, 0, tos) for seq, tos in received.items()]
    echoes += [Echo(5, 0, 9, 0, 0), Echo(99, 0, 10, 0, EF << 2), Echo(2, 0, 11, 0, None)]
    counts = probe.dscp_counts(classes, echoes, sent=9)
    assert [c.model_dump() for c in counts] == [
        {"service_class": "ef", "sent": 46, "received": 0, "packets": 2},
        {"service_class": "ef", "sent": 46, "received": 46, "packets": 1},
        {"service_class": "af41", "sent": 34, "received": 34, "packets": 3},
        {"service_class": "default", "sent": 0, "received": 0, "packets": 2}]
    assert probe.dscp_counts(classes, [Echo(0, 0, 1, 0, None)], sent=9) == []


def result_with(dscp: list[dict[str, Any]]) -> probe.Result:
    summary = probe.summarise([0], [Echo(0, 1, 1, 2)], timeout=1.0, server_unique=1)
    return probe.Result(**vars(summary), udp_port=8471, packet_rate=1.0, packet_bytes=48,
                        send_late_max_seconds=0.0, udp_sent_bytes=76, udp_received_bytes=76,
                        http_sent_bytes=0, http_received_bytes=0, socket_errors=0,
                        socket_error=None, dscp=dscp)


def test_metrics_say_preserved_or_rewritten_and_leave_unknown_classes_out() -> None:
    r = result_with([{"service_class": "ef", "sent": 46, "received": 0, "packets": 19},
                     {"service_class": "ef", "sent": 46, "received": 46, "packets": 1},
                     {"service_class": "af41", "sent": 34, "received": 34, "packets": 20}])
    body = exposition(probe.METRICS, list(probe.samples(r)))
    assert promtool_check_metrics(body) == ""
    got = {(s.name, s.labels.get("class")): s.value
           for f in text_string_to_metric_families(body.decode()) for s in f.samples
           if s.name.startswith("wardready_probe_dscp")}
    assert got == {("wardready_probe_dscp_preserved", "ef"): 0,
                   ("wardready_probe_dscp_received", "ef"): 0,
                   ("wardready_probe_dscp_preserved", "af41"): 1,
                   ("wardready_probe_dscp_received", "af41"): 34}  # default: unknown, absent
    # An older agent's result has no `dscp`: nothing about marking, nothing wrong either.
    old = result_with([]).model_dump(mode="json")
    del old["dscp"]
    assert probe.Result.model_validate(old).dscp == []
    with pytest.raises(ValidationError):
        result_with([{"service_class": "cs7", "sent": 56, "received": 56, "packets": 1}])
    with pytest.raises(ValidationError, match="must not repeat"):
        probe.Config(dscp_classes=("ef", "ef"))


# -- loopback: the server reads and reports the marking ----------------------------------------

@dataclass
class Marked:
    sock: socket.socket

    async def exchange(self, packet: bytes, tos: int) -> tuple[bytes, int | None] | None:
        """Send `packet` with DS field `tos`; the answer and the DS field it came with."""
        loop = asyncio.get_running_loop()
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        await loop.sock_sendall(self.sock, packet)
        deadline = loop.time() + QUIET
        while loop.time() < deadline:  # bounded: the socket is non-blocking
            try:
                data, ancdata, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(4))
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            got = [d[0] for level, kind, d in ancdata
                   if (level, kind) == (socket.IPPROTO_IP, socket.IP_TOS)]
            return data, got[0] if got else None
        return None


@contextlib.asynccontextmanager
async def marked_socket(port: int) -> AsyncIterator[Marked]:
    """A UDP socket to the echo that reads the DS field of what comes back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
        sock.connect(("127.0.0.1", port))
        yield Marked(sock)
    finally:
        sock.close()


async def probe_session(client: Client, token: str) -> tuple[bytes, int]:
    resp = await client.post("/api/v1/udp-sessions", json={"purpose": "probe"},
                             headers=auth(token))
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return bytes.fromhex(body["session"]), int(body["port"])


async def test_the_echo_reports_the_ds_field_it_received_and_sends_back_the_one_asked(
        client: Client, token: str) -> None:
    key, port = await probe_session(client, token)
    async with marked_socket(port) as udp:
        # EF with ECN ECT(1) set by the sender, asking for an EF echo.
        answer = await udp.exchange(encode(Packet(PROBE, key, 0, time.monotonic_ns(),
                                                  reply_tos=EF << 2 | 1), 48), EF << 2 | 1)
        assert answer is not None
        data, came_back_with = answer
        echo = decode(data)
        assert echo is not None and (echo.kind, echo.version, len(data)) == (ECHO, 2, 48)
        assert echo.received_tos == 0xB9  # DSCP 46, ECN 01: as the kernel marked it
        # Sent back with the DSCP asked for, and no ECN bits: the kernel says so.
        assert echo.sent_tos == came_back_with == 0xB8
        # Unmarked, asking for nothing: a 0 that is known, not unknown; an unmarked echo.
        answer = await udp.exchange(encode(Packet(PROBE, key, 1, 0), 100), 0)
        assert answer is not None
        echo = decode(answer[0])
        assert echo is not None and (echo.received_tos, echo.sent_tos, answer[1]) == (0, 0, 0)


async def test_over_ipv6_the_traffic_class_is_read_and_set_alike() -> None:
    """A server listening on IPv6 reads the Traffic Class (IPV6_RECVTCLASS) and marks its
    echo with IPV6_TCLASS; the client's kernel reports what the echo came with."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    service = EchoService(EchoConfig(listen_host="::1"))
    serving = service.serve(web.Application())
    await serving.__anext__()
    try:
        key = service.open(("w", "h"), SessionRequest(purpose="probe")).key
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        with sock:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, AF41 << 2)
            sock.connect(("::1", service.port))
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, encode(Packet(PROBE, key, 0, 0,
                                                        reply_tos=AF41 << 2), 64))
            answer = None
            for _ in range(100):  # bounded: up to a second
                try:
                    answer = sock.recvmsg(2048, socket.CMSG_SPACE(4))
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        assert answer is not None
        data, ancdata, _, _ = answer
        [(level, kind, tclass)] = ancdata
        assert (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
        echo = decode(data)
        assert echo is not None
        assert echo.received_tos == echo.sent_tos == int.from_bytes(tclass, sys.byteorder) \
            == 0x88
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await serving.__anext__()


async def test_a_version_1_probe_gets_a_version_1_echo_as_before(
        client: Client, token: str) -> None:
    """An agent from before version 2 sends the old layout (written out here from the
    published format) and must get the old echo back: same length, version 1, the server's
    time and count in, the rest of the probe untouched, sent unmarked."""
    key, port = await probe_session(client, token)
    async with marked_socket(port) as udp:
        for seq, size in enumerate((44, 48, 200)):
            tail = bytes([0xB8, 0xFF, 0xFF, 0x01]) + bytes(size - 48) if size >= 48 else b""
            old = V1.pack(b"WR", 1, PROBE, key, seq, 123456789, 0, 0) + tail
            answer = await udp.exchange(old, EF << 2)
            assert answer is not None
            data, came_back_with = answer
            assert len(data) == size and came_back_with == 0
            magic, version, kind, got_key, got_seq, sent, server_ns, count = V1.unpack_from(data)
            assert (magic, version, kind, got_key, got_seq, sent) == (
                b"WR", 1, ECHO, key, seq, 123456789)
            assert server_ns > 0 and count == seq + 1
            assert data[44:] == tail  # bytes after the version-1 header are padding: as sent
    assert client.server.app[ECHO_SERVICE].packets["echoed"] == 3


async def test_an_old_agents_stream_of_version_1_probes_is_all_answered(
        client: Client, token: str) -> None:
    """The media check's stream at 44 bytes sends version 1 (the header of version 2 does
    not fit): every probe comes back, with no DS field to report."""
    key, port = await probe_session(client, token)
    sent = await media.stream(("127.0.0.1", port), key, 20, 200.0, 44, 1.0, tos=EF << 2)
    assert len({e.seq for e in sent.echoes}) == 20
    assert all(e.server_tos is None for e in sent.echoes)


async def test_on_loopback_every_class_arrives_as_sent_and_is_served_as_a_gauge(
        client: Client, token: str) -> None:
    link = ServerLink(str(client.server.make_url("/")).rstrip("/"), token)
    cfg = probe.Config(interval_seconds=0.6, packet_rate=50, probe_timeout_seconds=1.0,
                       timeout_seconds=30)
    result = await probe.run(cfg, Context(server=link))
    assert result.packets_received == result.packets_sent == 30
    assert [(c.service_class, c.sent, c.received, c.packets) for c in result.dscp] == [
        ("ef", EF, EF, 10), ("af41", AF41, AF41, 10), ("default", 0, 0, 10)]
    report = {"schema_version": 1, "id": "4d1e7a5e-0000-4000-8000-000000000001",
              "ward": WARD, "host": HOST, "agent_version": "test",
              "generated_at": time.time(),
              "outcomes": [{"check": "probe", "started_at": time.time() - 1,
                            "duration_seconds": 1.0, "ok": True,
                            "result": result.model_dump(mode="json")}]}
    resp = await client.post("/api/v1/reports", json=report, headers=auth(token))
    assert resp.status in (200, 201), await resp.text()
    text = await (await client.get("/metrics")).text()
    got = {(s.name, s.labels["class"]): s.value
           for f in text_string_to_metric_families(text) for s in f.samples
           if s.name.startswith("wardready_probe_dscp") and s.labels.get("host") == HOST}
    assert got == {("wardready_probe_dscp_preserved", "ef"): 1,
                   ("wardready_probe_dscp_preserved", "af41"): 1,
                   ("wardready_probe_dscp_preserved", "default"): 1,
                   ("wardready_probe_dscp_received", "ef"): EF,
                   ("wardready_probe_dscp_received", "af41"): AF41,
                   ("wardready_probe_dscp_received", "default"): 0}


# -- emulated ward links: a router that keeps or rewrites the marking --------------------------

ECHO_PORT = 8471
RATE, PROBES = 50.0, 60
"""60 probes, 20 per class."""


@pytest.fixture
def netlab_ready() -> None:
    reason = netlab.require_netlab()
    if reason:
        pytest.skip(f"emulated links: {reason}")


def nft(link: WardLink, rule: str) -> None:
    out = link.run(link.router_ns, ["nft", rule], timeout=10)
    assert out.returncode == 0, out.stderr


def probe_through(link: WardLink, tmp_path: Path, rewrite: str | None) -> tuple[
        probe.Result, dict[str, tuple[int, int]]]:
    """One probe interval from the ward to the city's server; `rewrite`, an nftables
    statement the router applies to the probes. Counters on the router count each class as
    it arrives, and the probes and echoes as they leave, by DSCP."""
    token = netlab.start_city_server(link, tmp_path, echo_port=ECHO_PORT,
                                     echo={"max_packet_rate": 2 * RATE})
    up = f"udp dport {ECHO_PORT}"
    for name, dscp in (("ef", "ef"), ("af41", "af41"), ("default", "cs0")):
        # Inserted at the head: the marking as the ward sent it, before any rewrite.
        nft(link, f'insert rule inet {NFT_TABLE} forward {up} ip dscp {dscp} counter '
                  f'comment "in-{name}"')
    if rewrite is not None:
        nft(link, f'add rule inet {NFT_TABLE} forward {up} {rewrite} counter '
                  f'comment "rewrite"')
    for way, match in (("up", up), ("down", f"udp sport {ECHO_PORT}")):
        for name, dscp in (("ef", "ef"), ("af41", "af41"), ("af11", "af11"), ("cs0", "cs0")):
            nft(link, f'add rule inet {NFT_TABLE} forward {match} ip dscp {dscp} counter '
                      f'comment "{way}-out-{name}"')
    config = probe.Config(interval_seconds=PROBES / RATE, packet_rate=RATE,
                          probe_timeout_seconds=1.0, timeout_seconds=30)
    [result] = netlab.probe_intervals(link, config, 1, token)
    return result, link.counters()


def by_class(result: probe.Result) -> dict[str, tuple[int, int]]:
    """class -> (received DSCP, packets), each class having arrived with one value."""
    got: dict[str, tuple[int, int]] = {}
    for c in result.dscp:
        assert c.service_class not in got, f"{c.service_class} arrived with several values"
        got[c.service_class] = (c.received, c.packets)
    return got


def dscp_gauges(result: probe.Result) -> dict[tuple[str, str], float]:
    return {(s.spec.name, s.labels[0]): s.value for s in probe.samples(result)
            if s.spec.name.startswith("wardready_probe_dscp")}


def test_a_clean_path_keeps_ef_and_af41(netlab_ready: None, tmp_path: Path) -> None:
    with WardLink() as link:
        result, counted = probe_through(link, tmp_path, rewrite=None)
    per_class = PROBES // 3
    assert result.packets_sent == PROBES and result.packets_lost == 0
    # The router saw each class marked as the agent meant it, and let it through so.
    for name in ("ef", "af41", "default"):
        assert counted[f"in-{name}"][0] == per_class
    assert counted["up-out-ef"][0] == counted["up-out-af41"][0] == per_class
    assert by_class(result) == {"ef": (EF, per_class), "af41": (AF41, per_class),
                                "default": (0, per_class)}
    # The echoes came back marked as each probe asked.
    assert counted["down-out-ef"][0] == counted["down-out-af41"][0] == per_class
    assert dscp_gauges(result) == {
        ("wardready_probe_dscp_preserved", "ef"): 1, ("wardready_probe_dscp_received", "ef"): EF,
        ("wardready_probe_dscp_preserved", "af41"): 1,
        ("wardready_probe_dscp_received", "af41"): AF41,
        ("wardready_probe_dscp_preserved", "default"): 1,
        ("wardready_probe_dscp_received", "default"): 0}


@pytest.mark.parametrize(("rewrite", "expected"), [
    # A router that strips every marking (cs0 = DSCP 0, RFC 2474).
    ("ip dscp set cs0", {"ef": 0, "af41": 0, "default": 0}),
    # One that demotes EF only, to AF11 (DSCP 10, RFC 2597).
    ("ip dscp ef ip dscp set af11", {"ef": AF11, "af41": AF41, "default": 0}),
], ids=["strip-all", "demote-ef"])
def test_a_router_that_rewrites_the_marking_is_seen(
        netlab_ready: None, tmp_path: Path, rewrite: str, expected: dict[str, int]) -> None:
    with WardLink() as link:
        result, counted = probe_through(link, tmp_path, rewrite=rewrite)
    per_class = PROBES // 3
    assert result.packets_sent == PROBES and result.packets_lost == 0
    # The rule matched what it should: every probe, or the EF ones.
    assert counted["rewrite"][0] == (PROBES if "ip dscp ef" not in rewrite else per_class)
    for name in ("ef", "af41", "default"):
        assert counted[f"in-{name}"][0] == per_class  # marked as sent before the rule
    # What left the router toward the city, by DSCP: what the rule set, class by class.
    names = {0: "cs0", AF11: "af11", AF41: "af41", EF: "ef"}
    for value, name in names.items():
        classes = sum(1 for v in expected.values() if v == value)
        assert counted[f"up-out-{name}"][0] == classes * per_class, name
    assert by_class(result) == {name: (value, per_class) for name, value in expected.items()}
    gauges = dscp_gauges(result)
    for name, value in expected.items():
        sent = {"ef": EF, "af41": AF41, "default": 0}[name]
        assert gauges[("wardready_probe_dscp_received", name)] == value
        assert gauges[("wardready_probe_dscp_preserved", name)] == (1 if value == sent else 0)
