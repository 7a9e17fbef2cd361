"""The platforms check against real servers on loopback: a local HTTPS server with a chain from
a local CA (trustme), a closed port, a silent listener, and a resolver-less network namespace."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import ValidationError

from tests.conftest import REPO, promtool_check_metrics, require_binary
from wardready.checks import platforms
from wardready.checks.base import Context, Target
from wardready.checks.platforms import Config, PlatformProbe
from wardready.core.metrics import families

LEAF_DAYS = 30


@dataclass
class Pki:
    ca_file: Path
    """The local root CA, to pass as ca_file."""
    other_ca_file: Path
    """A root CA that signed nothing of the server's."""
    leaf_not_after: float
    server_tls: ssl.SSLContext
    chain_server_tls: ssl.SSLContext
    """Serves a leaf that outlives its intermediate: the chain expires before the leaf."""
    intermediate_not_after: float


def _not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def _server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    return tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(root / "other-ca.pem"))
    # Whole seconds: certificates carry no fractions, so the expected expiry is exact.
    not_after = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=LEAF_DAYS)
    leaf = ca.issue_cert("localhost", not_after=not_after)
    intermediate = ca.create_child_ca()
    outliving = intermediate.issue_cert(
        "localhost", not_after=dt.datetime(3001, 1, 1, tzinfo=dt.UTC))
    return Pki(root / "ca.pem", root / "other-ca.pem", not_after.timestamp(),
               _server_context(leaf), _server_context(outliving),
               _not_after(intermediate.cert_pem.bytes()))


@dataclass
class Servers:
    https: str
    """https://localhost:PORT with the 30-day leaf from the local CA."""
    https_chain: str
    """https://localhost:PORT serving leaf + intermediate; the intermediate expires first."""
    http: str
    requests: list[tuple[str, str, str]]
    """(method, path with query, Host header) of every request the servers answered."""
    arrived: collections.defaultdict[str, asyncio.Event]
    """Set once a request for that path arrived; `/after<path>` is answered only then."""


@pytest.fixture
async def servers(pki: Pki) -> AsyncIterator[Servers]:
    requests: list[tuple[str, str, str]] = []
    arrived: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    async def handle(request: web.Request) -> web.Response:
        arrived[request.path].set()
        if request.path.startswith("/after/"):
            await arrived[request.path.removeprefix("/after")].wait()
        requests.append((request.method, request.path_qs, request.headers.get("Host", "")))
        if request.path == "/fail":
            return web.Response(status=500, text="broken")
        if request.path == "/moved":
            raise web.HTTPFound("/")
        return web.Response(text="ok " * 1000)  # a body we will not read

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    urls = []
    try:
        for tls in (pki.server_tls, pki.chain_server_tls, None):
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            urls.append(f"{'https' if tls else 'http'}://localhost:{port}")
        yield Servers(urls[0], urls[1], urls[2], requests, arrived)
    finally:
        await runner.cleanup()


@pytest.fixture
def closed_port() -> Iterator[str]:
    """http://127.0.0.1:PORT where the port is bound, so nobody takes it, but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel accepts but nobody ever reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def config(*targets: tuple[str, str], **settings: object) -> Config:
    return Config.model_validate(
        {"targets": [{"id": i, "url": u} for i, u in targets], **settings})


async def probe_all(cfg: Config, context: Context | None = None) -> dict[str, PlatformProbe]:
    result = await platforms.run(cfg, context or Context())
    return {p.id: p for p in result.platforms}


async def test_https_platform_reports_every_phase_status_and_certificate(
        pki: Pki, servers: Servers) -> None:
    started = time.time()
    probes = await probe_all(config(("dms", f"{servers.https}/login?next=%2F"),
                                    ca_file=str(pki.ca_file)))
    p = probes["dms"]
    assert p.up and p.http_status_code == 200
    assert p.failed_phase is None and p.error is None
    assert p.address == "127.0.0.1" and p.ip_protocol == 4
    phases = [p.dns_seconds, p.connect_seconds, p.tls_seconds, p.first_byte_seconds]
    assert all(s is not None and 0 < s < 2 for s in phases), phases
    assert sum(s or 0 for s in phases) <= p.duration_seconds < time.time() - started + 0.01
    assert p.tls_version in ("TLSv1.2", "TLSv1.3")
    assert p.certificate_expiry_timestamp_seconds == pki.leaf_not_after
    assert p.certificate_days_left is not None
    assert abs(p.certificate_days_left - LEAF_DAYS) < 0.01
    port = servers.https.rsplit(":", 1)[1]
    assert servers.requests == [("GET", "/login?next=%2F", f"localhost:{port}")]


async def test_certificate_expiry_is_the_earliest_in_the_chain_sent(
        pki: Pki, servers: Servers) -> None:
    probes = await probe_all(config(("vc", servers.https_chain), ca_file=str(pki.ca_file)))
    p = probes["vc"]
    assert p.up, p.error
    assert p.certificate_expiry_timestamp_seconds == pki.intermediate_not_after
    assert p.certificate_expiry_timestamp_seconds < dt.datetime(3001, 1, 1,
                                                                tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("trust", ["other-ca", "system-only"])
async def test_a_certificate_from_an_untrusted_ca_fails_in_tls(
        pki: Pki, servers: Servers, trust: str) -> None:
    settings = {"ca_file": str(pki.other_ca_file)} if trust == "other-ca" else {}
    p = (await probe_all(config(("dms", servers.https), **settings)))["dms"]
    assert not p.up and p.failed_phase == "tls"
    assert p.error is not None and "certificate verify failed" in p.error
    assert p.connect_seconds is not None and p.tls_seconds is None
    assert p.http_status_code is None and servers.requests == []


async def test_a_closed_port_fails_in_connect(closed_port: str) -> None:
    p = (await probe_all(config(("dms", closed_port))))["dms"]
    assert not p.up and p.failed_phase == "connect" and p.error == "Connection refused"
    assert p.dns_seconds is not None and p.connect_seconds is None
    assert p.address == "127.0.0.1"


@pytest.mark.parametrize(("scheme", "during"), [("http", "http"), ("https", "tls")])
async def test_a_server_that_never_answers_times_out_within_the_deadline(
        silent_port: int, scheme: str, during: str) -> None:
    p = (await probe_all(config(("dms", f"{scheme}://127.0.0.1:{silent_port}/"),
                                target_timeout_seconds=0.5)))["dms"]
    assert not p.up and p.failed_phase == "timeout"
    assert p.error == f"no answer within 0.5 s (during {during})"
    # The code controls that it gives up at its deadline (the phase and message above say
    # it did) and never before; how much later a loaded machine lets it run is the machine's.
    # The upper bound is an order of magnitude, not a timing: a deadline ignored, read in the
    # wrong unit or replaced by the default (10 s) would break it.
    assert 0.5 <= p.duration_seconds < 10 * 0.5
    assert p.connect_seconds is not None and p.first_byte_seconds is None


async def test_a_server_error_is_down_with_its_status(pki: Pki, servers: Servers) -> None:
    p = (await probe_all(config(("portal-1022", f"{servers.https}/fail"),
                                ca_file=str(pki.ca_file))))["portal-1022"]
    assert not p.up and p.http_status_code == 500
    assert p.failed_phase == "http" and p.error == "HTTP status 500"
    assert p.first_byte_seconds is not None


async def test_a_redirect_is_up_and_not_followed(servers: Servers) -> None:
    p = (await probe_all(config(("procedures", f"{servers.http}/moved"))))["procedures"]
    assert p.up and p.http_status_code == 302
    assert [r[1] for r in servers.requests] == ["/moved"]


async def test_a_plain_http_platform_has_no_tls_phase(servers: Servers) -> None:
    p = (await probe_all(config(("procedures", servers.http), method="HEAD")))["procedures"]
    assert p.up and p.http_status_code == 200
    assert p.tls_seconds is None and p.tls_version is None
    assert p.certificate_expiry_timestamp_seconds is None and p.certificate_days_left is None
    assert p.dns_seconds and p.connect_seconds and p.first_byte_seconds
    assert servers.requests[0][:2] == ("HEAD", "/")


async def test_failing_platforms_do_not_spoil_the_others(
        pki: Pki, servers: Servers, closed_port: str, silent_port: int) -> None:
    """The platforms are probed concurrently, not one after another: dms, third in the list,
    is answered only once plain's request, fifth, has arrived, while silent, first, never
    answers (an event, not a stopwatch: probed in turn, dms would time out)."""
    cfg = config(("silent", f"http://127.0.0.1:{silent_port}/"), ("closed", closed_port),
                 ("dms", f"{servers.https}/after/plain"), ("broken", f"{servers.https}/fail"),
                 ("plain", f"{servers.http}/plain"), ("bad-ca", servers.https_chain.replace(
                     "localhost", "127.0.0.1")),  # the certificate names localhost only
                 ca_file=str(pki.ca_file), target_timeout_seconds=1.0)
    result = await platforms.run(cfg, Context())
    assert [p.id for p in result.platforms] == ["silent", "closed", "dms", "broken", "plain",
                                                "bad-ca"]
    outcome = {p.id: (p.up, p.failed_phase) for p in result.platforms}
    assert outcome == {"silent": (False, "timeout"), "closed": (False, "connect"),
                       "dms": (True, None), "broken": (False, "http"), "plain": (True, None),
                       "bad-ca": (False, "tls")}
    assert "IP address mismatch" in (result.platforms[-1].error or "")
    assert sorted(r[1] for r in servers.requests) == ["/after/plain", "/fail", "/plain"]


async def test_the_inventory_platforms_are_probed_unless_targets_replace_them(
        servers: Servers, closed_port: str) -> None:
    context = Context(platforms=(Target("procedures", servers.http),
                                 Target("dms", closed_port)))
    probes = await probe_all(Config(), context)
    assert {i: p.up for i, p in probes.items()} == {"procedures": True, "dms": False}
    probes = await probe_all(config(("other", servers.http)), context)
    assert list(probes) == ["other"]
    assert await probe_all(Config(), Context()) == {}


@pytest.mark.parametrize(("settings", "message"), [
    ({"targets": [{"id": "a", "url": "ftp://x/"}]}, "http:// or https://"),
    ({"targets": [{"id": "a", "url": "https:///x"}]}, "has no host"),
    ({"targets": [{"id": "a", "url": "https://x:99999/"}]}, "out of range"),
    ({"targets": [{"id": "A b", "url": "https://x/"}]}, "should match pattern"),
    ({"targets": [{"id": "a", "url": "https://x/"}, {"id": "a", "url": "https://y/"}]},
     "duplicate target ids: a"),
    ({"target_timeout_seconds": 60.0}, "less than timeout_seconds"),
    ({"target_timeout_seconds": 0}, "greater than 0"),
])
def test_config_rejects(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Config.model_validate(settings)


def test_config_from_json_as_python_m_checks_passes_it() -> None:
    cfg = Config.model_validate_json('{"targets": [{"id": "dms", "url": "https://d.example/"}],'
                                     ' "ca_file": "/etc/city-ca.pem"}')
    assert cfg.ca_file == Path("/etc/city-ca.pem")
    assert cfg.targets is not None and cfg.targets[0].id == "dms"


class _Families(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def _exposition(metrics: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metrics))
    return generate_latest(registry)


async def test_promtool_accepts_the_exposition(
        pki: Pki, servers: Servers, closed_port: str) -> None:
    result = await platforms.run(config(("dms", servers.https), ("closed", closed_port),
                                        ca_file=str(pki.ca_file)), Context())
    samples = list(platforms.samples(result))
    agent_side = _exposition(families(platforms.METRICS, (((), s) for s in samples)))
    server_side = _exposition(families(platforms.METRICS,
                                       ((("sai-gon", "counter-01"), s) for s in samples),
                                       ("ward", "host")))
    assert promtool_check_metrics(agent_side) == ""
    assert promtool_check_metrics(server_side) == ""
    exposed = [(s.name, s.labels, s.value)
               for f in text_string_to_metric_families(agent_side.decode()) for s in f.samples]

    def value(name: str, platform: str) -> float:
        (v,) = [v for n, labels, v in exposed if n == name and labels["platform"] == platform]
        return v

    assert value("wardready_platform_up", "dms") == 1
    assert value("wardready_platform_up", "closed") == 0
    assert value("wardready_platform_http_status_code", "dms") == 200
    assert value("wardready_platform_certificate_expiry_timestamp_seconds",
                 "dms") == pki.leaf_not_after
    assert {labels["phase"] for n, labels, _ in exposed
            if n == "wardready_platform_phase_seconds"
            and labels["platform"] == "dms"} == {"dns", "connect", "tls", "first_byte"}
    failed = {labels["phase"]: v for n, labels, v in exposed
              if n == "wardready_platform_failed_phase" and labels["platform"] == "closed"}
    assert failed == {"dns": 0, "connect": 1, "tls": 0, "http": 0, "timeout": 0}


@pytest.fixture
def resolverless_netns() -> Iterator[str]:
    """A network namespace with only loopback, whose resolver points at 127.0.0.1:53 where
    nothing listens: name lookups fail without a single packet leaving the machine."""
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root (ip netns add)")
    ip = require_binary("ip")
    if Path("/var/run/nscd/socket").exists():
        pytest.skip("nscd runs: lookups in the namespace would be answered outside it")
    name = f"wr-{secrets.token_hex(4)}"
    etc = Path("/etc/netns")
    made_etc = not etc.exists()
    files = etc / name
    try:
        files.mkdir(parents=True)
        # `ip netns exec` bind-mounts these over /etc/*; nsswitch pins lookups to files+dns so
        # no other service (systemd-resolved, mdns) resolves from outside the namespace.
        (files / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (files / "nsswitch.conf").write_text("hosts: files dns\n")
        (files / "hosts").write_text("127.0.0.1 localhost\n")
        added = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True,
                               check=False)
        if added.returncode:
            pytest.skip(f"ip netns add failed (no CAP_SYS_ADMIN?): {added.stderr.strip()}")
        subprocess.run([ip, "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
        shutil.rmtree(files, ignore_errors=True)
        if made_etc:
            with contextlib.suppress(OSError):
                etc.rmdir()


PROBE_SCRIPT = """
import asyncio, sys
from wardready.checks import platforms
from wardready.checks.base import Context
config = platforms.Config.model_validate_json(sys.argv[1])
print(asyncio.run(platforms.run(config, Context())).model_dump_json())
"""

RESOLVER_SAYS = """
import socket, sys
try:
    socket.getaddrinfo(sys.argv[1], 443, type=socket.SOCK_STREAM)
except socket.gaierror as exc:
    print(exc.strerror)
"""


def test_a_name_that_does_not_resolve_fails_in_dns(resolverless_netns: str) -> None:
    cfg = config(("dms", "https://dms.hcmc.example/"), ("direct", "http://127.0.0.1:1/"),
                 target_timeout_seconds=5.0)
    out = subprocess.run(["ip", "netns", "exec", resolverless_netns, sys.executable, "-c",
                          PROBE_SCRIPT, cfg.model_dump_json()],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    result = platforms.Result.model_validate(json.loads(out.stdout))
    dms, direct = result.platforms
    assert not dms.up and dms.failed_phase == "dns", dms
    assert dms.dns_seconds is None and dms.address is None and dms.error
    # The resolver gave up, our deadline did not fire: the error is the resolver's own words,
    # as it gives them to a plain lookup of the same name in the same namespace.
    lookup = subprocess.run(["ip", "netns", "exec", resolverless_netns, sys.executable, "-c",
                             RESOLVER_SAYS, "dms.hcmc.example"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert lookup.returncode == 0, lookup.stderr
    assert dms.error == lookup.stdout.strip() != ""
    assert direct.failed_phase == "connect"  # an IP literal needs no resolver


async def test_cancelling_the_check_leaves_no_connection_open(silent_port: int) -> None:
    task = asyncio.create_task(platforms.run(
        config(("dms", f"http://127.0.0.1:{silent_port}/")), Context()))
    await asyncio.sleep(0.2)
    assert _connections_to(silent_port) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # closing a transport completes on the next loop turn
    assert _connections_to(silent_port) == 0


def _connections_to(port: int) -> int:
    return sum(1 for c in psutil.Process().net_connections("tcp")
               if c.raddr and c.raddr.port == port)
