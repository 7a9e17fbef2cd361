"""Hostile connections against a real server process: more idle and half-sent connections
than it has open files, requests that never finish their headers, and malformed headers
carrying a bearer token (issue 22, items 1 and 5)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import fleet, flood, stack
from tests.test_server import report
from tests.test_server_durability import read_by_server
from wardready.agent.delivery import Sender
from wardready.core.api import REPORTS_PATH
from wardready.core.errors import AttemptFailed
from wardready.server.connections import reserved_files
from wardready.server.serving import ACCEPT_ERROR, AcceptErrors

FILE_LIMIT = 1024
"""systemd's default, under which 1,124 idle connections shut every agent out."""
FLOOD = 1300
"""Hostile connections held open at once: more than the server has files."""
FLOOD_SECONDS = 15.0
ANSWER_WITHIN = 10.0
LOG_GROWTH_LIMIT = 1 << 20


def limited_server(workdir: Path, port: int, nofile: str, **extra: object) -> stack.Process:
    """A server process started under `prlimit --nofile=SOFT:HARD`."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) not found")
    config = fleet.write_server_config(workdir, port, **extra)
    server = stack.Process("wardready-server", [
        prlimit, f"--nofile={nofile}", "--", stack.executable("wardready-server"), "serve",
        "--config", str(config)], workdir / "server.log")
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
    except BaseException:
        server.stop()
        raise
    return server


def server_metrics(port: int) -> dict[str, float]:
    body = stack.http_get(f"http://127.0.0.1:{port}/metrics")
    return fleet.metric_values(body) if body else {}


@dataclass
class Reporter:
    """An agent posting a report every `interval` seconds with the agent's own sender,
    retrying each until it is acknowledged, as the agent's spool does."""

    port: int
    token: str
    host: str
    interval: float = 0.3
    generated: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def post(self, sender: Sender | None = None) -> float:
        """Deliver one new report; the seconds from the first attempt to its 2xx. Without
        `sender`, on a connection of its own, as an agent reporting after a while does."""
        if sender is None:
            sender = self.sender()
            try:
                return self.post(sender)
            finally:
                sender.close()
        body = report("sai-gon", self.host)
        self.generated.append(body["id"])
        payload = json.dumps(body).encode()
        started = time.monotonic()
        for _ in range(200):  # bounded; the flood ends long before
            try:
                status, answer, *_ = sender.post(payload)
            except AttemptFailed:
                self.failures += 1
                time.sleep(0.1)
                continue
            assert status in (200, 201), answer
            self.acked.append(body["id"])
            elapsed = time.monotonic() - started
            self.latencies.append(elapsed)
            return elapsed
        raise AssertionError(f"report {body['id']} never acknowledged")

    def sender(self) -> Sender:
        return Sender(f"http://127.0.0.1:{self.port}{REPORTS_PATH}",
                      {"Authorization": f"Bearer {self.token}",
                       "Content-Type": "application/json"}, ANSWER_WITHIN, None)

    def run(self) -> None:
        sender = self.sender()
        try:
            while not self.stop.wait(self.interval):
                self.post(sender)
        finally:
            sender.close()


def test_agents_get_in_while_more_connections_than_open_files_idle_or_dribble(
        tmp_path: Path) -> None:
    """1,300 idle and half-sent connections against a server with 1,024 files: reports are
    still answered within 10 s, none is lost, the log stays small, the server stays up."""
    port = stack.free_port()
    hosts = [f"pc-{i}" for i in range(4)]
    tokens = fleet.issue_tokens(fleet.write_server_config(tmp_path, port),
                                [("sai-gon", h) for h in (*hosts, "agent")])
    server = limited_server(tmp_path, port, f"{FILE_LIMIT}:{FILE_LIMIT}")
    log_before = server.log.stat().st_size
    reporters = [Reporter(port, t, h) for t, h in zip(tokens, hosts, strict=False)]
    agent = Reporter(port, tokens[-1], "agent")
    threads = [threading.Thread(target=r.run) for r in reporters]
    hostile = flood.Flood(port, FLOOD, seconds=FLOOD_SECONDS, max_opens=40_000)
    try:
        try:
            for thread in threads:
                thread.start()
            hostile.start()
            stack.wait_until(f"more than {FILE_LIMIT} hostile connections open at once",
                             lambda: hostile.stats.peak_open > FILE_LIMIT, 20, server)
            # The server holds fewer than that: it closed the ones that waited longest.
            stack.wait_until("the server to shed connections",
                             lambda: server_metrics(port).get(
                                 'wardready_server_connections_shed_total{reason="capacity"}'),
                             10, server)
            # An agent reporting, on a new connection each time, until the flood ends (past
            # the header timeout, so the flood's first connections were due to go anyway).
            while hostile.running():
                assert agent.post() < ANSWER_WITHIN
                hostile.finished.wait(0.5)
            assert len(agent.acked) >= 10
        finally:
            stats = hostile.stop()
            for r in reporters:
                r.stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert server.alive(), server.tail()
        assert stack.http_get(f"http://127.0.0.1:{port}/healthz") == b'{"status": "ok"}'
        assert agent.post() < ANSWER_WITHIN
        stack.wait_until("the flood's connections to be gone", lambda: server_metrics(port).get(
            "wardready_server_open_connections", 99) <= 2, 20, server)
        figures = server_metrics(port)
    finally:
        server.stop()
    growth = server.log.stat().st_size - log_before
    generated = [i for r in (*reporters, agent) for i in r.generated]
    stored = fleet.stored_ids(tmp_path / "server.db")
    assert len(stored) == len(set(stored)) == len(generated)
    assert set(stored) == set(generated)
    assert growth < LOG_GROWTH_LIMIT, server.tail()
    assert "cannot accept connections" not in server.log.read_text()  # no file ran out
    shed = {k: v for k, v in figures.items() if "shed_total" in k}
    assert figures["wardready_server_max_connections"] == FILE_LIMIT - reserved_files(FILE_LIMIT)
    latencies = sorted(x for r in (*reporters, agent) for x in r.latencies)
    print(f"flood: {stats}; server shed {shed}; {len(generated)} reports, slowest "
          f"{latencies[-1]:.2f} s, median {latencies[len(latencies) // 2]:.3f} s, "
          f"{sum(r.failures for r in (*reporters, agent))} failed attempts; "
          f"log grew {growth} bytes")


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (reading and discarding what it sends)."""
    started = time.monotonic()
    sock.settimeout(limit)
    while sock.recv(4096):
        pass
    return time.monotonic() - started


def test_connections_that_bring_no_request_in_time_are_closed_and_counted(
        tmp_path: Path) -> None:
    """Silent, dribbling and idle kept-alive connections are closed at their deadlines; the
    open-files limit is raised to the hard limit and sizes the capacity."""
    port = stack.free_port()
    server = limited_server(tmp_path, port, "1024:2048", header_timeout_seconds=1.0,
                            keepalive_timeout_seconds=2.0)
    try:
        assert "open-files limit raised from 1024 to 2048" in server.log.read_text()
        silent = socket.create_connection(("127.0.0.1", port))
        assert 0.8 < closed_after(silent, 5) < 2.5
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /hea")
        assert 0.8 < closed_after(slow, 5) < 2.5
        kept = socket.create_connection(("127.0.0.1", port))
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(5)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        assert 1.8 < closed_after(kept, 6) < 3.5
        # A request begun late on a kept-alive connection gets the header timeout from its
        # first byte, not the rest of the keep-alive time.
        late = socket.create_connection(("127.0.0.1", port))
        late.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        late.settimeout(5)
        assert late.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
        late.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert 0.8 < closed_after(late, 5) < 1.4
        figures = server_metrics(port)
    finally:
        server.stop()
    for sock in (silent, slow, kept, late):
        sock.close()
    assert figures['wardready_server_connections_shed_total{reason="silent"}'] == 1
    assert figures['wardready_server_connections_shed_total{reason="slow_request"}'] == 2
    assert figures['wardready_server_connections_shed_total{reason="capacity"}'] == 0
    assert figures["wardready_server_max_connections"] == 2048 - reserved_files(2048)


def server_side_connections(port: int) -> int:
    """Connections the server's kernel holds on `port`, established or closed by the
    client only (from /proc/net/tcp; 01 ESTABLISHED, 08 CLOSE_WAIT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] in ("01", "08"):
            count += 1
    return count


def test_past_capacity_a_waiting_connection_goes_never_one_mid_request(
        tmp_path: Path) -> None:
    """With every connection busy with a request, a new one is refused; once one of them
    has its answer and waits, a new one takes its place. Every request is answered."""
    port = stack.free_port()
    capacity = 16
    config = fleet.write_server_config(tmp_path, port, max_connections=capacity)
    tokens = fleet.issue_tokens(config, [("sai-gon", f"pc-{i}") for i in range(capacity)])
    server = limited_server(tmp_path, port, "1024:1024", max_connections=capacity)
    bodies = [json.dumps(report("sai-gon", f"pc-{i}")).encode() for i in range(capacity)]
    busy = []
    try:
        for token, body in zip(tokens, bodies, strict=True):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall((f"POST {REPORTS_PATH} HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {token}\r\nContent-Type: application/json"
                          f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body[:10])
            busy.append(sock)
        stack.wait_until("the server to read every request's headers", lambda: all(
            read_by_server(s.getsockname()[1], port) for s in busy)
            and server_side_connections(port) == capacity, 10, server, interval=0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as newcomer:
            assert closed_after(newcomer, 5) < 1.0  # refused: every other one is mid-request
        busy[0].sendall(bodies[0][10:])
        assert busy[0].recv(4096).startswith(b"HTTP/1.1 201")
        # That one now waits for another request: a newcomer takes its place.
        assert (stack.http_get(f"http://127.0.0.1:{port}/healthz")) == b'{"status": "ok"}'
        assert closed_after(busy[0], 5) < 1.0
        for sock, body in zip(busy[1:], bodies[1:], strict=True):
            sock.sendall(body[10:])
            assert sock.recv(4096).startswith(b"HTTP/1.1 201")
        figures = server_metrics(port)
    finally:
        for sock in busy:
            sock.close()
        server.stop()
    assert figures['wardready_server_connections_shed_total{reason="refused"}'] == 1
    assert figures['wardready_server_connections_shed_total{reason="capacity"}'] == 1
    assert len(fleet.stored_ids(tmp_path / "server.db")) == capacity


MALFORMED = {
    "NUL at the end": "Authorization: Bearer {token}\x00",
    "vertical tab at the end": "Authorization: Bearer {token}\x0b",
    "bare CR": "Authorization: Bearer {token}\rX-Next: 1",
    "over 8,190 bytes": "Authorization: Bearer {token}" + "a" * 8200,
}


def raw_request(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection; the server's answer, head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
    return head + b"\r\n\r\n" + body


def test_malformed_headers_never_echo_the_token_in_the_reply_or_the_log(
        tmp_path: Path) -> None:
    port = stack.free_port()
    config = fleet.write_server_config(tmp_path, port)
    (token,) = fleet.issue_tokens(config, [("sai-gon", "pc-1")])
    server = stack.start_server(config, tmp_path)
    secret = token.split(".", 1)[1]
    answers = {}
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        for name, header in MALFORMED.items():
            answers[name] = raw_request(port, (
                f"POST {REPORTS_PATH} HTTP/1.1\r\nHost: x\r\n{header.format(token=token)}\r\n"
                "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").encode())
        answers["request line over 8,190 bytes"] = raw_request(port, (
            f"GET /{token}{'a' * 8200} HTTP/1.1\r\nHost: x\r\n\r\n").encode())
        answers["invalid UTF-8 in the token"] = raw_request(port, (
            f"POST {REPORTS_PATH} HTTP/1.1\r\nHost: x\r\n").encode()
            + b"Authorization: Bearer " + token.encode() + b"\xff\r\n"
            + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        still = Reporter(port, token, "pc-1")
        still.post()  # still serving
        figures = server_metrics(port)
    finally:
        server.stop()
    log = server.log.read_text()
    for name, answer in answers.items():
        status = int(answer.split(b" ", 2)[1])
        assert status >= 400, (name, answer[:200])
        if name != "invalid UTF-8 in the token":  # refused by authentication, not the parser
            assert status == 400, (name, answer[:200])
            assert answer.endswith(b'"}') and b'{"error": "' in answer, (name, answer[:200])
        assert secret[:12].encode() not in answer, name
    assert secret[:12] not in log
    assert "aiohttp.server" not in log  # aiohttp's traceback quoting the header is gone
    assert figures['wardready_server_malformed_requests_total{reason="header"}'] == 3
    assert figures['wardready_server_malformed_requests_total{reason="too_long"}'] == 2
    assert fleet.stored_ids(tmp_path / "server.db") == still.acked


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failed_accepts_are_logged_once_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    """asyncio reports a failed accept up to 128 times per attempt: one line per 10 s."""
    clock = FakeClock()
    handler = AcceptErrors(704, clock)
    loop = asyncio.new_event_loop()
    error = OSError(errno.EMFILE, "Too many open files")
    try:
        with caplog.at_level(logging.INFO, logger="wardready.server.serving"):
            for _ in range(3):
                for _ in range(5000):
                    handler(loop, {"message": ACCEPT_ERROR, "exception": error})
                clock.now += 10.0
            handler(loop, {"message": ACCEPT_ERROR, "exception": error})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert lines[0].startswith("cannot accept connections: Too many open files; failed "
                               "accepts since the last such line: 1;")
    assert "line: 5000;" in lines[1] and "at most 704 connections" in lines[1]
