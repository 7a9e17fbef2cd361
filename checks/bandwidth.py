"""Download and upload throughput against the agent's own server, and latency under load.

Several parallel TCP streams move incompressible bytes; the first part (TCP slow start and the
filling of queues) is discarded; the test stops as soon as the estimate has settled, or at its
budget in seconds or bytes, whichever comes first. So a 100 Mbit/s link is not flooded for
long and a 1 Mbit/s commune link is not tied up for minutes. While the transfer runs, TCP
connect times to the server measure latency under load: what decides whether a video call
survives someone uploading a scan.

The test is polite: the server's measurement plan may refuse its slot (a quiet window, the
ward's byte budget spent, another PC of the ward carrying a call); with a slot, it still
does not start while this PC moves traffic of its own or while the RTT to the server stands
above the ward's idle baseline (other PCs' traffic, which it cannot see); and it stops early
when its own load pushes the RTT past the bound of the ward's call preset. A test that does
not run returns a result that says why (`deferred`), and measures nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from wardready.checks import latency
from wardready.checks.base import (
    CheckConfig,
    CheckResult,
    CheckSpec,
    Context,
    ResultModel,
    server_tls,
)
from wardready.core import aim as aimdef
from wardready.core import i18n, responsiveness, tcpinfo
from wardready.core.api import DOWNLOAD_PATH, SLOT_HEADER, SLOTS_PATH, UPLOAD_PATH
from wardready.core.i18n import _
from wardready.core.metrics import MetricSpec, Sample

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

Direction = Literal["download", "upload"]
SAMPLE_SECONDS = 0.05
WINDOW_SECONDS = 0.5
CHUNK = random.Random(0).randbytes(64 << 10)
"""Upload payload: random bytes, so no compression on the path can inflate the figure."""
NOTSENT_LOWAT_BYTES = 64 << 10
"""Most unsent data an upload stream may queue in the kernel (TCP_NOTSENT_LOWAT; in flight is
not limited): without it, autotuned send buffers hold megabytes, which on a thin link take
seconds to drain after the test stops and blur where it stopped."""


class Config(CheckConfig):
    """Throughput test settings. Tests are expensive: hourly by default."""

    interval_seconds: float = Field(default=3600.0, gt=0)
    timeout_seconds: float = Field(default=300.0, gt=0)
    directions: list[Direction] = Field(default=["download", "upload"], min_length=1,
                                       max_length=2)
    streams: int = Field(default=4, ge=1, le=16)
    max_seconds: float = Field(default=10.0, gt=0, le=60)
    """Hard budget per direction, warm-up included."""
    max_bytes: int = Field(default=100 << 20, ge=1 << 16)
    """Hard budget per direction, all streams together."""
    warmup_seconds: float = Field(default=1.0, ge=0)
    """Discarded at least; longer while the rate is still climbing (slow start)."""
    min_measure_seconds: float = Field(default=2.0, gt=0)
    min_measure_bytes: int = Field(default=1 << 20, ge=0)
    """The measured part must also carry this much: on a slow link two seconds hold too few
    of TCP's sawtooth cycles for a figure within a few percent (2 Mbit/s: 1 MiB is 4.4 s)."""
    tolerance: float = Field(default=0.02, gt=0, lt=1)
    """Stop once the estimate moved less than this (relative) over the last second."""
    slot_wait_seconds: float = Field(default=120.0, ge=0)
    """How long to wait for the server to grant a test slot (ward or city busy, or a plan's
    hold that ends within this wait)."""
    load_probe_interval_seconds: float = Field(default=0.2, gt=0)
    override: bool = False
    """Test now, whatever the plan and the link say (a technician's `--now`)."""
    wait_for_holds: bool = True
    """Wait out a hold of the plan that ends within `slot_wait_seconds` (a technician on
    site); the agent's scheduled tests set it false and try again later instead."""
    busy_own_bits_per_second: float = Field(default=1e6, gt=0)
    """This PC's own traffic (both directions, loopback excluded) above which it is busy."""
    busy_sample_seconds: float = Field(default=1.0, gt=0, le=10)
    busy_rtt_ratio: float = Field(default=0.5, ge=0)
    busy_rtt_margin_seconds: float = Field(default=0.005, ge=0)
    """The link is in use when the idle RTT exceeds baseline * (1 + ratio) + margin."""
    rtt_bound_probes: int = Field(default=3, ge=1)
    """Consecutive load probes above the call preset's RTT bound that stop the test."""


class DirectionResult(ResultModel):
    direction: Direction
    bytes_per_second: float
    """Goodput over the measured part (after warm-up)."""
    bytes: int
    """Everything moved, warm-up included: what the test cost the link."""
    seconds: float
    warmup_seconds: float
    measured_seconds: float
    stop_reason: Literal["converged", "time_budget", "byte_budget", "server_cap", "rtt_bound"]
    """rtt_bound: the test's load pushed the RTT past the ward's call preset's bound."""
    streams: int
    rtt_under_load_median_seconds: float | None
    rtt_under_load_p95_seconds: float | None
    load_probes: int
    load_probes_lost: int
    responsiveness_rpm: float | None = None
    """Round trips per minute under this direction's load, after draft-ietf-ippm-
    responsiveness: 60 / trimmed mean of the load probes' connect times (the only probe
    wardready has stands in for all of the draft's; docs/emodel.md)."""
    tcp_streams: int = 0
    """Sending sockets whose TCP_INFO was read (the server's for download, this PC's for
    upload; 0 off Linux or from a server that does not report it)."""
    retransmitted_ratio: float | None = None
    """Retransmitted bytes / bytes sent, all streams (M-Lab ndt7's LossRate)."""
    loss_ratio: float | None = None
    """Retransmitted segments less those the receiver reported as spurious (DSACK), over
    data segments sent: the sender's estimate of the path's loss."""
    rwnd_limited_ratio: float | None = None
    """Share of the sender's busy time it was held by the receiver's window."""
    sndbuf_limited_ratio: float | None = None
    """Share of the sender's busy time it was held by its own send buffer."""


DeferReason = Literal["quiet_window", "budget", "ward_in_use", "ward_busy", "city_busy",
                      "own_traffic", "rtt_inflation"]


class Deferral(ResultModel):
    """Why the test did not run, and when it may."""

    reason: DeferReason
    retry_after_seconds: float = Field(ge=0)
    detail: str


class Result(CheckResult):
    server: str
    idle_rtt_median_seconds: float | None
    slot_wait_seconds: float
    directions: list[DirectionResult] = Field(max_length=2)
    deferred: Deferral | None = None
    """Set when the test did not run (then `directions` is empty)."""
    own_bits_per_second: float | None = None
    """This PC's own traffic just before the test."""
    baseline_rtt_seconds: float | None = None
    """The ward's idle RTT baseline the server gave, which the idle RTT was compared with."""
    idle_jitter_seconds: float | None = None
    """Mean absolute difference of consecutive idle probes (Cloudflare's jitter)."""
    aim: list[aimdef.Score] = Field(default_factory=list, max_length=3)
    """Cloudflare AIM reference scores from this test's figures: shown, never judged."""


@dataclass
class RateEstimator:
    """Goodput from a series of (time, cumulative bytes) samples.

    Warm-up ends at the first window boundary after `warmup` that closes three windows
    whose rates are within 10 % of each other (or at 4 x `warmup`). The estimate is the
    least-squares slope of bytes over time since then, not the difference of the end
    points: data held back by a loss and released all at once by the receiver's TCP must
    not bias a short measurement by where its ends fall. It has converged when it moved
    less than `tolerance` over the last two windows, after at least `min_measure` seconds
    and `min_measure_bytes` bytes.
    """

    warmup: float
    min_measure: float
    tolerance: float
    min_measure_bytes: int = 0
    times: list[float] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    sums: list[tuple[float, float, float, float]] = field(default_factory=list)
    """Prefix sums of t, b, t*b and t*t (t from the first sample), for slopes in O(1)."""
    start: int | None = None
    """Index of the sample where the measured part begins."""

    def add(self, t: float, total: int) -> None:
        self.record(t, total)
        if self.start is None:
            self._find_start()

    def record(self, t: float, total: int) -> None:
        """Add a sample without looking for the end of warm-up."""
        self.times.append(t)
        self.totals.append(total)
        x = t - self.times[0]
        st, sb, stb, stt = self.sums[-1] if self.sums else (0.0, 0.0, 0.0, 0.0)
        self.sums.append((st + x, sb + total, stb + x * total, stt + x * x))

    def _at(self, t: float) -> int:
        """Index of the last sample at or before t."""
        i = len(self.times) - 1
        while i > 0 and self.times[i] > t:
            i -= 1
        return i

    def _window_rate(self, end: float) -> float:
        a, b = self._at(end - WINDOW_SECONDS), self._at(end)
        span = self.times[b] - self.times[a]
        return (self.totals[b] - self.totals[a]) / span if span > 0 else 0.0

    def _find_start(self) -> None:
        t0, now = self.times[0], self.times[-1]
        if now - t0 < max(self.warmup, 3 * WINDOW_SECONDS):
            return
        rates = [self._window_rate(now - k * WINDOW_SECONDS) for k in range(3)]
        # Three similar windows in a row: neither still climbing nor in the dip that follows
        # slow start's first losses (then the receiver holds data back until retransmissions
        # fill the holes, and starting there would count it twice as fast later).
        steady = min(rates) > 0 and max(rates) <= 1.1 * min(rates)
        if steady or now - t0 >= 4 * max(self.warmup, 1):
            self.start = len(self.times) - 1

    def estimate(self, at: int | None = None) -> float | None:
        """Rate from the end of warm-up to sample `at` (default: the latest)."""
        if self.start is None:
            return None
        end = len(self.times) - 1 if at is None else at
        n = end - self.start + 1
        if n < 3:
            return None
        before = self.sums[self.start - 1] if self.start else (0.0, 0.0, 0.0, 0.0)
        st, sb, stb, stt = (a - b for a, b in zip(self.sums[end], before, strict=True))
        spread = n * stt - st * st
        return (n * stb - st * sb) / spread if spread > 0 else None

    @property
    def warmup_seconds(self) -> float:
        return self.times[self.start] - self.times[0] if self.start is not None else 0.0

    @property
    def measured_seconds(self) -> float:
        return self.times[-1] - self.times[self.start] if self.start is not None else 0.0

    def converged(self) -> bool:
        if self.start is None or self.measured_seconds < self.min_measure:
            return False
        if self.totals[-1] - self.totals[self.start] < self.min_measure_bytes:
            return False
        now = self.estimate()
        if not now:
            return False
        for back in (WINDOW_SECONDS, 2 * WINDOW_SECONDS):
            then = self.estimate(self._at(self.times[-1] - back))
            if then is None or abs(now - then) > self.tolerance * now:
                return False
        return True


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Test:
    """One throughput test: a granted slot, an HTTP session, the server's address."""

    def __init__(self, config: Config, context: Context, session: aiohttp.ClientSession,
                 base: str, slot: str, max_streams: int,
                 rtt_bound: float | None = None, sockets: SocketLog | None = None) -> None:
        self.config, self.context, self.session = config, context, session
        self.sockets = sockets if sockets is not None else SocketLog()
        """The session's sockets, for the upload's TCP_INFO."""
        self.base, self.slot = base, slot
        self.rtt_bound = rtt_bound
        """Stop when the load keeps the RTT above this (None: never)."""
        self.streams = min(config.streams, max_streams)
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)

    async def run(self, direction: Direction) -> DirectionResult:
        """Transfer until converged or out of budget, probing latency meanwhile."""
        config = self.config
        estimator = RateEstimator(config.warmup_seconds, config.min_measure_seconds,
                                  config.tolerance, config.min_measure_bytes)
        moved = [0]
        stop = asyncio.Event()
        transfer = self._download if direction == "download" else self._upload
        share = config.max_bytes // self.streams
        rtts: list[float | None] = []
        upload = direction == "upload"
        before = self.sockets.snapshot() if upload else {}
        latest: dict[int, tcpinfo.TcpInfo] = {}  # kept: a stream ending early closes its socket
        t0 = time.monotonic()  # also when the first upload request leaves, to map clocks
        tasks = [asyncio.create_task(transfer(share, moved, stop))
                 for _stream in range(self.streams)]
        prober = asyncio.create_task(self._probe_load(rtts, stop))
        reason = "time_budget"
        try:
            while time.monotonic() - t0 < config.max_seconds:
                await asyncio.sleep(SAMPLE_SECONDS)
                estimator.add(time.monotonic(), moved[0])
                if upload:
                    self.sockets.snapshot(latest)
                if estimator.converged():
                    reason = "converged"
                    break
                if moved[0] >= share * self.streams:
                    reason = "byte_budget"
                    break
                if all(t.done() for t in tasks):
                    reason = "server_cap"  # the server ended every stream: its caps
                    break
                if self._past_bound(rtts):
                    reason = "rtt_bound"
                    break
        finally:
            stop.set()
            stopped_at = time.monotonic()
            if upload:
                self.sockets.snapshot(latest)  # before the aborts close them
                # Abort instead of waiting for what is queued to drain: on a thin link that
                # takes seconds (tail losses, timeouts). The server kept the slot's timeline.
                for task in tasks:
                    task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(prober, return_exceptions=True)
        elapsed = time.monotonic() - t0
        errors = [o for o in outcomes if isinstance(o, BaseException)
                  and not isinstance(o, asyncio.CancelledError)]
        if errors and len(errors) == len(outcomes):
            raise errors[0]
        rate = estimator.estimate()
        warmup, measured = estimator.warmup_seconds, estimator.measured_seconds
        if rate is None:  # the budget ran out before warm-up ended (a very fast link)
            rate, measured = moved[0] / elapsed, elapsed
        if upload:
            state = await self._slot_state()
        else:  # only for TCP_INFO: a slot that ended meanwhile costs those figures, no more
            import aiohttp  # loaded already: the session is aiohttp's

            try:
                state = await self._slot_state()
            except (aiohttp.ClientError, RuntimeError, OSError, ValueError) as exc:
                log.warning("no TCP_INFO of the download from the server: %s", exc)
                state = {}
        if direction == "download":
            infos = [tcpinfo.TcpInfo.from_dict(d) for d in state.get("download_tcp_info", [])]
        else:  # this PC's own sending sockets; the others (API calls) barely moved
            sent = self.sockets.grown(latest, before).values()
            infos = [i for i in sent if (i.bytes_sent or 0) >= len(CHUNK)]
        tcp = tcpinfo.summarize(infos)
        if direction == "upload":
            # What the server received, by its clock, until the agent stopped: the agent's
            # own send buffers excluded. Its clock runs from when the first stream arrived.
            timeline = [(float(t), int(b)) for t, b in state["upload_timeline"]]
            arrived = int(state["uploaded"])
            moved[0] = arrived  # what crossed the link; the rest died in the agent's buffers
            if timeline:
                offset = timeline[0][0] - t0
                server_rate, measured = self._server_rate(timeline, warmup,
                                                          stopped_at + offset)
                rate = server_rate if server_rate is not None else rate
        answered = [r for r in rtts if r is not None]
        return DirectionResult(
            direction=direction, bytes_per_second=rate or 0.0, bytes=moved[0], seconds=elapsed,
            warmup_seconds=warmup, measured_seconds=measured, stop_reason=reason,
            streams=self.streams, rtt_under_load_median_seconds=quantile(answered, 0.5),
            rtt_under_load_p95_seconds=quantile(answered, 0.95), load_probes=len(rtts),
            load_probes_lost=len(rtts) - len(answered),
            responsiveness_rpm=responsiveness.rpm_from_connects(answered),
            tcp_streams=tcp.streams if tcp.busy_seconds is not None else 0,
            retransmitted_ratio=tcp.retransmitted_ratio, loss_ratio=tcp.loss_ratio,
            rwnd_limited_ratio=tcp.rwnd_limited_ratio,
            sndbuf_limited_ratio=tcp.sndbuf_limited_ratio)

    def _past_bound(self, rtts: list[float | None]) -> bool:
        """The last few load probes all above the bound (a lost one counts as above)."""
        n = self.config.rtt_bound_probes
        if self.rtt_bound is None or len(rtts) < n:
            return False
        return all(r is None or r > self.rtt_bound for r in rtts[-n:])

    @staticmethod
    def _server_rate(merged: list[tuple[float, int]], warmup: float,
                     end: float) -> tuple[float | None, float]:
        """The slope of the server's timeline from the agent's warm-up to `end` (when the
        agent stopped, in the server's clock)."""
        merged = [(t, total) for t, total in merged if t <= end]
        if len(merged) < 2:
            return None, 0.0
        fit = RateEstimator(warmup, 0.0, 1.0)
        for t, total in merged:
            fit.record(t, total)  # warm-up as long as the agent's own, set just below
        start_t = merged[0][0] + warmup
        fit.start = next((i for i, (t, _) in enumerate(merged) if t >= start_t),
                         len(merged) - 1)
        return fit.estimate(), fit.measured_seconds

    async def _download(self, share: int, moved: list[int], stop: asyncio.Event) -> None:
        url = self.base + DOWNLOAD_PATH
        async with self.session.get(url, params={"bytes": str(share)},
                                    headers={SLOT_HEADER: self.slot}) as resp:
            await _raise_for_status(resp)
            async for chunk in resp.content.iter_any():
                moved[0] += len(chunk)
                if stop.is_set():
                    resp.close()  # drop the connection: the server stops sending
                    return

    async def _slot_state(self) -> dict[str, Any]:
        """The slot as the server saw it: the upload's timeline ((server time, bytes so
        far) and the bytes that arrived), the download streams' TCP_INFO."""
        async with self.session.get(f"{self.base}{SLOTS_PATH}/{self.slot}") as resp:
            await _raise_for_status(resp)
            body: dict[str, Any] = await resp.json()
        return body

    async def _upload(self, share: int, moved: list[int], stop: asyncio.Event) -> None:
        async def body() -> AsyncIterator[bytes]:
            sent = 0
            while sent < share and not stop.is_set():
                chunk = CHUNK[:share - sent]
                yield chunk
                sent += len(chunk)
                moved[0] += len(chunk)

        url = self.base + UPLOAD_PATH
        async with self.session.post(url, data=body(), headers={
                SLOT_HEADER: self.slot, "Content-Type": "application/octet-stream"}) as resp:
            await _raise_for_status(resp)

    async def _probe_load(self, rtts: list[float | None], stop: asyncio.Event) -> None:
        """One TCP connect probe per interval, each appended as it ends, so the transfer
        loop sees the RTT while the test runs."""
        interval = self.config.load_probe_interval_seconds
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(int(self.config.max_seconds / interval) + 1):
            delay = start + i * interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            rtts.extend(await latency.probe(self.host, "tcp", count=1, interval=interval,
                                            timeout=2.0, port=self.port, stop=stop))


class SocketLog:
    """The session's socket factory, which remembers its sockets: an upload stream's
    TCP_INFO must be read while the stream runs, and aiohttp does not hand out the socket of
    a request whose response has not come."""

    def __init__(self) -> None:
        self.sockets: list[tuple[int, socket.socket]] = []
        self.made = 0

    def __call__(self, addr: Any) -> socket.socket:
        family, kind, proto, _name, _address = addr
        sock = socket.socket(family, kind, proto)
        lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS; not Windows
        if lowat is not None:
            sock.setsockopt(socket.IPPROTO_TCP, lowat, NOTSENT_LOWAT_BYTES)
        self.sockets = [(n, s) for n, s in self.sockets if s.fileno() != -1]  # closed: gone
        self.made += 1
        self.sockets.append((self.made, sock))
        return sock

    def snapshot(self, into: dict[int, tcpinfo.TcpInfo] | None = None
                 ) -> dict[int, tcpinfo.TcpInfo]:
        """TCP_INFO of every open socket by serial number, updating `into` if given (so
        a socket closed since keeps its last reading)."""
        infos = {} if into is None else into
        for serial, sock in self.sockets:
            if sock.fileno() != -1 and (info := tcpinfo.read(sock)) is not None:
                infos[serial] = info
        return infos

    @staticmethod
    def grown(now: dict[int, tcpinfo.TcpInfo],
              before: dict[int, tcpinfo.TcpInfo]) -> dict[int, tcpinfo.TcpInfo]:
        """Each socket's counters' growth since `before` (one opened since: all of them)."""
        return {key: info.minus(before.get(key, tcpinfo.TcpInfo())) for key, info in now.items()}


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        text = (await resp.text())[:200]
        raise RuntimeError(f"server answered {resp.status} to {resp.method} "
                           f"{resp.url.path}: {text}")


@dataclass(frozen=True)
class Grant:
    """A slot the server granted, and what it said about the ward."""

    slot: str
    max_streams: int
    waited: float
    baseline_rtt: float | None
    rtt_bound: float | None


HELD = ("quiet_window", "budget", "ward_in_use")
"""Refusals by the plan: waited for only when they end within the slot wait."""


async def _acquire(session: aiohttp.ClientSession, base: str, wait: float,
                   override: bool = False, wait_for_holds: bool = True) -> Grant | Deferral:
    """A test slot from the server, or why the plan holds the test back."""
    t0, poll = time.monotonic(), 1.0
    params = {"override": "1"} if override else {}
    for _attempt in range(1000):  # bounded; the wait budget ends it long before
        async with session.post(base + SLOTS_PATH, params=params) as resp:
            if resp.status == 201:
                body = await resp.json()
                return Grant(body["slot"], int(body["max_streams"]), time.monotonic() - t0,
                             body.get("baseline_rtt_seconds"), body.get("rtt_bound_seconds"))
            if resp.status != 429:
                await _raise_for_status(resp)
            retry = float(resp.headers.get("Retry-After", "5"))
            answer = await resp.json()
            reason, text = answer.get("reason", "city_busy"), answer.get("error", "busy")
        left = wait - (time.monotonic() - t0)
        if reason in HELD and (retry > left or not wait_for_holds):
            return Deferral(reason=reason, retry_after_seconds=retry, detail=text)
        if left <= 0:
            if not wait_for_holds:  # a scheduled test: tried again in a few minutes
                return Deferral(reason=reason, retry_after_seconds=retry, detail=text)
            raise RuntimeError(f"no test slot within {wait:g} s ({text})")
        # Retry-After is when the slot expires at the latest; its holder usually ends sooner.
        await asyncio.sleep(min(left, retry, poll) * random.uniform(0.5, 1.0))
        poll *= 2
    raise RuntimeError("no test slot")


def own_bytes() -> int:
    """Bytes this PC has sent and received, every interface but loopback (the kernel's
    counters, through psutil)."""
    import psutil

    return sum(c.bytes_sent + c.bytes_recv
               for nic, c in psutil.net_io_counters(pernic=True).items()
               if not nic.startswith("lo"))


async def own_traffic(seconds: float) -> float:
    """This PC's traffic in bits per second over `seconds`, both directions."""
    before, t0 = own_bytes(), time.monotonic()
    await asyncio.sleep(seconds)
    return 8 * (own_bytes() - before) / (time.monotonic() - t0)


async def run(config: Config, context: Context) -> Result:
    """Measure download and upload goodput against the agent's server, unless the plan or
    the link says not now."""
    if context.server is None:
        raise ValueError("the bandwidth check needs the agent's server (server_url)")
    import aiohttp  # here: ~13 MiB, for a check the agent runs in a child process
    base = context.server.url.rstrip("/")
    # The plan's refusals come back in the language the technician reads.
    headers = {"Authorization": f"Bearer {context.server.token}",
               "Accept-Language": i18n.language()}
    sockets = SocketLog()
    connector = aiohttp.TCPConnector(ssl=server_tls(context.server.ca_file),
                                     limit=config.streams + 2, socket_factory=sockets)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=15)
    async with aiohttp.ClientSession(base_url=None, headers=headers, connector=connector,
                                     timeout=timeout, auto_decompress=False) as session:
        grant = await _acquire(session, base, config.slot_wait_seconds, config.override,
                               config.wait_for_holds)
        if isinstance(grant, Deferral):
            return Result(server=base, idle_rtt_median_seconds=None, slot_wait_seconds=0.0,
                          directions=[], deferred=grant)
        deferred: Deferral | None = None
        try:
            test = Test(config, context, session, base, grant.slot, grant.max_streams,
                        sockets=sockets)
            idle_probes = latency.probe(test.host, "tcp", count=5, interval=0.1, timeout=2.0,
                                        port=test.port)
            own, probes = await asyncio.gather(own_traffic(config.busy_sample_seconds),
                                               idle_probes)
            answered = [r for r in probes if r is not None]
            idle = quantile(answered, 0.5)
            jitter = aimdef.jitter(answered)
            deferred = None if config.override else _busy(config, own, idle, grant.baseline_rtt)
            if idle is not None and grant.rtt_bound is not None and idle < grant.rtt_bound:
                test.rtt_bound = grant.rtt_bound  # above it already, a call suffers anyway
            directions = [] if deferred else await _directions(test, config)
        finally:
            params = {"deferred": deferred.reason} if deferred else {}
            async with session.delete(f"{base}{SLOTS_PATH}/{grant.slot}", params=params):
                pass
    return Result(server=base, idle_rtt_median_seconds=idle, slot_wait_seconds=grant.waited,
                  directions=directions, deferred=deferred, own_bits_per_second=own,
                  baseline_rtt_seconds=grant.baseline_rtt, idle_jitter_seconds=jitter,
                  aim=aim_scores(idle, jitter, directions))


def aim_scores(idle: float | None, jitter: float | None,
               directions: list[DirectionResult]) -> list[aimdef.Score]:
    """AIM's three experiences from this test: unloaded latency and jitter from the idle
    probes, the loaded-latency increase from the load probes' medians, throughput from the
    goodputs. No packet-loss measurement here: AIM then counts 0 points for it."""
    by = {d.direction: d for d in directions}
    loaded = [d.rtt_under_load_median_seconds for d in directions
              if d.rtt_under_load_median_seconds is not None]
    figures = aimdef.Measurements(
        latency_ms=None if idle is None else idle * 1e3,
        jitter_ms=None if jitter is None else jitter * 1e3,
        loaded_latency_increase_ms=None if idle is None or not loaded
        else max(0.0, max(loaded) - idle) * 1e3,  # noise can make it negative: same points
        download_bps=by["download"].bytes_per_second * 8 if "download" in by else None,
        upload_bps=by["upload"].bytes_per_second * 8 if "upload" in by else None)
    return aimdef.scores(figures)


async def _directions(test: Test, config: Config) -> list[DirectionResult]:
    done = []
    for direction in config.directions:
        done.append(await test.run(direction))
        if done[-1].stop_reason == "rtt_bound":
            break  # the link cannot take the test without harming a call: not the rest
    return done


def _busy(config: Config, own: float, idle: float | None,
          baseline: float | None) -> Deferral | None:
    """Whether the link is in use: this PC's own traffic, or the RTT above the baseline."""
    if own > config.busy_own_bits_per_second:
        return Deferral(reason="own_traffic", retry_after_seconds=600.0, detail=_(
            "this PC moves {own:.1f} Mbit/s of its own (a call?), above {limit:g}").format(
                own=own / 1e6, limit=config.busy_own_bits_per_second / 1e6))
    if idle is not None and baseline is not None:
        limit = baseline * (1 + config.busy_rtt_ratio) + config.busy_rtt_margin_seconds
        if idle > limit:
            return Deferral(reason="rtt_inflation", retry_after_seconds=600.0, detail=_(
                "RTT to the server {idle:.1f} ms, above the ward's idle {baseline:.1f} ms "
                "(limit {limit:.1f} ms): the link is in use").format(
                    idle=idle * 1e3, baseline=baseline * 1e3, limit=limit * 1e3))
    return None


RATE = MetricSpec("wardready_bandwidth_bytes_per_second",
                  "Goodput of the latest throughput test (after warm-up).", ("direction",))
SPENT = MetricSpec("wardready_bandwidth_test_bytes",
                   "Bytes the latest throughput test moved, warm-up included.", ("direction",))
DURATION = MetricSpec("wardready_bandwidth_test_duration_seconds",
                      "How long the latest throughput test ran.", ("direction",))
CONVERGED = MetricSpec("wardready_bandwidth_converged",
                       "1 if the latest test stopped because its estimate had settled.",
                       ("direction",))
LOADED_RTT = MetricSpec("wardready_bandwidth_rtt_under_load_seconds",
                        "TCP connect time to the server while the transfer ran.",
                        ("direction", "statistic"))
IDLE_RTT = MetricSpec("wardready_bandwidth_idle_rtt_seconds",
                      "Median TCP connect time to the server before the test.")
RETRANSMITTED = MetricSpec("wardready_bandwidth_retransmitted_ratio",
                           "Retransmitted bytes / bytes sent by the sender (the server for "
                           "download, this PC for upload), from TCP_INFO.", ("direction",))
TCP_LOSS = MetricSpec("wardready_bandwidth_tcp_loss_ratio",
                      "Retransmitted segments the receiver did not report as spurious "
                      "(DSACK) / data segments sent: the sender's estimate of the path's "
                      "loss under load, from TCP_INFO.", ("direction",))
RWND_LIMITED = MetricSpec("wardready_bandwidth_rwnd_limited_ratio",
                          "Share of the sender's busy time held by the receiver's TCP window "
                          "(TCP_INFO tcpi_rwnd_limited / tcpi_busy_time).", ("direction",))
SNDBUF_LIMITED = MetricSpec("wardready_bandwidth_sndbuf_limited_ratio",
                            "Share of the sender's busy time held by its send buffer "
                            "(TCP_INFO tcpi_sndbuf_limited / tcpi_busy_time).", ("direction",))
RPM = MetricSpec("wardready_bandwidth_responsiveness_rpm",
                 "Round trips per minute under the test's load (after "
                 "draft-ietf-ippm-responsiveness, TCP connect probes only); a reference "
                 "reading, not judged.", ("direction",))
METRICS = (RATE, SPENT, DURATION, CONVERGED, LOADED_RTT, IDLE_RTT, RETRANSMITTED,
           TCP_LOSS, RWND_LIMITED, SNDBUF_LIMITED, RPM, aimdef.POINTS,
           aimdef.CLASSIFICATION)


def samples(result: Result) -> Iterator[Sample]:
    if result.idle_rtt_median_seconds is not None:
        yield Sample(IDLE_RTT, (), result.idle_rtt_median_seconds)
    for d in result.directions:
        yield Sample(RATE, (d.direction,), d.bytes_per_second)
        yield Sample(SPENT, (d.direction,), d.bytes)
        yield Sample(DURATION, (d.direction,), d.seconds)
        yield Sample(CONVERGED, (d.direction,), 1 if d.stop_reason == "converged" else 0)
        for q, value in (("median", d.rtt_under_load_median_seconds),
                         ("p95", d.rtt_under_load_p95_seconds)):
            if value is not None:
                yield Sample(LOADED_RTT, (d.direction, q), value)
        for spec, value in ((RETRANSMITTED, d.retransmitted_ratio), (TCP_LOSS, d.loss_ratio),
                            (RWND_LIMITED, d.rwnd_limited_ratio),
                            (SNDBUF_LIMITED, d.sndbuf_limited_ratio),
                            (RPM, d.responsiveness_rpm)):
            if value is not None:
                yield Sample(spec, (d.direction,), value)
    yield from aimdef.samples(result.aim)


CHECK = CheckSpec("bandwidth", Config, Result, run, METRICS, samples, isolated=True)
