"""A call-shaped UDP stream across an emulated ward link, measured by iperf3 at its receivers.

    with TwoHostWardLink(LinkSpec(rate_mbit=20)) as link:
        call = Call.start(link, seconds=30)
        ...                                    # what the call must survive
        result = call.finish()
        result.download.loss, result.upload.worst("jitter_ms")

A ward's video conference sends and receives at once, so the call is two iperf3 UDP
streams between ward host A (`link.ward_ns`) and the city: city -> ward (`download`) and
ward -> city (`upload`), each with an iperf3 server in the city. Loss and jitter are
iperf3's own figures at the receiving end (the ward client with `-R` for download, the
city server's `-J` report for upload): lost datagrams by sequence number and the RFC 3550
jitter estimate, per second and for the whole call.

The shape (`CallShape`): 2.6 Mbit/s of 1,200-byte datagrams sent as 50 frames a second,
each a burst of about 5.4 datagrams (iperf3's `--pacing-timer 20000`: every 20 ms it sends
what the rate owes). That is how a conference's video leaves a sender: one frame every
frame interval, packetized into datagrams below the path MTU (WebRTC's 1,200 B). A
literal "50 packets a second at 2.6 Mbit/s" would be 6,500-byte datagrams, each split into
five IP fragments that live or die together; an evenly paced 270 datagrams a second would
hide the bursts a full bottleneck queue punishes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lab.netlab import WardLink, wait_listening

Direction = Literal["download", "upload"]
DIRECTIONS: tuple[Direction, ...] = ("download", "upload")
PORT = 5310
"""The download stream's iperf3 server listens here in the city, the upload's on PORT + 1."""


@dataclass(frozen=True)
class CallShape:
    """What the call sends each way."""

    rate_mbit: float = 2.6
    datagram_bytes: int = 1200
    frames_per_second: int = 50

    @property
    def datagrams_per_second(self) -> float:
        return self.rate_mbit * 1e6 / 8 / self.datagram_bytes

    def iperf3_args(self) -> list[str]:
        return ["-u", "-b", f"{self.rate_mbit * 1e6:.0f}", "-l", str(self.datagram_bytes),
                "--pacing-timer", str(round(1e6 / self.frames_per_second))]


@dataclass(frozen=True)
class Second:
    """One of iperf3's one-second intervals at the receiver; times on the wall clock."""

    start: float
    end: float
    packets: int
    """Datagrams the sender numbered in this interval (received + lost)."""
    lost: int
    jitter_ms: float
    """iperf3's running RFC 3550 estimate at the end of the interval."""

    @property
    def loss(self) -> float:
        return self.lost / self.packets if self.packets else 0.0

    def overlaps(self, windows: Iterable[tuple[float, float]], at_least: float = 0.25) -> bool:
        """Whether this second shares at least `at_least` s with any of `windows`. The
        default leaves out the slivers that come from where the clocks start: the intervals
        count from iperf3's own start, some milliseconds after `CallResult.started`."""
        return any(min(self.end, end) - max(self.start, start) >= at_least
                   for start, end in windows)


@dataclass(frozen=True)
class Trace:
    """One direction of the call as its receiver saw it."""

    direction: Direction
    seconds: tuple[Second, ...]
    packets: int
    lost: int
    out_of_order: int

    @property
    def loss(self) -> float:
        """Lost fraction over the whole call (iperf3's end-of-test figures)."""
        return self.lost / self.packets if self.packets else 0.0

    @property
    def jitter_ms(self) -> float:
        """Mean over the seconds of the per-second jitter (iperf3's end figure is only the
        estimate at the last packet)."""
        return sum(s.jitter_ms for s in self.seconds) / len(self.seconds)

    def worst(self, figure: Literal["loss", "jitter_ms"],
              seconds: Sequence[Second] | None = None) -> float:
        """The worst second's loss fraction or jitter, over `seconds` (all by default)."""
        chosen = self.seconds if seconds is None else seconds
        return max((getattr(s, figure) for s in chosen), default=0.0)

    def during(self, windows: Iterable[tuple[float, float]]) -> tuple[Second, ...]:
        """The seconds that overlap any of `windows` (wall-clock start, end)."""
        spans = list(windows)
        return tuple(s for s in self.seconds if s.overlaps(spans))

    def outside(self, windows: Iterable[tuple[float, float]]) -> tuple[Second, ...]:
        spans = list(windows)
        return tuple(s for s in self.seconds if not s.overlaps(spans))


def loss_of(seconds: Sequence[Second]) -> float:
    """Lost fraction over `seconds` together."""
    packets = sum(s.packets for s in seconds)
    return sum(s.lost for s in seconds) / packets if packets else 0.0


@dataclass(frozen=True)
class CallResult:
    shape: CallShape
    started: float
    """Wall-clock time the iperf3 clients were started; intervals count from here."""
    download: Trace
    upload: Trace

    def trace(self, direction: Direction) -> Trace:
        return self.download if direction == "download" else self.upload


class Call:
    """A running call between ward host A and the city; `finish()` waits for its end."""

    def __init__(self, link: WardLink, seconds: int, shape: CallShape, port: int) -> None:
        self.link, self.seconds, self.shape, self.port = link, seconds, shape, port
        self._servers: dict[Direction, subprocess.Popen[str]] = {}
        self._clients: dict[Direction, subprocess.Popen[str]] = {}
        self.started = 0.0

    @classmethod
    def start(cls, link: WardLink, seconds: int, shape: CallShape | None = None, *,
              port: int = PORT) -> Call:
        """Start both directions of a `seconds`-long call (returns once both run)."""
        call = cls(link, seconds, shape or CallShape(), port)
        try:
            call._start()
        except BaseException:
            call.stop()
            raise
        return call

    def _start(self) -> None:
        link = self.link
        for offset, direction in enumerate(DIRECTIONS):
            port = str(self.port + offset)
            # -J on the server: the upload's receiver report; the download's is the client's.
            self._servers[direction] = link.popen(
                link.city_ns, ["iperf3", "-s", "-1", "-J", "-B", link.city_ip, "-p", port],
                stdout=subprocess.PIPE if direction == "upload" else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, text=True)
        for offset in range(len(DIRECTIONS)):
            wait_listening(link, link.city_ns, self.port + offset)
        self.started = time.time()
        for offset, direction in enumerate(DIRECTIONS):
            argv = ["iperf3", "-c", link.city_ip, "-p", str(self.port + offset),
                    "-t", str(self.seconds), "-i", "1", "-J", *self.shape.iperf3_args(),
                    *(["-R"] if direction == "download" else [])]
            self._clients[direction] = link.popen(
                link.ward_ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> CallResult:
        """Wait for the call to end; the receivers' figures."""
        try:
            reports: dict[Direction, dict[str, Any]] = {}
            deadline = self.started + self.seconds + 30
            for direction in DIRECTIONS:
                client = self._clients[direction]
                out, err = client.communicate(timeout=max(deadline - time.time(), 1))
                if direction == "download":
                    reports[direction] = _report(out, err, "ward (download receiver)")
                else:
                    _report(out, err, "ward (upload sender)")
            server = self._servers["upload"]
            out, err = server.communicate(timeout=max(deadline - time.time(), 1))
            reports["upload"] = _report(out, err, "city (upload receiver)")
        finally:
            self.stop()
        return CallResult(self.shape, self.started,
                          *(_trace(d, reports[d], self.started) for d in DIRECTIONS))

    def stop(self) -> None:
        """End whatever of the call still runs (idempotent)."""
        for proc in (*self._clients.values(), *self._servers.values()):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _report(out: str, err: str, who: str) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"iperf3 in the {who}: no JSON ({e}); {err.strip()[-300:]}") from e
    if "error" in report:
        raise RuntimeError(f"iperf3 in the {who}: {report['error']}")
    return report


def _trace(direction: Direction, report: dict[str, Any], started: float) -> Trace:
    """The receiver's per-second intervals and end totals from an iperf3 -J report."""
    seconds = tuple(
        Second(start=started + i["sum"]["start"], end=started + i["sum"]["end"],
               packets=int(i["sum"]["packets"]), lost=int(i["sum"]["lost_packets"]),
               jitter_ms=float(i["sum"]["jitter_ms"]))
        for i in report["intervals"] if not i["sum"].get("sender", False))
    if not seconds:
        raise RuntimeError(f"iperf3 {direction}: no receiver intervals in its report")
    end = report["end"]["sum"]
    streams = report["end"]["streams"]
    return Trace(direction, seconds, packets=int(end["packets"]), lost=int(end["lost_packets"]),
                 out_of_order=sum(int(s["udp"].get("out_of_order", 0)) for s in streams))
