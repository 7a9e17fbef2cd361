"""Download and upload throughput against the agent's own server, and latency under load.

Several parallel TCP streams move incompressible bytes; the first part (TCP slow start and the
filling of queues) is discarded; the test stops as soon as the estimate has settled, or at its
budget in seconds or bytes, whichever comes first. So a 100 Mbit/s link is not flooded for
long and a 1 Mbit/s commune link is not tied up for minutes. While the transfer runs, TCP
connect times to the server measure latency under load: what decides whether a video call
survives someone uploading a scan.
"""

from __future__ import annotations

import asyncio
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
from wardready.core.api import DOWNLOAD_PATH, SLOT_HEADER, SLOTS_PATH, UPLOAD_PATH
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
    """How long to wait for the server to grant a test slot (ward or city busy)."""
    load_probe_interval_seconds: float = Field(default=0.2, gt=0)


class DirectionResult(ResultModel):
    direction: Direction
    bytes_per_second: float
    """Goodput over the measured part (after warm-up)."""
    bytes: int
    """Everything moved, warm-up included: what the test cost the link."""
    seconds: float
    warmup_seconds: float
    measured_seconds: float
    stop_reason: Literal["converged", "time_budget", "byte_budget", "server_cap"]
    streams: int
    rtt_under_load_median_seconds: float | None
    rtt_under_load_p95_seconds: float | None
    load_probes: int
    load_probes_lost: int


class Result(CheckResult):
    server: str
    idle_rtt_median_seconds: float | None
    slot_wait_seconds: float
    directions: list[DirectionResult] = Field(max_length=2)


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
                 base: str, slot: str, max_streams: int) -> None:
        self.config, self.context, self.session = config, context, session
        self.base, self.slot = base, slot
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
        t0 = time.monotonic()  # also when the first upload request leaves, to map clocks
        tasks = [asyncio.create_task(transfer(share, moved, stop)) for _ in range(self.streams)]
        prober = asyncio.create_task(self._probe_load(rtts, stop))
        reason = "time_budget"
        try:
            while time.monotonic() - t0 < config.max_seconds:
                await asyncio.sleep(SAMPLE_SECONDS)
                estimator.add(time.monotonic(), moved[0])
                if estimator.converged():
                    reason = "converged"
                    break
                if moved[0] >= share * self.streams:
                    reason = "byte_budget"
                    break
                if all(t.done() for t in tasks):
                    reason = "server_cap"  # the server ended every stream: its caps
                    break
        finally:
            stop.set()
            stopped_at = time.monotonic()
            if direction == "upload":
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
        if direction == "upload":
            # What the server received, by its clock, until the agent stopped: the agent's
            # own send buffers excluded. Its clock runs from when the first stream arrived.
            timeline, arrived = await self._upload_timeline()
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
            load_probes_lost=len(rtts) - len(answered))

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

    async def _upload_timeline(self) -> tuple[list[tuple[float, int]], int]:
        """The slot's upload as the server received it: (server time, bytes so far), and
        the bytes that arrived."""
        async with self.session.get(f"{self.base}{SLOTS_PATH}/{self.slot}") as resp:
            await _raise_for_status(resp)
            body = await resp.json()
        return [(float(t), int(b)) for t, b in body["upload_timeline"]], int(body["uploaded"])

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
        interval = self.config.load_probe_interval_seconds
        rtts.extend(await latency.probe(
            self.host, "tcp", count=int(self.config.max_seconds / interval) + 1,
            interval=interval, timeout=2.0, port=self.port, stop=stop))


def _socket(addr: Any) -> socket.socket:
    family, kind, proto, _, _ = addr
    sock = socket.socket(family, kind, proto)
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS; not Windows
    if lowat is not None:
        sock.setsockopt(socket.IPPROTO_TCP, lowat, NOTSENT_LOWAT_BYTES)
    return sock


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status >= 400:
        text = (await resp.text())[:200]
        raise RuntimeError(f"server answered {resp.status} to {resp.method} "
                           f"{resp.url.path}: {text}")


async def _acquire(session: aiohttp.ClientSession, base: str,
                   wait: float) -> tuple[str, int, float]:
    """A test slot from the server: (id, streams allowed, seconds waited)."""
    t0, poll = time.monotonic(), 1.0
    for _ in range(1000):  # bounded; the wait budget ends it long before
        async with session.post(base + SLOTS_PATH) as resp:
            if resp.status == 201:
                body = await resp.json()
                return body["slot"], int(body["max_streams"]), time.monotonic() - t0
            if resp.status != 429:
                await _raise_for_status(resp)
            retry = float(resp.headers.get("Retry-After", "5"))
            reason = (await resp.json()).get("error", "busy")
        left = wait - (time.monotonic() - t0)
        if left <= 0:
            raise RuntimeError(f"no test slot within {wait:g} s ({reason})")
        # Retry-After is when the slot expires at the latest; its holder usually ends sooner.
        await asyncio.sleep(min(left, retry, poll) * random.uniform(0.5, 1.0))
        poll *= 2
    raise RuntimeError("no test slot")


async def run(config: Config, context: Context) -> Result:
    """Measure download and upload goodput against the agent's server."""
    if context.server is None:
        raise ValueError("the bandwidth check needs the agent's server (server_url)")
    import aiohttp  # here: ~13 MiB, for a check the agent runs in a child process
    base = context.server.url.rstrip("/")
    headers = {"Authorization": f"Bearer {context.server.token}"}
    connector = aiohttp.TCPConnector(ssl=server_tls(context.server.ca_file),
                                     limit=config.streams + 2, socket_factory=_socket)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=15)
    async with aiohttp.ClientSession(base_url=None, headers=headers, connector=connector,
                                     timeout=timeout, auto_decompress=False) as session:
        slot, max_streams, waited = await _acquire(session, base, config.slot_wait_seconds)
        try:
            test = Test(config, context, session, base, slot, max_streams)
            idle = [r for r in await latency.probe(test.host, "tcp", count=5, interval=0.1,
                                                   timeout=2.0, port=test.port) if r is not None]
            directions = [await test.run(d) for d in config.directions]
        finally:
            async with session.delete(f"{base}{SLOTS_PATH}/{slot}"):
                pass
    return Result(server=base, idle_rtt_median_seconds=quantile(idle, 0.5),
                  slot_wait_seconds=waited, directions=directions)


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
METRICS = (RATE, SPENT, DURATION, CONVERGED, LOADED_RTT, IDLE_RTT)


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


CHECK = CheckSpec("bandwidth", Config, Result, run, METRICS, samples, isolated=True)
