"""The server's own configuration file, validated strictly on load."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from wardready.core.configfile import TimeZoneName, load
from wardready.core.echo import HEADER
from wardready.core.i18n import Language
from wardready.core.inventory import HttpURL

FilePath = Annotated[Path, Field(strict=False)]
"""A path given as text in YAML."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TlsConfig(Strict):
    """The server's certificate chain and key (PEM)."""

    cert_file: FilePath
    key_file: FilePath


class SpeedtestConfig(Strict):
    """Caps on the throughput-test endpoints, so nobody can use them to flood a link."""

    max_concurrent_tests: int = Field(default=4, ge=1)
    """Throughput tests at once city-wide, so the central uplink is not the bottleneck;
    within a ward, one at a time (machines sharing the uplink would each measure a part)."""
    slot_seconds: float = Field(default=30.0, gt=0, le=600)
    """How long a granted slot lasts; the agent releases it sooner when done."""
    max_bytes_per_slot: int = Field(default=400 << 20, ge=1 << 20)
    """Bytes one slot may move, all streams and both directions together."""
    max_streams: int = Field(default=8, ge=1, le=64)
    """Concurrent transfers one slot may run."""


class EchoConfig(Strict):
    """The UDP echo endpoint and its caps (the `udp_echo` section of the server config)."""

    listen_host: str | None = None
    """None: the HTTP server's `listen_host`."""
    listen_port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port (tests); a deployment fixes one so ward firewalls can allow it."""
    max_packets: int = Field(default=3000, ge=1, le=1_000_000)
    """Probes echoed per session at most (60 s at 50 a second)."""
    max_packet_rate: float = Field(default=100.0, gt=0, le=100_000)
    """Probes per second per session; more are dropped (a token bucket)."""
    burst_seconds: float = Field(default=1.0, gt=0, le=60)
    """The bucket holds this many seconds of probes (and at least 10), so a queue on the
    path that releases a burst does not read as loss."""
    max_packet_bytes: int = Field(default=1472, ge=HEADER.size, le=65507)
    """Largest UDP payload echoed (1472 fills a 1500-byte Ethernet frame over IPv4)."""
    session_seconds: float = Field(default=60.0, gt=0, le=3600)
    max_sessions: int = Field(default=1000, ge=1)
    """Media-test sessions open at once over all agents; a request beyond it gets 503."""
    max_probe_sessions: int = Field(default=25_000, ge=1)
    """Continuous probe sessions (`checks.probe`) open at once over all agents: each PC
    holds one all the time, so this is sized for the fleet (a session takes well under
    1 KiB here; each PC sends 1 probe a second by default)."""


class RemoteWriteConfig(Strict):
    """Where the measurements go by Prometheus remote write (server.remote_write)."""

    url: HttpURL
    """The receiver's write endpoint, e.g. http://prometheus:9090/api/v1/write."""
    bearer_token_file: FilePath | None = None
    """A file holding a token sent as `Authorization: Bearer` (Mimir, a proxy)."""
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_reports_per_request: int = Field(default=500, ge=1, le=100_000)
    """Reports whose samples go in one request (a report brings 20-200 samples)."""
    max_backlog_reports: int = Field(default=5_000_000, ge=1)
    """Reports waiting at most; past it the oldest are dropped unsent, and counted
    (20,000 PCs bring about 30 million a day)."""
    max_age_hours: float = Field(default=14 * 24, gt=0)
    """Reports generated longer ago are not sent, and counted: match the receiver's
    out-of-order window (Prometheus: storage.tsdb.out_of_order_time_window)."""


DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


class ProposalConfig(Strict):
    """The PDF proposal of the equipment request list (`server.proposal`): who issues it
    and the fonts it embeds (they must carry Vietnamese glyphs)."""

    parent_body: str | None = None
    """The governing body above the issuer, top left (default, in the document's language:
    the city's People's Committee)."""
    issuer: str | None = None
    """The issuing body, top left in bold (default: the Department of Science and
    Technology)."""
    place: str | None = None
    """The place of the place-and-date line (default: Ho Chi Minh City)."""
    font_file: FilePath = DEJAVU / "DejaVuSans.ttf"
    bold_font_file: FilePath = DEJAVU / "DejaVuSans-Bold.ttf"
    italic_font_file: FilePath | None = DEJAVU / "DejaVuSans-Oblique.ttf"
    """None, or a file that is missing: italic text is set upright."""


class ServerConfig(Strict):
    """Where the server listens and keeps its data. Relative paths are relative to the file."""

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8470, ge=1, le=65535)
    database: FilePath = Path("wardready.db")
    inventory: FilePath = Path("inventory.yml")
    max_report_bytes: int = Field(default=1 << 20, ge=1024)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600, description=(
        "A request body (a report, an enrolment) must arrive within this time, else 408 and "
        "the connection is closed: 1 MiB in 30 s needs 280 kbit/s."))
    readiness_max_age_seconds: float = Field(default=86400.0, gt=0, description=(
        "A PC silent for longer counts for nothing: its measurements leave /metrics, its "
        "ward's readiness and the equipment list."))
    metrics_agents_per_shard: int = Field(default=2000, ge=1, description=(
        "PCs per /metrics shard that GET /api/v1/metrics-targets aims for (docs/scaling.md)."))
    public_address: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:\[\]-]{1,253}:\d{1,5}$",
                                       description=(
        "HOST:PORT at which Prometheus reaches this server (with TLS, a name in its "
        "certificate), for GET /api/v1/metrics-targets; default: the address the request "
        "arrived on. The client's Host header is never echoed."))
    max_connections: int = Field(default=30_000, ge=16, le=1_000_000, description=(
        "HTTP connections held at once; also kept below the open-files limit. Past it the "
        "connection waiting longest for a request is closed to let a new one in "
        "(docs/reliability.md)."))
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300, description=(
        "A request's line and headers must arrive within this long of the connection "
        "opening, or of the request's first byte."))
    keepalive_timeout_seconds: float = Field(default=15.0, gt=0, le=3600, description=(
        "An idle kept-alive connection is closed after this long (agents reuse one only "
        "within 10 s)."))
    timezone: TimeZoneName = Field(default="Asia/Ho_Chi_Minh", description=(
        "Times in the equipment list are shown in this IANA time zone."))
    language: Language | None = Field(default=None, description=(
        "The language of the server's messages and of the equipment list (en or vi) when "
        "`--lang` does not say; default: the locale's."))
    proposal: ProposalConfig = ProposalConfig()
    tls: TlsConfig | None = None
    scrape_token_file: FilePath | None = Field(default=None, description=(
        "A file holding the bearer token Prometheus must send for /metrics and "
        "/api/v1/metrics-targets (its `authorization: {credentials_file: ...}`); without it "
        "they are open, as suits a Prometheus on the same host or a closed network "
        "(docs/reliability.md)."))
    remote_write: RemoteWriteConfig | None = Field(default=None, description=(
        "Send every report's measurements, at the time they were measured, to this "
        "Prometheus remote-write receiver; /metrics then serves the rest "
        "(docs/remote-write.md)."))
    speedtest: SpeedtestConfig = SpeedtestConfig()
    udp_echo: EchoConfig = EchoConfig()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_server_config(path: Path | None) -> ServerConfig:
    """Load the config file (or the defaults when there is none), resolving relative paths;
    a certificate that does not load is a configuration error too."""
    if path is None:
        return ServerConfig()
    config, doc = load(path, ServerConfig)
    base = path.parent
    tls = config.tls and TlsConfig(cert_file=base / config.tls.cert_file,
                                   key_file=base / config.tls.key_file)
    scrape = config.scrape_token_file and base / config.scrape_token_file
    proposal = config.proposal.model_copy(update={
        name: base / path for name in ("font_file", "bold_font_file", "italic_font_file")
        if (path := getattr(config.proposal, name)) is not None})
    remote = config.remote_write
    if remote is not None and remote.bearer_token_file is not None:
        remote = remote.model_copy(update={"bearer_token_file":
                                           base / remote.bearer_token_file})
    config = config.model_copy(update={"database": base / config.database,
                                       "inventory": base / config.inventory, "tls": tls,
                                       "scrape_token_file": scrape, "remote_write": remote,
                                       "proposal": proposal})
    try:
        scrape_token(config)
    except (OSError, ValueError) as exc:
        raise doc.error(("scrape_token_file",), str(exc)) from None
    if remote is not None and remote.bearer_token_file is not None:
        try:
            if not remote.bearer_token_file.read_text().strip():
                raise ValueError(f"{remote.bearer_token_file} is empty")
        except (OSError, ValueError) as exc:
            raise doc.error(("remote_write", "bearer_token_file"), str(exc)) from None
    problem = config.tls and tls_problem(config.tls)
    if problem:
        raise doc.error(("tls", problem[0]), problem[1])
    return config


def tls_problem(tls: TlsConfig) -> tuple[str, str] | None:
    """Which of the TLS files cannot serve, `cert_file` or `key_file`, and why; None when
    they load together. OpenSSL alone says only "PEM lib" for either file."""
    kinds = {"cert_file": (b"-----BEGIN CERTIFICATE-----", "PEM certificate"),
             "key_file": (b"PRIVATE KEY-----", "PEM private key")}
    for field, (marker, what) in kinds.items():
        path: Path = getattr(tls, field)
        try:
            text = path.read_bytes()
        except OSError as exc:
            return field, f"cannot read {path}: {exc.strerror or exc}"
        if marker not in text:
            return field, f"{path} holds no {what}"
        if field == "key_file" and (b"ENCRYPTED" in text):
            return field, (f"{path} is encrypted with a passphrase, which the server cannot "
                           "ask for: give it the key unencrypted, readable only by its user")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "key_file", f"{tls.key_file} is not the key of the certificate in " \
                               f"{tls.cert_file}"
        return "cert_file", f"cannot load {tls.cert_file} with the key {tls.key_file}: {exc}"
    return None


MIN_SCRAPE_TOKEN_CHARS = 16


def scrape_token(config: ServerConfig) -> bytes | None:
    """The token /metrics asks for, or None when it is open. Raises ValueError for a token
    too short or not printable ASCII, OSError for a file that cannot be read."""
    if config.scrape_token_file is None:
        return None
    token = config.scrape_token_file.read_bytes().strip()
    if len(token) < MIN_SCRAPE_TOKEN_CHARS or not token.isascii() or not all(
            33 <= c < 127 for c in token):
        raise ValueError(f"{config.scrape_token_file}: the token must be at least "
                         f"{MIN_SCRAPE_TOKEN_CHARS} printable ASCII characters, without spaces")
    return token


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None for plain HTTP."""
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    return context
