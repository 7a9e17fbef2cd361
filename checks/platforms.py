"""Can the ward reach the city platforms? One HTTP(S) probe per platform, phase by phase.

Like blackbox_exporter's http probe: DNS resolution, TCP connect, TLS handshake (https only),
time to the first byte of the response, total time, the certificate's expiry and the status
code; when a probe fails, the phase that failed. Asyncio and the ssl module only.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wardready.checks.base import CheckConfig, CheckResult, CheckSpec, Context, ResultModel
from wardready.core.inventory import Slug
from wardready.core.metrics import MetricSpec, Sample

MAX_TARGETS = 32
"""Bounds the `platform` label's cardinality and the report's size."""
MAX_ERROR_CHARS = 200
MAX_HEADER_LINES = 200
"""Headers skipped after an informational (1xx) response before giving up on the peer."""
USER_AGENT = "wardready-platforms/1"

Phase = Literal["dns", "connect", "tls", "http", "timeout"]
PHASES: tuple[Phase, ...] = ("dns", "connect", "tls", "http", "timeout")
TIMED_PHASES = ("dns", "connect", "tls", "first_byte")
"""The `phase` label values of wardready_platform_phase_seconds."""

_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})(?:[ \r\n]|$)")


class PlatformTarget(BaseModel):
    """A platform to probe: its id (the `platform` label) and its http(s) URL."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Slug
    url: str = Field(max_length=1024)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("has no host")
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number in range
        return url


class Config(CheckConfig):
    """Which platforms to probe and how long each may take."""

    targets: list[PlatformTarget] | None = Field(default=None, max_length=MAX_TARGETS)
    """Replaces the inventory's platforms (`context.platforms`) when given."""
    target_timeout_seconds: float = Field(default=10.0, gt=0)
    """Deadline for one platform, all phases together; platforms are probed concurrently."""
    ca_file: Annotated[Path, Field(strict=False)] | None = None
    """Extra CA bundle trusted on top of the system's CAs (e.g. a city CA)."""
    method: Literal["GET", "HEAD"] = "GET"
    """GET by default: some servers answer HEAD with 405 although the page works."""

    @field_validator("targets")
    @classmethod
    def _unique_ids(cls, targets: list[PlatformTarget] | None) -> list[PlatformTarget] | None:
        ids = [t.id for t in targets or ()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate target ids: {', '.join(duplicates)}")
        return targets

    @model_validator(mode="after")
    def _deadline_fits(self) -> Config:
        # Otherwise the agent cancels the whole check and every platform's result is lost.
        if self.target_timeout_seconds >= self.timeout_seconds:
            raise ValueError("target_timeout_seconds must be less than timeout_seconds")
        return self


class PlatformProbe(ResultModel):
    """What one probe of one platform found; phase times are None for phases not reached."""

    id: str
    url: str
    up: bool
    """The platform answered with a 2xx or 3xx status (redirects are not followed)."""
    address: str | None = None
    """The IP address connected to (or last tried)."""
    ip_protocol: Literal[4, 6] | None = None
    dns_seconds: float | None = None
    connect_seconds: float | None = None
    """Includes failed attempts at earlier addresses of the name."""
    tls_seconds: float | None = None
    first_byte_seconds: float | None = None
    """From sending the request to the first byte of the response."""
    duration_seconds: float
    tls_version: str | None = None
    certificate_expiry_timestamp_seconds: float | None = None
    """The earliest notAfter among the certificates the peer sent (at least the leaf's)."""
    certificate_days_left: float | None = None
    http_status_code: int | None = None
    failed_phase: Phase | None = None
    error: str | None = None


class Result(CheckResult):
    """One probe per platform, in the order of the targets."""

    platforms: list[PlatformProbe] = Field(max_length=MAX_TARGETS)


async def run(config: Config, context: Context) -> Result:
    """Probe every platform concurrently; one failing platform never affects the others."""
    targets = _targets(config, context)
    # One context for all: loading the CA bundles once, and failing early on a bad ca_file.
    https = any(urlsplit(t.url).scheme == "https" for t in targets)
    tls = _tls_context(config.ca_file) if https else None
    probes = await asyncio.gather(*(probe(t, config, tls) for t in targets))
    return Result(platforms=list(probes))


def _targets(config: Config, context: Context) -> list[PlatformTarget]:
    if config.targets is not None:
        return config.targets
    if len(context.platforms) > MAX_TARGETS:
        raise ValueError(f"{len(context.platforms)} platforms; at most {MAX_TARGETS} are probed")
    # The inventory has validated these already (URLs, unique ids); this keeps our own rules.
    return [PlatformTarget(id=t.id, url=t.url) for t in context.platforms]


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    tls = ssl.create_default_context()
    if ca_file is not None:
        tls.load_verify_locations(cafile=str(ca_file))
    # Without ALPN some servers pick HTTP/2, which our HTTP/1.1 request would not speak.
    tls.set_alpn_protocols(["http/1.1"])
    return tls


@dataclass
class _Probe:
    """A probe in progress: the phase it is in, and what it has measured so far."""

    target: PlatformTarget
    phase: Phase = "dns"
    address: str | None = None
    ip_protocol: Literal[4, 6] | None = None
    dns: float | None = None
    connect: float | None = None
    tls: float | None = None
    first_byte: float | None = None
    tls_version: str | None = None
    not_after: float | None = None
    status: int | None = None
    failed: Phase | None = None
    error: str | None = None

    def fail(self, phase: Phase, error: str) -> None:
        self.failed, self.error = phase, error[:MAX_ERROR_CHARS]


async def probe(target: PlatformTarget, config: Config,
                tls: ssl.SSLContext | None = None) -> PlatformProbe:
    """Probe one platform; never raises (except on cancellation): failures are in the result.

    `tls` is the client context to verify with; by default one from `config.ca_file`.
    """
    state = _Probe(target)
    writer: asyncio.StreamWriter | None = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(config.target_timeout_seconds):
            writer = await _phases(state, config, tls)
    except TimeoutError:  # before OSError: TimeoutError is one
        state.fail("timeout", f"no answer within {config.target_timeout_seconds:g} s "
                              f"(during {state.phase})")
    except Exception as exc:  # whatever goes wrong stays with this platform
        state.fail(state.phase, _describe(exc))
    finally:
        duration = time.perf_counter() - started
        if writer is not None:
            # We have the status line: no need for the body or a graceful TLS shutdown,
            # which a stalled peer could drag out.
            writer.transport.abort()
    if state.failed is None and state.status is not None and not 200 <= state.status < 400:
        state.fail("http", f"HTTP status {state.status}")
    days_left = None if state.not_after is None else (state.not_after - time.time()) / 86400
    return PlatformProbe(
        id=target.id, url=target.url, up=state.failed is None, address=state.address,
        ip_protocol=state.ip_protocol, dns_seconds=state.dns, connect_seconds=state.connect,
        tls_seconds=state.tls, first_byte_seconds=state.first_byte, duration_seconds=duration,
        tls_version=state.tls_version, certificate_expiry_timestamp_seconds=state.not_after,
        certificate_days_left=days_left, http_status_code=state.status,
        failed_phase=state.failed, error=state.error)


async def _phases(state: _Probe, config: Config,
                  tls: ssl.SSLContext | None) -> asyncio.StreamWriter | None:
    """Run the phases in order, recording each; returns the open connection to abort."""
    url = urlsplit(state.target.url)
    host = url.hostname or ""
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    loop = asyncio.get_running_loop()

    state.phase = "dns"
    t = time.perf_counter()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    state.dns = time.perf_counter() - t

    state.phase = "connect"
    t = time.perf_counter()
    sock = await _connect(state, infos)
    state.connect = time.perf_counter() - t
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        if https:
            state.phase = "tls"
            t = time.perf_counter()
            await writer.start_tls(tls or _tls_context(config.ca_file), server_hostname=host)
            state.tls = time.perf_counter() - t
            _tls_facts(state, writer.get_extra_info("ssl_object"))

        state.phase = "http"
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        authority = url.netloc.rpartition("@")[2]  # never send userinfo in the Host header
        writer.write(f"{config.method} {path} HTTP/1.1\r\nHost: {authority}\r\n"
                     f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                     .encode("ascii", "backslashreplace"))
        t = time.perf_counter()
        await writer.drain()
        first = await reader.read(1)
        if not first:
            raise ConnectionError("connection closed before the response")
        state.first_byte = time.perf_counter() - t
        state.status = await _status(first + await reader.readline(), reader)
    except BaseException:
        writer.transport.abort()
        raise
    return writer


async def _connect(state: _Probe, infos: Sequence[tuple[Any, ...]]) -> socket.socket:
    """Connect to the name's addresses in the resolver's order; the first that answers wins."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        state.address = sockaddr[0]
        state.ip_protocol = 6 if family == socket.AF_INET6 else 4
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error or OSError("the name has no address")


async def _status(line: bytes, reader: asyncio.StreamReader) -> int:
    """The final status code; informational (1xx) responses and their headers are skipped."""
    for _ in range(MAX_HEADER_LINES):
        match = _STATUS_LINE.match(line)
        if match is None:
            raise ValueError(f"not an HTTP status line: {line[:60]!r}")
        status = int(match.group(1))
        if not 100 <= status < 200 or status == 101:
            return status
        while (await reader.readline()).strip():
            pass
        line = await reader.readline()
    raise ValueError("too many informational responses")


def _tls_facts(state: _Probe, tls: ssl.SSLObject | None) -> None:
    if tls is None:
        return
    state.tls_version = tls.version()
    not_after = [ssl.cert_time_to_seconds(info["notAfter"]) for info in _chain_infos(tls)
                 if "notAfter" in info]
    state.not_after = float(min(not_after)) if not_after else None


def _chain_infos(tls: ssl.SSLObject) -> list[dict[str, Any]]:
    """Decoded certificates the peer sent, leaf first; at least the (verified) leaf."""
    # Python < 3.13 has no public way to see the peer's chain; its private one (still the
    # source of the public one in 3.13) gives certificate objects that can decode themselves.
    try:
        chain = tls._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
        infos = [cert.get_info() for cert in chain or ()]
        if infos:
            return infos
    except (AttributeError, TypeError, ValueError, ssl.SSLError):
        pass
    leaf = tls.getpeercert()
    return [leaf] if leaf else []


def _describe(exc: BaseException) -> str:
    """A short, human error: the resolver's or kernel's words where there are some."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, EOFError):
        return "connection closed mid-response"
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's own words ("Connect call failed ...") repeat what the result already says.
        return os.strerror(exc.errno)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


UP = MetricSpec("wardready_platform_up",
                "1 if the platform answered with a 2xx or 3xx status.", ("platform",))
PHASE_SECONDS = MetricSpec("wardready_platform_phase_seconds",
                           "Time spent in each phase of the latest probe: dns, connect, tls, "
                           "first_byte (request sent to first response byte).",
                           ("platform", "phase"))
DURATION = MetricSpec("wardready_platform_duration_seconds",
                      "Total time of the latest probe of the platform.", ("platform",))
STATUS = MetricSpec("wardready_platform_http_status_code",
                    "HTTP status code the platform answered with.", ("platform",))
CERT_EXPIRY = MetricSpec("wardready_platform_certificate_expiry_timestamp_seconds",
                         "Earliest expiry among the certificates the platform sent, "
                         "seconds since the epoch.", ("platform",))
TLS_VERSION = MetricSpec("wardready_platform_tls_version_info",
                         "TLS version negotiated with the platform.", ("platform", "version"))
IP_PROTOCOL = MetricSpec("wardready_platform_ip_protocol",
                         "IP version used to reach the platform (4 or 6).", ("platform",))
FAILED_PHASE = MetricSpec("wardready_platform_failed_phase",
                          "1 for the phase in which the latest probe failed "
                          "(dns, connect, tls, http, timeout), 0 for the others.",
                          ("platform", "phase"))

METRICS = (UP, PHASE_SECONDS, DURATION, STATUS, CERT_EXPIRY, TLS_VERSION, IP_PROTOCOL,
           FAILED_PHASE)


def samples(result: Result) -> Iterator[Sample]:
    """The metric samples of one platforms result."""
    for p in result.platforms:
        yield Sample(UP, (p.id,), 1 if p.up else 0)
        timed = (p.dns_seconds, p.connect_seconds, p.tls_seconds, p.first_byte_seconds)
        for phase, seconds in zip(TIMED_PHASES, timed, strict=True):
            if seconds is not None:
                yield Sample(PHASE_SECONDS, (p.id, phase), seconds)
        yield Sample(DURATION, (p.id,), p.duration_seconds)
        if p.http_status_code is not None:
            yield Sample(STATUS, (p.id,), p.http_status_code)
        if p.certificate_expiry_timestamp_seconds is not None:
            yield Sample(CERT_EXPIRY, (p.id,), p.certificate_expiry_timestamp_seconds)
        if p.tls_version is not None:
            yield Sample(TLS_VERSION, (p.id, p.tls_version), 1)
        if p.ip_protocol is not None:
            yield Sample(IP_PROTOCOL, (p.id,), p.ip_protocol)
        # Every phase, 0 or 1: the series stay put, so alerts need no absent().
        for phase in PHASES:
            yield Sample(FAILED_PHASE, (p.id, phase), 1 if p.failed_phase == phase else 0)


CHECK = CheckSpec(name="platforms", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples)
