"""The UDP media path: the echo service (`server.udp_echo`) in a real server app and the media
check (`checks.media`) against it, on loopback and through a veth pair into a network namespace
with nftables rules that block or drop UDP. The statistics are also tested on crafted echoes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from pydantic import ValidationError

from tests.conftest import REPO, promtool_check_metrics, require_binary
from wardready.checks import media
from wardready.checks.base import Context, ServerLink
from wardready.checks.media import Echo, analyse
from wardready.core import emodel
from wardready.core.echo import ECHO, HEADER, PROBE, Packet, decode, encode
from wardready.core.errors import MediaError
from wardready.core.inventory import load_inventory
from wardready.core.metrics import families
from wardready.server.app import create_app
from wardready.server.config import EchoConfig, ServerConfig
from wardready.server.store import Store
from wardready.server.udp_echo import ECHO_SERVICE, EchoService, setup
from wardready.server.udp_echo import METRICS as SERVER_METRICS

Client = TestClient  # type: ignore[type-arg]
SESSIONS = "/api/v1/udp-sessions"
CURRENT = "/api/v1/udp-sessions/current"
QUIET = 0.3
"""Seconds without a datagram after which a loopback echo is not coming (they take ~0.1 ms)."""


# -- fixtures and helpers ----------------------------------------------------------------------

@pytest.fixture
def tokens(config: ServerConfig) -> dict[str, str]:
    store = Store(config.database)
    issued = {"sai-gon": store.issue_token("sai-gon", "counter-01"),
              "nha-be": store.issue_token("nha-be", "counter-01"),
              "admin": store.issue_admin_token("ops")}
    store.close()
    return issued


MakeServer = Callable[..., Awaitable[tuple[Client, EchoService]]]


@pytest.fixture
def echo_server(aiohttp_client: Callable[..., Awaitable[Client]],
                config: ServerConfig) -> MakeServer:
    """A real server app with the echo service; returns a client for it and the service."""
    async def make(echo: EchoConfig | None = None, host: str = "127.0.0.1",
                   middlewares: Sequence[Any] = ()) -> tuple[Client, EchoService]:
        app = create_app(config, load_inventory(config.inventory))
        setup(app, echo or EchoConfig())
        app.middlewares.extend(middlewares)
        client = await aiohttp_client(app, server_kwargs={"host": host})
        return client, app[ECHO_SERVICE]
    return make


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def base_url(client: Client) -> str:
    return str(client.server.make_url("/")).rstrip("/")


async def open_session(client: Client, token: str, **wish: Any) -> dict[str, Any]:
    resp = await client.post(SESSIONS, json=wish, headers=auth(token))
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def current(client: Client, token: str) -> dict[str, Any]:
    resp = await client.get(CURRENT, headers=auth(token))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def probe(key: str | bytes, seq: int, size: int = 100) -> bytes:
    raw = bytes.fromhex(key) if isinstance(key, str) else key
    return encode(Packet(PROBE, raw, seq, time.monotonic_ns()), size)


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors += 1


@dataclass
class Udp:
    transport: asyncio.DatagramTransport
    inbox: Inbox

    async def exchange(self, packets: Sequence[bytes]) -> list[bytes]:
        """Send the packets, then collect what comes back until the line goes quiet."""
        for p in packets:
            self.transport.sendto(p)
        got: list[bytes] = []
        for _ in range(2 * len(packets) + 1):  # bounded even if something echoed twice
            try:
                got.append(await asyncio.wait_for(self.inbox.queue.get(), QUIET))
            except TimeoutError:
                break
        return got


@contextlib.asynccontextmanager
async def udp_to(port: int, host: str = "127.0.0.1") -> AsyncIterator[Udp]:
    """A UDP socket connected to the echo port (each one has its own source port)."""
    transport, inbox = await asyncio.get_running_loop().create_datagram_endpoint(
        Inbox, remote_addr=(host, port))
    try:
        yield Udp(transport, inbox)
    finally:
        transport.close()


def quick(**overrides: Any) -> media.Config:
    """A short check run: 100 probes in one second."""
    values: dict[str, Any] = {"packet_rate": 100.0, "packet_bytes": 200, "duration_seconds": 1.0,
                              "receive_grace_seconds": 1.0, "timeout_seconds": 30.0}
    return media.Config(**{**values, **overrides})


def within_binomial(observed: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    """Whether a loss ratio over n packets fits a loss probability p (false alarm ~ 1e-6)."""
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# -- the check on clean loopback ---------------------------------------------------------------

async def test_clean_loopback_has_no_loss_a_small_rtt_and_no_reordering(
        echo_server: MakeServer, tokens: dict[str, str]) -> None:
    client, service = await echo_server()
    started = time.monotonic()
    result = await media.run(quick(), Context(server=ServerLink(base_url(client),
                                                                 tokens["sai-gon"])))
    took = time.monotonic() - started
    assert result.udp_reachable
    assert result.udp_port == service.port
    assert (result.packets_sent, result.packets_received, result.server_received_packets) == (
        100, 100, 100)
    assert result.loss_ratio == result.forward_loss_ratio == result.return_loss_ratio == 0
    assert result.server_dropped_packets == 0
    assert result.rtt_min_seconds is not None and result.rtt_max_seconds is not None
    assert 0 < result.rtt_min_seconds <= result.rtt_median_seconds  # type: ignore[operator]
    assert result.rtt_median_seconds <= result.rtt_p95_seconds <= result.rtt_max_seconds  # type: ignore[operator]
    # Bounds on what the check times, not on the machine's speed. An echo paired with
    # another probe, or timed from the schedule rather than the send, is a packet interval
    # (10 ms here) or more off; on loopback an echo takes well under 1 ms, also with three
    # busy loops on two cores.
    assert result.rtt_p95_seconds < 1 / result.packet_rate  # type: ignore[operator]
    # Server and agent share this process's monotonic clock, so each echo's forward and
    # return transit lies between 0 and its RTT; RFC 3550's J, a running mean of the
    # differences between consecutive transits, cannot exceed the largest RTT.
    assert result.jitter_forward_seconds is not None
    assert 0 <= result.jitter_forward_seconds <= result.rtt_max_seconds
    assert result.jitter_return_seconds is not None
    assert 0 <= result.jitter_return_seconds <= result.rtt_max_seconds
    assert (result.reordered_packets, result.forward_reordered_packets,
            result.return_reordered_packets) == (0, 0, 0)
    assert result.duplicate_packets == 0
    assert result.socket_errors == 0
    assert result.send_rate_packets_per_second == pytest.approx(100, rel=0.1)
    # A clean loopback path is a toll-quality call: G.107's best for G.711 is R 93.2, MOS 4.41.
    assert result.r_factor is not None and 92 < result.r_factor <= 93.2
    assert result.predicted_mos is not None and 4.35 < result.predicted_mos <= 4.42
    assert took < 1.0 + 1.0  # every echo back: the grace period is not waited out
    seen = await current(client, tokens["sai-gon"])
    assert (seen["received"], seen["unique"], seen["reordered"], seen["duplicates"]) == (
        100, 100, 0, 0)
    assert service.packets["echoed"] == 100
    assert sum(service.packets.values()) == 100


async def test_the_check_needs_a_server_and_a_valid_token(
        echo_server: MakeServer, tokens: dict[str, str], config: ServerConfig) -> None:
    with pytest.raises(MediaError, match="agent's server"):
        await media.run(quick(), Context())
    client, service = await echo_server()
    store = Store(config.database)
    assert store.revoke_token(tokens["sai-gon"].removeprefix("wrt_").split(".")[0])
    store.close()
    with pytest.raises(MediaError, match="HTTP 401: invalid or revoked token"):
        await media.run(quick(), Context(server=ServerLink(base_url(client),
                                                            tokens["sai-gon"])))
    assert service.sessions_opened == 0


def test_check_config_is_validated() -> None:
    assert media.Config().packet_rate == 50
    assert media.Config.model_validate_json('{"packet_rate": 25}').packet_rate == 25.0
    with pytest.raises(ValidationError, match="timeout_seconds must be at least"):
        media.Config(duration_seconds=60, timeout_seconds=30)
    with pytest.raises(ValidationError, match="greater than or equal to 44"):
        media.Config(packet_bytes=20)
    with pytest.raises(ValidationError, match="at least one packet"):
        media.Config(packet_rate=0.5, duration_seconds=1)


# -- the session endpoints ---------------------------------------------------------------------

async def test_session_endpoints_need_an_agent_token(
        echo_server: MakeServer, tokens: dict[str, str], config: ServerConfig) -> None:
    client, service = await echo_server()
    for method, path in (("POST", SESSIONS), ("GET", CURRENT)):
        resp = await client.request(method, path)
        assert resp.status == 401
        assert (await resp.json())["error"] == "missing bearer token"
        for token in ("garbage", tokens["sai-gon"][:-4] + "AAAA"):
            assert (await client.request(method, path, headers=auth(token))).status == 401
        resp = await client.request(method, path, headers=auth(tokens["admin"]))
        assert resp.status == 403
    resp = await client.get(CURRENT, headers=auth(tokens["sai-gon"]))
    assert resp.status == 404
    assert (await resp.json())["error"] == "no UDP echo session for this agent"

    await open_session(client, tokens["sai-gon"])
    store = Store(config.database)
    assert store.revoke_token(tokens["sai-gon"].removeprefix("wrt_").split(".")[0])
    store.close()
    for method, path in (("POST", SESSIONS), ("GET", CURRENT)):
        resp = await client.request(method, path, headers=auth(tokens["sai-gon"]))
        assert resp.status == 401
        assert (await resp.json())["error"] == "invalid or revoked token"
    assert service.sessions_opened == 1


async def test_session_requests_are_validated(echo_server: MakeServer,
                                              tokens: dict[str, str]) -> None:
    client, _ = await echo_server()
    headers = auth(tokens["sai-gon"])
    for body, status, message in (
            ({"packets": 0}, 422, "packets: Input should be greater than or equal to 1"),
            ({"packet_rate": "fast"}, 422, "packet_rate: Input should be a valid number"),
            ({"packet_bytes": 10}, 422, "packet_bytes: Input should be greater than or equal"),
            ({"port": 7}, 422, "port: Extra inputs are not permitted"),
            ([1, 2], 422, "Input should be a valid dictionary"),
            ("{nope", 400, "body is not JSON")):
        data = body if isinstance(body, str) else json.dumps(body)
        resp = await client.post(SESSIONS, data=data, headers=headers)
        assert resp.status == status, body
        assert message in (await resp.json())["error"], body
    empty = await client.post(SESSIONS, headers=headers)  # no body: the caps
    assert empty.status == 201
    reply = await empty.json()
    defaults = EchoConfig()
    assert set(reply) == {"session", "port", "max_packets", "packet_rate", "max_packet_bytes",
                          "expires_in"}
    assert len(bytes.fromhex(reply["session"])) == 16
    assert (reply["max_packets"], reply["packet_rate"], reply["max_packet_bytes"],
            reply["expires_in"]) == (defaults.max_packets, defaults.max_packet_rate,
                                     defaults.max_packet_bytes, defaults.session_seconds)


async def test_a_session_is_bound_to_its_agent_and_its_first_source(
        echo_server: MakeServer, tokens: dict[str, str]) -> None:
    client, service = await echo_server()
    a = await open_session(client, tokens["sai-gon"], packets=10)
    b = await open_session(client, tokens["nha-be"], packets=10)
    assert a["session"] != b["session"]
    port = a["port"]
    async with udp_to(port) as agent_a, udp_to(port) as agent_b:
        assert len(await agent_a.exchange([probe(a["session"], 0)])) == 1  # latches A's socket
        assert await agent_b.exchange([probe(a["session"], 1)]) == []  # A's key from elsewhere
        assert await agent_b.exchange([probe(secrets.token_bytes(16), 0)]) == []  # forged key
        assert len(await agent_b.exchange([probe(b["session"], 0)])) == 1  # B's own key works
        assert len(await agent_a.exchange([probe(a["session"], 1)])) == 1  # A is unharmed
    assert service.packets["foreign_source"] == 1
    assert service.packets["unknown_session"] == 1
    seen_a, seen_b = await current(client, tokens["sai-gon"]), await current(client,
                                                                             tokens["nha-be"])
    assert (seen_a["session"], seen_a["received"]) == (a["session"], 2)
    assert seen_a["dropped"]["foreign_source"] == 1
    assert (seen_b["session"], seen_b["received"]) == (b["session"], 1)

    renewed = await open_session(client, tokens["sai-gon"])  # one session per agent
    async with udp_to(port) as agent_a:
        assert await agent_a.exchange([probe(a["session"], 2)]) == []  # the old key is dead
        assert len(await agent_a.exchange([probe(renewed["session"], 0)])) == 1
    assert service.packets["unknown_session"] == 2
    assert (await current(client, tokens["sai-gon"]))["session"] == renewed["session"]


async def test_caps_on_packets_size_and_rate_are_enforced_and_counted(
        echo_server: MakeServer, tokens: dict[str, str]) -> None:
    client, service = await echo_server(EchoConfig(max_packets=20, max_packet_rate=1000.0,
                                                   max_packet_bytes=300))
    token = tokens["sai-gon"]
    granted = await open_session(client, token, packets=50, packet_rate=5000.0,
                                 packet_bytes=9000)
    assert (granted["max_packets"], granted["packet_rate"], granted["max_packet_bytes"]) == (
        20, 1000.0, 300)
    async with udp_to(granted["port"]) as udp:
        echoes = await udp.exchange([probe(granted["session"], seq) for seq in range(30)])
    assert sorted(decode(e).seq for e in echoes if decode(e)) == list(range(20))
    assert (await current(client, token))["dropped"]["over_packets"] == 10

    sized = await open_session(client, token)
    async with udp_to(sized["port"]) as udp:
        assert await udp.exchange([probe(sized["session"], 0, size=301)]) == []
        assert [len(e) for e in await udp.exchange([probe(sized["session"], 1, 300)])] == [300]
    assert (await current(client, token))["dropped"]["oversize"] == 1

    slow = await open_session(client, token, packet_rate=10.0)  # a bucket of 10 probes
    async with udp_to(slow["port"]) as udp:
        echoes = await udp.exchange([probe(slow["session"], seq) for seq in range(20)])
    assert 10 <= len(echoes) <= 12  # the bucket, and what refills while they are sent
    assert (await current(client, token))["dropped"]["over_rate"] == 20 - len(echoes)
    assert service.packets["over_packets"] == 10
    assert service.packets["oversize"] == 1
    assert service.packets["over_rate"] == 20 - len(echoes)


async def test_an_expired_session_gets_no_echo(echo_server: MakeServer,
                                               tokens: dict[str, str]) -> None:
    client, service = await echo_server(EchoConfig(session_seconds=0.5))
    granted = await open_session(client, tokens["sai-gon"])
    assert granted["expires_in"] == 0.5
    async with udp_to(granted["port"]) as udp:
        assert len(await udp.exchange([probe(granted["session"], 0)])) == 1
        await asyncio.sleep(0.5)
        assert await udp.exchange([probe(granted["session"], 1)]) == []
    seen = await current(client, tokens["sai-gon"])
    assert (seen["expired"], seen["expires_in"], seen["received"]) == (True, 0, 1)
    assert seen["dropped"]["expired"] == 1
    assert service.packets["expired"] == 1


async def test_sessions_are_capped_over_all_agents(echo_server: MakeServer,
                                                   tokens: dict[str, str]) -> None:
    client, _ = await echo_server(EchoConfig(max_sessions=1))
    await open_session(client, tokens["sai-gon"])
    resp = await client.post(SESSIONS, headers=auth(tokens["nha-be"]))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "60"
    assert "too many UDP echo sessions" in (await resp.json())["error"]
    await open_session(client, tokens["sai-gon"])  # replacing one's own session is fine


async def test_echo_is_never_larger_than_the_probe_and_carries_the_server_fields(
        echo_server: MakeServer, tokens: dict[str, str]) -> None:
    client, service = await echo_server()
    granted = await open_session(client, tokens["sai-gon"])
    key = bytes.fromhex(granted["session"])
    sizes = [HEADER.size, 200, 1472]
    probes = [probe(key, seq, size) for seq, size in enumerate(sizes)]
    async with udp_to(granted["port"]) as udp:
        echoes = await udp.exchange(probes)
        assert [len(e) for e in echoes] == sizes
        decoded = [decode(e) for e in echoes]
        sent = [decode(p) for p in probes]
        for seq, (echo, original) in enumerate(zip(decoded, sent, strict=True)):
            assert echo is not None and original is not None
            assert (echo.kind, echo.key, echo.seq, echo.server_count) == (ECHO, key, seq, seq + 1)
            assert echo.client_sent_ns == original.client_sent_ns
        times = [e.server_received_ns for e in decoded if e is not None]
        assert 0 < times[0] <= times[1] <= times[2]

        as_echo = bytearray(probes[0])
        as_echo[3] = ECHO  # an echo sent back at us is never answered: no ping-pong
        other_version = bytearray(probes[0])
        other_version[2] = 9
        refused = [probes[0][:HEADER.size - 1], bytes(as_echo), bytes(other_version),
                   b"\x00" * 1000, probe(key, 5, 1473)]
        assert await udp.exchange(refused) == []
    assert service.packets["malformed"] == 4
    assert service.packets["oversize"] == 1
    assert service.sent_bytes == sum(sizes)
    assert service.received_bytes == sum(sizes) + sum(len(r) for r in refused)


# -- UDP that does not come back ---------------------------------------------------------------

def redirect_udp_port(port: int) -> Any:
    """A middleware that rewrites the session reply's port: the check goes where it is told."""
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await handler(request)
        if request.path == SESSIONS and resp.status == 201 and isinstance(resp, web.Response):
            assert resp.body is not None
            body = json.loads(bytes(resp.body))  # type: ignore[arg-type]
            return web.json_response({**body, "port": port}, status=201)
        return resp
    return middleware


async def test_a_udp_port_that_never_answers_is_unreachable_not_a_crash(
        echo_server: MakeServer, tokens: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    silent, sink = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    try:
        port = silent.get_extra_info("sockname")[1]
        client, service = await echo_server(middlewares=[redirect_udp_port(port)])
        started = time.monotonic()
        result = await media.run(quick(duration_seconds=0.5, receive_grace_seconds=0.5),
                                 Context(server=ServerLink(base_url(client),
                                                           tokens["sai-gon"])))
        assert time.monotonic() - started < 3
    finally:
        silent.close()
    assert not result.udp_reachable
    assert result.udp_port == port
    assert (result.packets_sent, result.packets_received) == (50, 0)
    assert sink.queue.qsize() == 50  # the probes went out, to where the reply said
    assert result.loss_ratio == 1.0
    assert (result.server_received_packets, result.forward_loss_ratio) == (0, 1.0)
    assert result.return_loss_ratio is None
    assert result.rtt_median_seconds is None and result.jitter_forward_seconds is None
    assert (result.socket_errors, result.socket_error) == (0, None)
    assert service.packets["echoed"] == 0


async def test_a_closed_udp_port_is_unreachable_and_the_icmp_error_counted(
        echo_server: MakeServer, tokens: dict[str, str]) -> None:
    loop = asyncio.get_running_loop()
    closed, _ = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
    port = closed.get_extra_info("sockname")[1]
    closed.close()
    client, _ = await echo_server(middlewares=[redirect_udp_port(port)])
    result = await media.run(quick(duration_seconds=0.2, receive_grace_seconds=0.2),
                             Context(server=ServerLink(base_url(client), tokens["sai-gon"])))
    assert not result.udp_reachable
    assert result.packets_sent == 20
    assert result.socket_errors >= 1  # loopback answers "port unreachable"
    assert result.socket_error == "ConnectionRefusedError: [Errno 111] Connection refused"


# -- TLS ---------------------------------------------------------------------------------------

async def test_the_session_request_verifies_tls_with_the_ca_file(
        aiohttp_server: Callable[..., Awaitable[TestServer]], config: ServerConfig,
        tokens: dict[str, str], tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other.pem"))
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    app = create_app(config, load_inventory(config.inventory))
    setup(app, EchoConfig())
    server = await aiohttp_server(app, ssl=server_ssl)
    url = str(server.make_url("/")).rstrip("/")
    assert url.startswith("https://")
    result = await media.run(quick(duration_seconds=0.2), Context(
        server=ServerLink(url, tokens["sai-gon"], tmp_path / "ca.pem")))
    assert result.udp_reachable and result.loss_ratio == 0
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await media.run(quick(duration_seconds=0.2), Context(
            server=ServerLink(url, tokens["sai-gon"], tmp_path / "other.pem")))


# -- through a network namespace with nftables -------------------------------------------------

@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str
    """The root namespace's end of the veth pair: the server listens here."""
    ns_ip: str
    ns_if: str
    """The namespace's end of the veth pair."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _free_subnet() -> tuple[str, str]:
    """Two addresses of a random 10.x.y.z/30 that this machine does not use yet."""
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True,
                          timeout=10).stdout + subprocess.run(
        ["ip", "-4", "route"], capture_output=True, text=True, check=True, timeout=10).stdout
    for _ in range(100):
        a, b = 200 + secrets.randbelow(50), secrets.randbelow(256)
        if f"10.{a}.{b}." not in used:
            return f"10.{a}.{b}.1", f"10.{a}.{b}.2"
    raise RuntimeError("no free 10.x.y.0/30 subnet found")


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A namespace `wr-<random>` linked to this one by a veth pair; removed even on failure."""
    require_binary("ip")
    require_binary("nft")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (run the tests as root, as CI does)")
    name = f"wr-{secrets.token_hex(4)}"
    host_if, ns_if = f"{name}-h", f"{name}-n"
    host_ip, ns_ip = _free_subnet()
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, host_ip, ns_ip, ns_if)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def nft_in(ns: Netns, ruleset: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=ruleset.encode(),
                   check=True, capture_output=True, timeout=10)


RUN_CHECK = """
import asyncio, sys
from wardready.checks import media
from wardready.checks.base import Context, ServerLink
config = media.Config.model_validate_json(sys.argv[1])
link = ServerLink(sys.argv[2], sys.stdin.read().strip())
print(asyncio.run(media.run(config, Context(server=link))).model_dump_json())
"""


async def check_in(ns: Netns, url: str, token: str, config: media.Config) -> media.Result:
    """Run the check in a process inside the namespace (the server stays in this one)."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.name, sys.executable, "-c", RUN_CHECK,
        config.model_dump_json(), url, cwd=REPO, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(token.encode()),
                                          config.timeout_seconds + 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return media.Result.model_validate_json(out)


@pytest.mark.parametrize("where", ["path", "agent"])
async def test_udp_blocked_by_a_firewall_is_unreachable_while_https_works(
        where: str, netns: Netns, echo_server: MakeServer, tokens: dict[str, str]) -> None:
    client, service = await echo_server(EchoConfig(listen_host=netns.host_ip),
                                        host=netns.host_ip)
    if where == "path":  # leaving the wire, as a firewall on the way drops it: silently
        nft_in(netns, f"""table netdev wr_media {{
            chain egress {{ type filter hook egress device "{netns.ns_if}" priority 0;
                            udp dport {service.port} drop; }}
        }}""")
    else:  # the agent's own firewall refuses the send
        nft_in(netns, f"""table inet wr_media {{
            chain output {{ type filter hook output priority 0; policy accept;
                            ip daddr {netns.host_ip} udp dport {service.port} drop; }}
        }}""")
    result = await check_in(netns, base_url(client), tokens["sai-gon"],
                            quick(duration_seconds=0.5, receive_grace_seconds=0.5))
    assert not result.udp_reachable
    assert (result.packets_sent, result.packets_received) == (50, 0)
    assert (result.server_received_packets, result.forward_loss_ratio) == (0, 1.0)
    if where == "path":
        assert (result.socket_errors, result.socket_error) == (0, None)
    else:
        assert result.socket_errors >= 1
        assert result.socket_error == "PermissionError: [Errno 1] Operation not permitted"
    assert service.sessions_opened == 1 and service.packets["echoed"] == 0


async def test_random_loss_on_each_path_is_measured_within_binomial_tolerance(
        netns: Netns, echo_server: MakeServer, tokens: dict[str, str]) -> None:
    client, service = await echo_server(
        EchoConfig(listen_host=netns.host_ip, max_packet_rate=1000.0, max_packets=5000),
        host=netns.host_ip)
    port = service.port
    # A lossy link: 10 % of the probes vanish on the way out, 10 % of the echoes on the way
    # back, at the namespace's end of the wire (silently, unlike a local firewall).
    nft_in(netns, f"""table netdev wr_media {{
        chain egress {{ type filter hook egress device "{netns.ns_if}" priority 0;
                        udp dport {port} numgen random mod 100 < 10 drop; }}
        chain ingress {{ type filter hook ingress device "{netns.ns_if}" priority 0;
                         udp sport {port} numgen random mod 100 < 10 drop; }}
    }}""")
    config = quick(packet_rate=200.0, duration_seconds=5.0, timeout_seconds=60.0)
    result = await check_in(netns, base_url(client), tokens["sai-gon"], config)
    sent = result.packets_sent
    assert sent == 1000 and result.udp_reachable
    assert result.forward_loss_ratio is not None and result.return_loss_ratio is not None
    assert result.server_received_packets is not None
    assert within_binomial(result.forward_loss_ratio, 0.10, sent), result
    assert within_binomial(result.return_loss_ratio, 0.10, result.server_received_packets), result
    assert within_binomial(result.loss_ratio, 1 - 0.9 * 0.9, sent), result
    assert result.server_received_packets == service.by_agent[("sai-gon", "counter-01")].unique
    assert result.reordered_packets == result.duplicate_packets == 0
    assert result.socket_errors == 0
    # 10 % loss each way costs a G.711 call with concealment about 4 R per percent: a
    # noticeably worse call than a clean path (R 93), judged on the worse direction's loss.
    worse = max(result.forward_loss_ratio, result.return_loss_ratio)
    assert result.r_factor is not None and result.predicted_mos is not None
    assert result.r_factor == pytest.approx(emodel.r_factor(
        result.rtt_median_seconds * 1e3 / 2 + 2e3 * max(result.jitter_forward_seconds or 0,
                                                         result.jitter_return_seconds or 0)
        + emodel.G711_PLC.delay_ms, worse * 100), abs=1e-9)
    assert 55 < result.r_factor < 75 and result.predicted_mos < 3.9


# -- the statistics on crafted echoes ----------------------------------------------------------

MS = 1_000_000


def in_order(sent_ns: Sequence[int], seqs: Sequence[int], forward: int = MS,
             back: int = MS) -> list[Echo]:
    """Echoes of `seqs` received by the server in that order and returned in that order."""
    return [Echo(seq, sent_ns[seq] + forward, count, sent_ns[seq] + forward + back)
            for count, seq in enumerate(seqs, start=1)]


def test_in_order_echoes_show_no_loss_reordering_or_jitter() -> None:
    sent = [i * 20 * MS for i in range(10)]
    stats = analyse(sent, in_order(sent, range(10)), server_unique=10)
    assert (stats.loss_ratio, stats.forward_loss_ratio, stats.return_loss_ratio) == (0, 0, 0)
    assert (stats.reordered_packets, stats.duplicate_packets) == (0, 0)
    assert stats.jitter_forward_seconds == stats.jitter_return_seconds == 0
    assert stats.rtt_min_seconds == stats.rtt_max_seconds == 0.002


def test_reordering_is_told_apart_by_path() -> None:
    sent = [i * 20 * MS for i in range(4)]
    # The server got 1 before 0 and echoed them in the order it got them.
    forward = in_order(sent, [1, 0, 2, 3])
    stats = analyse(sent, forward)
    assert (stats.reordered_packets, stats.forward_reordered_packets,
            stats.return_reordered_packets) == (1, 1, 0)
    # The server got them in order; the echoes of 1 and 2 swapped on the way back.
    echoes = in_order(sent, [0, 1, 2, 3])
    stats = analyse(sent, [echoes[0], echoes[2], echoes[1], echoes[3]])
    assert (stats.reordered_packets, stats.forward_reordered_packets,
            stats.return_reordered_packets) == (1, 0, 1)
    assert media.late_arrivals([0, 3, 1, 2, 4]) == 2  # RFC 4737: each arrives after 3


def test_duplicates_are_told_apart_by_path() -> None:
    sent = [i * 20 * MS for i in range(3)]
    # Probe 1 reached the server twice: two echoes with different server counts.
    stats = analyse(sent, in_order(sent, [0, 1, 1, 2]), server_unique=3)
    assert (stats.duplicate_packets, stats.forward_duplicate_packets,
            stats.return_duplicate_packets) == (1, 1, 0)
    assert stats.packets_received == 3 and stats.loss_ratio == 0
    # The echo of probe 1 was copied on the way back: same server count twice.
    echoes = in_order(sent, [0, 1, 2])
    stats = analyse(sent, [echoes[0], echoes[1], echoes[1], echoes[2]], server_unique=3)
    assert (stats.duplicate_packets, stats.forward_duplicate_packets,
            stats.return_duplicate_packets) == (1, 0, 1)
    assert stats.reordered_packets == 0


def test_loss_is_split_by_the_servers_count_and_unknown_without_it() -> None:
    sent = [i * 20 * MS for i in range(10)]
    echoes = in_order(sent, [0, 1, 2, 4, 6, 8])  # server got 8 of 10, 6 came back
    stats = analyse(sent, echoes, server_unique=8)
    assert stats.loss_ratio == pytest.approx(0.4)
    assert stats.forward_loss_ratio == pytest.approx(0.2)
    assert stats.return_loss_ratio == pytest.approx(0.25)
    unknown = analyse(sent, echoes, server_unique=None)
    assert unknown.loss_ratio == pytest.approx(0.4)
    assert unknown.forward_loss_ratio is None and unknown.return_loss_ratio is None
    stray = Echo(99, 0, 7, 0)  # not a probe of this run
    assert analyse(sent, [*echoes, stray], 8) == stats
    nothing = analyse(sent, [], server_unique=0)
    assert (nothing.loss_ratio, nothing.forward_loss_ratio, nothing.return_loss_ratio) == (
        1.0, 1.0, None)
    assert nothing.rtt_min_seconds is None and nothing.jitter_return_seconds is None


def test_jitter_follows_rfc_3550_and_ignores_clock_offset() -> None:
    sent = [i * 20 * MS for i in range(50)]
    offset = 3_600 * 10**9  # the server's clock an hour off: transit times all shift
    steady = [Echo(s, sent[s] + offset + 5 * MS, s + 1, sent[s] + 10 * MS) for s in range(50)]
    stats = analyse(sent, steady)
    assert stats.jitter_forward_seconds == 0 and stats.jitter_return_seconds == 0
    # Forward transit alternating 1 ms, 3 ms: |D| is 2 ms at every step, and
    # J_n = 2 ms * (1 - (15/16)^n) after n steps of J += (|D| - J) / 16.
    wobbly = [Echo(s, sent[s] + offset + (1 + 2 * (s % 2)) * MS, s + 1,
                   sent[s] + offset + 10 * MS + offset) for s in range(50)]
    expected = 0.002 * (1 - (15 / 16) ** 49)
    assert analyse(sent, wobbly).jitter_forward_seconds == pytest.approx(expected)
    assert media.jitter([5]) is None


def test_rtt_quantiles_are_observed_values() -> None:
    sent = [i * 20 * MS for i in range(20)]
    echoes = [Echo(s, sent[s], s + 1, sent[s] + (s + 1) * MS) for s in range(20)]
    stats = analyse(sent, echoes[::-1])
    assert (stats.rtt_min_seconds, stats.rtt_median_seconds, stats.rtt_p95_seconds,
            stats.rtt_max_seconds) == pytest.approx((0.001, 0.0105, 0.019, 0.020))


# -- metrics and wiring ------------------------------------------------------------------------

class _Families:
    def __init__(self, built: list[Metric]) -> None:
        self.built = built

    def collect(self) -> list[Metric]:
        return self.built


def exposition(built: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(built))  # type: ignore[arg-type]
    return generate_latest(registry)


def test_metrics_pass_promtool_as_the_server_would_expose_them() -> None:
    sent = [i * 20 * MS for i in range(10)]
    stats = analyse(sent, in_order(sent, [0, 2, 1, 3, 3]), server_unique=5)
    common = {"udp_port": 8471, "packet_rate": 50.0, "packet_bytes": 1200,
              "server_dropped_packets": 0, "send_rate_packets_per_second": 50.0,
              "send_late_max_seconds": 0.001, "socket_errors": 0, "socket_error": None}
    good = media.Result(udp_reachable=True, **common, **vars(stats))
    blocked = media.Result(udp_reachable=False, **common, **vars(analyse(sent, [], None)))
    samples = [(("sai-gon", "counter-01"), s) for s in media.samples(good)]
    samples += [(("nha-be", "counter-01"), s) for s in media.samples(blocked)]
    body = exposition(families(media.METRICS, samples, ("ward", "host")))
    assert promtool_check_metrics(body) == ""
    text = body.decode()
    assert 'wardready_media_udp_reachable{host="counter-01",ward="nha-be"} 0.0' in text
    assert 'wardready_media_rtt_seconds{host="counter-01",statistic="p95",ward="sai-gon"}' in text
    assert 'wardready_media_reordered_packets{direction="forward",host="counter-01",' in text
    assert 'wardready_media_rtt_seconds{host="counter-01",statistic="min",ward="nha-be"}' \
        not in text  # unknown figures are left out, not reported as 0

    service = EchoService(EchoConfig())
    service.packets["echoed"] = 3
    body = exposition(families(SERVER_METRICS, [((), s) for s in service.samples()]))
    assert promtool_check_metrics(body) == ""
    assert 'wardready_server_udp_echo_packets_total{outcome="echoed"} 3.0' in body.decode()
