"""Hostile connections to a server on loopback: idle ones, and ones that send half a request
a byte at a time, kept open (reopened when the server closes them) for a bounded time.

Used by tests/test_hostile_connections.py and `python -m bench.connection_flood`.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

MODES = ("silent", "request_line", "headers")
"""`silent` sends nothing; `request_line` sends half a request line, then a byte a second;
`headers` sends the request line and a header, then a byte a second of the next one."""
OPENING = {"silent": b"", "request_line": b"POST /api/v1/rep",
           "headers": b"POST /api/v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\n"}
DRIBBLE = b"X-Slow: " + b"s" * 120
"""What a slow connection goes on sending, a byte a second; never a complete line."""


@dataclass
class FloodStats:
    opened: int = 0
    closed_by_server: int = 0
    connect_failures: int = 0
    peak_open: int = 0
    open_now: int = 0
    by_mode: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))


@dataclass
class _Conn:
    sock: socket.socket
    mode: str
    sent: int = 0


class Flood:
    """`count` connections to 127.0.0.1:`port` held open until `stop()` or `seconds` pass,
    opening at most `max_opens` in all (each the server closes is opened again). Runs on a
    thread of its own; needs about `count` + 20 open files in this process."""

    def __init__(self, port: int, count: int, seconds: float, max_opens: int,
                 connect_timeout: float = 2.0) -> None:
        self.port, self.count, self.seconds, self.max_opens = port, count, seconds, max_opens
        self.connect_timeout = connect_timeout
        self.stats = FloodStats()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._conns: dict[int, _Conn] = {}
        self._selector = selectors.DefaultSelector()
        self._next = 0

    def start(self) -> Flood:
        self._thread.start()
        return self

    def stop(self) -> FloodStats:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.stats

    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        next_dribble = time.monotonic() + 1.0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._top_up(deadline)
                for key, _ in self._selector.select(timeout=0.05):
                    self._readable(key.fd)
                if time.monotonic() >= next_dribble:
                    next_dribble += 1.0
                    self._dribble()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._selector.close()
            self.finished.set()

    def _top_up(self, deadline: float) -> None:
        """Open connections until `count` are open (or the budget is spent)."""
        while (len(self._conns) < self.count and self.stats.opened < self.max_opens
               and time.monotonic() < deadline and not self._stop.is_set()):
            mode = MODES[self._next % len(MODES)]
            self._next += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(("127.0.0.1", self.port))
                if OPENING[mode]:
                    sock.sendall(OPENING[mode])
            except OSError as exc:
                sock.close()
                self.stats.connect_failures += 1
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    raise
                return  # the server is not accepting now: try again on the next turn
            sock.setblocking(False)
            conn = _Conn(sock, mode)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ)
            self.stats.opened += 1
            self.stats.by_mode[mode] += 1
            self.stats.open_now = len(self._conns)
            self.stats.peak_open = max(self.stats.peak_open, self.stats.open_now)

    def _readable(self, fd: int) -> None:
        """The server answered or closed: either way this connection is done."""
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.stats.closed_by_server += 1
            self._close(conn)

    def _dribble(self) -> None:
        for conn in list(self._conns.values()):
            if conn.mode == "silent":
                continue
            try:
                conn.sock.send(DRIBBLE[conn.sent % len(DRIBBLE):][:1])
                conn.sent += 1
            except BlockingIOError:
                pass
            except OSError:
                self.stats.closed_by_server += 1
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            self._selector.unregister(conn.sock)
            self._conns.pop(fd, None)
        conn.sock.close()
        self.stats.open_now = len(self._conns)
