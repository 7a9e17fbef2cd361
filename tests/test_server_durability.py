"""A report the server acknowledged is on disk, whether the server is killed or stopped."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from lab import fleet, stack
from tests.test_server import report

SENDERS = 8


def load(port: int, token: str, host: str, acked: list[str], stop: threading.Event) -> None:
    """Post reports back to back until stopped or the server goes away; record each 2xx."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        for _ in range(100_000):  # bounded; the server stops long before
            if stop.is_set():
                return
            body = report("sai-gon", host)
            conn.request("POST", "/api/v1/reports", json.dumps(body).encode(), headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status in (200, 201):
                acked.append(body["id"])
    except (OSError, http.client.HTTPException):
        return  # the server went away mid-request: that report was never acknowledged
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_every_acknowledged_report_survives_the_server_stopping(tmp_path: Path,
                                                                 sig: signal.Signals) -> None:
    port = stack.free_port()
    config = fleet.write_server_config(tmp_path, port)
    hosts = [f"pc-{i}" for i in range(SENDERS)]
    tokens = fleet.issue_tokens(config, [("sai-gon", h) for h in hosts])
    server = stack.start_server(config, tmp_path)
    acked: list[str] = []
    stop = threading.Event()
    senders = [threading.Thread(target=load, args=(port, t, h, acked, stop))
               for t, h in zip(tokens, hosts, strict=True)]
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        for sender in senders:
            sender.start()
        stack.wait_until("load", lambda: len(acked) > 300, 30, server)
        server.popen.send_signal(sig)
        code = server.popen.wait(timeout=40)
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=15)
        server.stop()
    stored = fleet.stored_ids(tmp_path / "server.db")
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged reports lost"
    assert len(stored) == len(set(stored))
    if sig == signal.SIGTERM:
        assert code == 0, server.tail()


def test_graceful_stop_finishes_a_request_already_in_flight(tmp_path: Path) -> None:
    """SIGTERM arrives while a report waits on a slow disk: it is still stored and acknowledged."""
    port = stack.free_port()
    config = fleet.write_server_config(tmp_path, port)
    (token,) = fleet.issue_tokens(config, [("sai-gon", "pc-1")])
    server = stack.start_server(config, tmp_path)
    body = report("sai-gon", "pc-1")
    replies: list[int] = []
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        # Another writer holds the database, so the server's commit has to wait for it.
        blocker = sqlite3.connect(tmp_path / "server.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.connect()
        ours = conn.sock.getsockname()[1]
        sent = threading.Event()
        sender = threading.Thread(
            target=lambda: replies.append(post(port, token, body, conn, sent)))
        sender.start()
        # SIGTERM only once the request is in flight: the server has read all of it.
        stack.wait_until("the server to read the whole request",
                         lambda: sent.is_set() and read_by_server(ours, port), 20, server,
                         interval=0.01)
        server.popen.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.alive(), "the server quit with a request still in flight"
        assert not replies, "the report was acknowledged before it was committed"
        blocker.execute("COMMIT")
        blocker.close()
        sender.join(timeout=10)
        assert server.popen.wait(timeout=30) == 0, server.tail()
    finally:
        server.stop()
    assert replies == [201]
    assert fleet.stored_ids(tmp_path / "server.db") == [body["id"]]


def post(port: int, token: str, body: dict[str, object],
         conn: http.client.HTTPConnection | None = None,
         sent: threading.Event | None = None) -> int:
    """POST a report; `sent` is set once the whole request is handed to the kernel."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/api/v1/reports", json.dumps(body).encode(),
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        if sent is not None:
            sent.set()
        return conn.getresponse().status
    finally:
        conn.close()


def read_by_server(client_port: int, server_port: int) -> bool:
    """Whether the server has read everything sent on this loopback TCP connection: the
    client's send queue is empty (the server's kernel acknowledged every byte) and so is
    the server's receive queue (the server's process read them). From /proc/net/tcp."""
    loopback = f"{int.from_bytes(socket.inet_aton('127.0.0.1'), sys.byteorder):08X}"
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        tx, rx = (int(q, 16) for q in fields[4].split(":"))
        queues[fields[1], fields[2]] = tx, rx
    client = queues.get((f"{loopback}:{client_port:04X}", f"{loopback}:{server_port:04X}"))
    server = queues.get((f"{loopback}:{server_port:04X}", f"{loopback}:{client_port:04X}"))
    return client is not None and server is not None and client[0] == 0 and server[1] == 0
