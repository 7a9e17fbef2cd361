"""Speed-test endpoint throughput on loopback against iperf3, the server on one CPU core.

A real `wardready-server` runs pinned to core 1 (taskset); the clients run on core 0. For each
direction it measures, the order alternating from run to run:

- the endpoint with an efficient client: plain sockets in threads, 1 MiB reads or 1 MiB
  chunked-encoding frames, as many streams as the bandwidth check opens, after taking a slot
  as the agent does (`POST /api/v1/speedtest/slots`);
- the endpoint with the agent's own code (`checks.bandwidth.run`, aiohttp), what wards use;
- iperf3 on loopback (its server pinned to core 1, its client to core 0, as many streams);
- with `--baseline REV`, the endpoint again (efficient client) on a second server whose
  server/speedtest.py is the one of git revision REV: the before/after of a change to it.

It reports the medians over the runs, the ratio to iperf3, whether the targets of issue 9 are
met (at least 2 Gbit/s and at least 25 % of iperf3's loopback figure), and how busy the server
was, from /proc: CPU seconds per GB moved, which other load on the machine distorts less than
goodput.

    .venv/bin/python -m bench.speedtest                     # 3 runs, about 3 minutes
    .venv/bin/python -m bench.speedtest --baseline a906aba  # and the endpoint as of a906aba
    .venv/bin/python -m bench.speedtest --quick             # 1 short run, about 20 seconds

Needs Linux, 2 cores or more, iperf3 and taskset (scripts/setup.sh installs iperf3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import yaml

from bench import proc
from lab import stack
from wardready.checks import bandwidth
from wardready.checks.base import Context, ServerLink

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE, CLIENT_CORE = 1, 0
TARGET_BITS_PER_SECOND = 2e9
TARGET_SHARE_OF_IPERF3 = 0.25
IO_BYTES = 1 << 20
"""Client reads and upload frames: large, so the client's per-call cost stays negligible."""
WARD, HOST = "sai-gon", "bench-speedtest"
QUIET_BUSY, QUIET_WAIT_SECONDS = 0.25, 20.0
"""Before each measurement, wait (at most that long) until each core is busy at most that
much with other work: other benchmarks on the machine halve the figures otherwise."""
FIX = ("No fix: both targets are met several times over. Profile of the server (py-spy, "
       "a906aba): download spends 62 % of its samples in the kernel's send(), 10 % copying "
       "each 64 KiB chunk out of the payload, most of the rest in aiohttp's chunked writer; "
       "upload 38 % in recv(), 43 % in aiohttp's HTTP parser (C; with --native, mostly a "
       "memcpy of each body piece), 9 % in the endpoint's own loop. Writing memoryview slices "
       "(no copy), or 256 KiB or 1 MiB chunks, changed nothing measurable (download, 7 "
       "alternating rounds, median server CPU s per GB: 0.269 as is, 0.274 memoryview, 0.294 "
       "256 KiB, 0.258 1 MiB), so the code stays as it is. Upload's cost varies between runs "
       "(0.17 to 0.7 CPU s per GB) with the server's minor page faults (up to 100,000 per GB: "
       "glibc hands back and faults in again the heap under the 256 KiB buffers asyncio and "
       "aiohttp allocate per read); a server started with MALLOC_TRIM_THRESHOLD_=67108864 "
       "MALLOC_MMAP_THRESHOLD_=4194304 had none and moved 24-30 Gbit/s at 0.18-0.34 s/GB in "
       "5 alternating runs (without: 16-24 Gbit/s at 0.33-0.49): a setting for the server's "
       "environment (its systemd unit), not for this endpoint.")
"""What the profile found and what was tried: measured by hand, the variants' servers side by
side as --baseline runs them; kept here so the section says it."""

Direction = Literal["download", "upload"]
DIRECTIONS: tuple[Direction, ...] = ("download", "upload")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a whole process (all its threads); None: this one."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    return proc.cpu_seconds(pid)


def core_busy_seconds(core: int) -> float:
    """CPU seconds a core spent on anything but idling (any process, interrupts), from
    /proc/stat; steal (the hypervisor's) counts as not ours either."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name == f"cpu{core}":
            user, nice, system, _idle, _iowait, irq, softirq = map(int, ticks[:7])
            return (user + nice + system + irq + softirq) / proc.CLOCK_TICKS
    raise RuntimeError(f"no cpu{core} in /proc/stat")


def wait_for_quiet() -> float:
    """Wait until both cores are idle enough (or QUIET_WAIT_SECONDS passed); how busy the
    busier one was. A busy client core matters too: a starved client trickles data in, and
    the server then spends more per byte on waking up for each small piece."""
    deadline, cores = time.monotonic() + QUIET_WAIT_SECONDS, (SERVER_CORE, CLIENT_CORE)
    while True:
        before = [core_busy_seconds(core) for core in cores]
        time.sleep(0.5)
        busy = max((core_busy_seconds(core) - b) / 0.5 for core, b in zip(cores, before,
                                                                          strict=True))
        if busy <= QUIET_BUSY or time.monotonic() >= deadline:
            return busy


@dataclass
class Figure:
    """One measurement: goodput, and how busy each side was meanwhile."""

    bits_per_second: float
    server_busy: float
    """CPU seconds per second of the server process (1.0 is its whole core)."""
    core_busy: float
    """The same for the server's core, whoever used it: above server_busy, other load."""
    client_busy: float
    server_seconds_per_gb: float
    """The server process's CPU seconds per 10^9 bytes moved."""
    note: str = ""


class Window:
    """CPU use of the server, its core and the client from now until `close`."""

    def __init__(self, server_pid: int, client_pid: int | None = None) -> None:
        self.server_pid, self.client_pid = server_pid, client_pid
        self.t0, self.cpu0 = time.monotonic(), self._cpu()

    def _cpu(self) -> tuple[float, float, float]:
        return (cpu_seconds(self.server_pid), core_busy_seconds(SERVER_CORE),
                cpu_seconds(self.client_pid))

    def close(self, moved_bytes: float, bits_per_second: float | None = None,
              note: str = "") -> Figure:
        """The figure for `moved_bytes` in the window (goodput: `bits_per_second` if the
        tool measured it itself)."""
        span = time.monotonic() - self.t0
        server, core, client = (b - a for a, b in zip(self.cpu0, self._cpu(), strict=True))
        rate = 8 * moved_bytes / span if bits_per_second is None else bits_per_second
        return Figure(rate, server / span, core / span, client / span,
                      server / (moved_bytes / 1e9) if moved_bytes else 0.0, note)


@contextmanager
def pinned(core: int) -> Iterator[None]:
    """Run this thread (and the threads and processes it starts) on one core only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Server:
    """A wardready server on loopback, pinned to SERVER_CORE, with caps that do not end a
    benchmark early (loopback moves the default 400 MiB budget in well under a second).
    With `code`, the packages there (e.g. an older server/) come before the installed ones."""

    def __init__(self, workdir: Path, code: Path | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = stack.free_port()
        config = workdir / "server.yml"
        config.write_text(yaml.safe_dump({
            "listen_port": self.port, "database": "server.db",
            "inventory": str(REPO / "inventory.yml"),
            "speedtest": {"slot_seconds": 600, "max_bytes_per_slot": 1 << 50}}))
        self.token = stack.issue_token(config, WARD, HOST)
        self.url = f"http://127.0.0.1:{self.port}"
        # taskset execs the server: the pid is the server's, and every thread it starts
        # inherits the affinity (pinning the pid afterwards would miss threads already up).
        self.process = stack.Process(
            "wardready-server", ["taskset", "-c", str(SERVER_CORE),
                                 stack.executable("wardready-server"), "serve", "--config",
                                 str(config), "--log-level", "WARNING"], workdir / "server.log",
            env={"PYTHONPATH": str(code)} if code else None)
        stack.wait_until("the server", lambda: stack.http_get(f"{self.url}/healthz"), 30,
                         self.process)

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    def _request(self, method: str, path: str) -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return bytes(resp.read())

    @contextmanager
    def slot(self) -> Iterator[str]:
        """A test slot, taken and released as the agent does."""
        slot = str(json.loads(self._request("POST", "/api/v1/speedtest/slots"))["slot"])
        try:
            yield slot
        finally:
            self._request("DELETE", f"/api/v1/speedtest/slots/{slot}")

    def stop(self) -> None:
        self.process.stop()


def baseline_code(revision: str, workdir: Path) -> Path:
    """The working tree's server package with server/speedtest.py as of `revision`."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:server/speedtest.py"],
                           capture_output=True, text=True, check=False)
    if shown.returncode != 0:
        raise RuntimeError(f"git show {revision}:server/speedtest.py: {shown.stderr.strip()}")
    shutil.copytree(REPO / "server", workdir / "server",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "server" / "speedtest.py").write_text(shown.stdout)
    return workdir


def _headers(server: Server, slot: str, request_line: str, *extra: str) -> bytes:
    lines = [request_line, f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.token}", f"X-Wardready-Slot: {slot}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_head(sock: socket.socket) -> bytes:
    """Read an HTTP response head and fail unless it is a 200; return what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("the server closed the connection before answering")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"server answered {head.splitlines()[0]!r}: {rest[:200]!r}")
    return rest


def _download_stream(server: Server, slot: str, moved: list[int], index: int,
                     stop: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_headers(server, slot,
                              f"GET /api/v1/speedtest/download?bytes={1 << 48} HTTP/1.1"))
        moved[index] += len(_read_head(sock))
        view = memoryview(bytearray(IO_BYTES))
        while not stop.is_set():
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError("the server ended the download early")
            moved[index] += n  # chunk framing included: 9 bytes per 64 KiB or more
        # Then drop the connection, as the agent does once it has measured enough.


FRAME = f"{IO_BYTES:x}\r\n".encode() + os.urandom(IO_BYTES) + b"\r\n"
"""One chunked-encoding frame of random bytes (the agent's uploads are chunked too)."""


def _upload_stream(server: Server, slot: str, moved: list[int], index: int,
                   stop: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_headers(server, slot, "POST /api/v1/speedtest/upload HTTP/1.1",
                              "Content-Type: application/octet-stream",
                              "Transfer-Encoding: chunked"))
        while not stop.is_set():
            sock.sendall(FRAME)
            moved[index] += IO_BYTES
        sock.sendall(b"0\r\n\r\n")  # a clean end: the server answers with what it received
        _read_head(sock)


def measure_endpoint(server: Server, direction: Direction, streams: int, warmup: float,
                     seconds: float) -> Figure:
    """Goodput of `streams` socket streams over `seconds` after `warmup`, counted here."""
    stream = _download_stream if direction == "download" else _upload_stream
    moved = [0] * streams  # one counter per thread: no lock needed
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(index: int) -> None:
        try:
            stream(server, slot, moved, index, stop)
        except Exception as exc:  # reported below, once the other streams have stopped
            errors.append(exc)
            stop.set()

    with server.slot() as slot:
        threads = [threading.Thread(target=guarded, args=(i,), daemon=True)
                   for i in range(streams)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(warmup)  # slow start, autotuning of the socket buffers
            window, before = Window(server.pid), sum(moved)
            time.sleep(seconds)
            figure = window.close(sum(moved) - before)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    if errors:
        raise RuntimeError(f"{direction} stream failed: {errors[0]!r}") from errors[0]
    return figure


def measure_check(server: Server, direction: Direction, max_seconds: float) -> Figure:
    """The agent's bandwidth check against the server, one direction: its own estimate, and
    CPU over the whole check (slot, idle probes, warm-up) against every byte it moved."""
    config = bandwidth.Config(directions=[direction], max_bytes=1 << 50,
                              max_seconds=max_seconds)
    window = Window(server.pid)
    result = asyncio.run(bandwidth.run(config, Context(server=ServerLink(server.url,
                                                                         server.token))))
    figure = result.directions[0]
    return window.close(figure.bytes, 8 * figure.bytes_per_second, figure.stop_reason)


def measure_iperf3(direction: Direction, streams: int, warmup: float,
                   seconds: float) -> Figure:
    """iperf3 on loopback: its server on SERVER_CORE sends (download, -R) or receives."""
    port = stack.free_port()
    server = subprocess.Popen(["taskset", "-c", str(SERVER_CORE), "iperf3", "-s", "-B",
                               "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stack.wait_until("iperf3 -s", lambda: not stack.port_is_free(port), 10,
                         interval=0.05)
        client = subprocess.Popen(
            ["taskset", "-c", str(CLIENT_CORE), "iperf3", "-c", "127.0.0.1", "-p", str(port),
             "-P", str(streams), "-t", f"{seconds:g}", "-O", f"{warmup:g}", "--json",
             *(["-R"] if direction == "download" else [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # CPU over the same window as the endpoint's (iperf3 -O omits the warm-up from its
        # figure); the ends of the window are those of the client, within milliseconds.
        time.sleep(warmup)
        window = Window(server.pid, client.pid)
        time.sleep(seconds)
        figure = window.close(0.0)
        out, err = client.communicate(timeout=60)
    finally:
        server.terminate()
        server.wait(10)
    report = json.loads(out or "{}")
    if client.returncode != 0 or "error" in report:
        raise RuntimeError(f"iperf3 failed: {report.get('error') or err.strip()}")
    figure.bits_per_second = float(report["end"]["sum_received"]["bits_per_second"])
    figure.server_seconds_per_gb = figure.server_busy / (figure.bits_per_second / 8e9)
    return figure


@dataclass
class Series:
    label: str
    figures: list[Figure]

    def median(self, of: Callable[[Figure], float]) -> float:
        return statistics.median(of(f) for f in self.figures)

    @property
    def gbits(self) -> float:
        return self.median(lambda f: f.bits_per_second) / 1e9


def table(results: dict[Direction, list[Series]]) -> list[str]:
    lines = ["| direction | client and server | Gbit/s (median) | runs, Gbit/s | of iperf3 | "
             "server process CPU | server core busy | server CPU s per GB | client CPU |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for direction, series in results.items():
        iperf3 = series[0].gbits
        for s in series:
            runs = ", ".join(f"{f.bits_per_second / 1e9:.2f}" for f in s.figures)
            notes = sorted({f.note for f in s.figures if f.note})
            if notes:
                runs += f" ({', '.join(notes)})"
            lines.append(
                f"| {direction} | {s.label} | {s.gbits:.2f} | {runs} | "
                f"{100 * s.gbits / iperf3:.0f} % | "
                f"{100 * s.median(lambda f: f.server_busy):.0f} % | "
                f"{100 * s.median(lambda f: f.core_busy):.0f} % | "
                f"{s.median(lambda f: f.server_seconds_per_gb):.3f} | "
                f"{100 * s.median(lambda f: f.client_busy):.0f} % |")
    return lines


def verdicts(results: dict[Direction, list[Series]]) -> list[str]:
    """Whether the endpoint (efficient client, current code) meets both targets."""
    lines = []
    for direction, series in results.items():
        iperf3, endpoint = series[0].gbits, series[1].gbits
        fast = endpoint * 1e9 >= TARGET_BITS_PER_SECOND
        share = endpoint / iperf3 >= TARGET_SHARE_OF_IPERF3
        lines.append(f"- {direction}: {endpoint:.2f} Gbit/s, {'met' if fast else 'MISSED'} "
                     f"(at least {TARGET_BITS_PER_SECOND / 1e9:g}); {100 * endpoint / iperf3:.0f}"
                     f" % of iperf3's {iperf3:.2f} Gbit/s, {'met' if share else 'MISSED'} "
                     f"(at least {100 * TARGET_SHARE_OF_IPERF3:.0f} %)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured seconds per transfer, after --warmup (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure the endpoint with server/speedtest.py as of REV")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 run of 2 s transfers")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.warmup = 1, 2.0, 0.5
    missing = [tool for tool in ("iperf3", "taskset", "git" if args.baseline else "")
               if tool and shutil.which(tool) is None]
    if missing or not Path("/proc/stat").exists() or \
            not {SERVER_CORE, CLIENT_CORE} <= os.sched_getaffinity(0):
        print(f"bench.speedtest: needs Linux, cores {CLIENT_CORE} and {SERVER_CORE}, and "
              f"{', '.join(missing) or 'iperf3 and taskset'}", file=sys.stderr)
        return 2
    streams = bandwidth.Config().streams
    check_seconds = bandwidth.Config().max_seconds if not args.quick else 3.0
    labels = {"iperf3": f"iperf3, {streams} streams",
              "endpoint": f"endpoint, {streams} socket streams",
              "check": f"endpoint, the agent's bandwidth check ({streams} streams)"}
    if args.baseline:
        labels["baseline"] = f"endpoint as of {args.baseline}, {streams} socket streams"
    figures: dict[tuple[Direction, str], list[Figure]] = {}
    started, contended = time.monotonic(), 0
    with tempfile.TemporaryDirectory(prefix="wardready-speedtest-") as tmp, \
            pinned(CLIENT_CORE):
        servers = {"endpoint": Server(Path(tmp) / "current")}
        try:
            if args.baseline:
                code = baseline_code(args.baseline, Path(tmp) / "baseline-code")
                servers["baseline"] = Server(Path(tmp) / "baseline", code)
            for run in range(args.runs):
                order = list(labels) if run % 2 == 0 else list(reversed(labels))
                for direction in DIRECTIONS:
                    for tool in order:
                        print(f"run {run + 1}/{args.runs}: {direction}, {labels[tool]} ...",
                              file=sys.stderr, flush=True)
                        busy = wait_for_quiet()
                        if busy > QUIET_BUSY:
                            contended += 1
                            print(f"  a core is still {100 * busy:.0f} % busy with other work: "
                                  "measuring anyway", file=sys.stderr)
                        if tool == "iperf3":
                            figure = measure_iperf3(direction, streams, args.warmup,
                                                    args.seconds)
                        elif tool == "check":
                            figure = measure_check(servers["endpoint"], direction,
                                                   check_seconds)
                        else:
                            figure = measure_endpoint(servers[tool], direction, streams,
                                                      args.warmup, args.seconds)
                        print(f"  {figure.bits_per_second / 1e9:.2f} Gbit/s, server "
                              f"{100 * figure.server_busy:.0f} % of its core (core "
                              f"{100 * figure.core_busy:.0f} % busy), "
                              f"{figure.server_seconds_per_gb:.3f} CPU s/GB",
                              file=sys.stderr, flush=True)
                        figures.setdefault((direction, tool), []).append(figure)
        finally:
            for server in servers.values():
                server.stop()
    results = {d: [Series(labels[t], figures[d, t]) for t in labels] for d in DIRECTIONS}
    command = shlex.join([".venv/bin/python", "-m", "bench.speedtest",
                          *(sys.argv[1:] if argv is None else argv)])
    print("## Speed-test endpoint against iperf3\n")
    print(f"`{command}` "
          f"({time.monotonic() - started:.0f} s), {date.today().isoformat()}, on this "
          f"{os.cpu_count()}-core machine: the server (wardready-server, or iperf3 -s) pinned "
          f"to core {SERVER_CORE}, the clients to core {CLIENT_CORE}; loopback, plain HTTP.\n")
    print(f"What is measured: goodput of {streams} parallel TCP streams (the bandwidth check's "
          f"default) over {args.seconds:g} s after {args.warmup:g} s of warm-up, median of "
          f"{args.runs} run{'s' if args.runs > 1 else ''} (the order alternates from run to "
          "run). *socket streams*: the download and upload endpoints, with a slot taken as "
          "the agent takes it, driven by plain sockets in threads (1 MiB reads; 1 MiB chunked "
          "frames), a client cheap enough not to be the bottleneck. *the agent's bandwidth "
          "check*: `checks.bandwidth.run` with its defaults but the byte budget, its own "
          f"estimate. *iperf3*: `iperf3 -P {streams}`, download with `-R` (its server sends). "
          "CPU from /proc over the measured seconds (the agent's check: over the whole check): "
          "server process CPU is its CPU seconds per second, server core busy the same for "
          "everything on its core (more than the process: other load, interrupts); CPU s per "
          "GB is the server process's per 10⁹ bytes moved, less distorted by other load than "
          "goodput (though a starved client, trickling data in, raises it).\n")
    for line in table(results):
        print(line)
    print(f"\nTargets (issue 9), for the endpoint on one core with the efficient client: at "
          f"least {TARGET_BITS_PER_SECOND / 1e9:g} Gbit/s and at least "
          f"{100 * TARGET_SHARE_OF_IPERF3:.0f} % of iperf3 on loopback.\n")
    for line in verdicts(results):
        print(line)
    total = sum(len(f) for f in figures.values())
    print(f"\n{contended} of {total} measurements began with a core more than "
          f"{100 * QUIET_BUSY:.0f} % busy with other work, after waiting up to "
          f"{QUIET_WAIT_SECONDS:g} s for both to calm down"
          + (" (other benchmarks): their figures are low." if contended else "."))
    print(f"\n{FIX}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
