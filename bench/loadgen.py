"""A small HTTP/1.1 load generator for the server benchmarks.

Requests are encoded in advance, so each one costs the generator a write and a read: it stays
far cheaper than the server it measures. Two ways to drive:
- closed loop (`rate=None`): `connections` clients each send their next request as soon as the
  answer to the last one arrives; the rate found is the receiver's ceiling.
- open loop (`rate` per second): request i is due at start + i / rate whatever the answers
  do, and its latency counts from when it was due, so a stalled receiver shows as latency
  rather than as fewer requests (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

ANSWER_GRACE_SECONDS = 30.0
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


def post(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
         method: str = "POST") -> bytes:
    """One encoded HTTP/1.1 request (keep-alive)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Run:
    """What one drive measured."""

    requests: int
    """Requests answered."""
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(host: str, port: int, requests: Sequence[bytes], connections: int,
                rate: float | None = None, limit_seconds: float = math.inf) -> Run:
    """Send every request once over `connections` keep-alive connections, or as many as
    start within `limit_seconds` (a slow receiver); answers still awaited
    `ANSWER_GRACE_SECONDS` after that are given up (unanswered)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(range(len(requests)))
    loop_start = time.perf_counter()

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in queue:
                if time.perf_counter() - loop_start > limit_seconds:
                    break
                due = loop_start + i / rate if rate else time.perf_counter()
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(requests[i])
                head = await reader.readuntil(b"\r\n\r\n")
                length = _LENGTH.search(head)
                if length is None:
                    raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
                await reader.readexactly(int(length.group(1)))
                latencies.append(time.perf_counter() - due)
                status = int(head[9:12])
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    clients = [asyncio.create_task(client()) for _ in range(connections)]
    bound = limit_seconds + ANSWER_GRACE_SECONDS
    done, pending = await asyncio.wait(clients, timeout=None if math.isinf(bound) else bound)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # a client's error is the run's
    return Run(len(latencies), time.perf_counter() - loop_start, latencies, statuses)


def summary(run: Run) -> dict[str, float]:
    """Rate, median and tail latency of a run, in requests/s and milliseconds (NaN when
    nothing was answered)."""
    if not run.latencies:
        return {"rate": run.rate, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    return {"rate": run.rate, "p50_ms": statistics.median(run.latencies) * 1e3,
            "p99_ms": run.quantile(0.99) * 1e3, "max_ms": max(run.latencies) * 1e3}
