"""Start and stop a local wardready stack (server, agent, Prometheus) on loopback.

Used by the demo and the integration tests, so both exercise the same real processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lab import REPO
from wardready.core.errors import WardreadyError

PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
SERVER_PORT = 8470
"""The port the shipped prometheus.yml scrapes."""
T = TypeVar("T")


class StackError(WardreadyError):
    """A component of the local stack did not start or answer in time."""


LISTEN_PORTS = range(20000, 32768)
"""Below Linux's ephemeral range (32768-60999): a port chosen now and bound later by a child
process is not taken meanwhile as the source port of some outgoing connection."""


_handed_out: set[int] = set()
"""Ports free_port has returned in this process: twenty agent configs written before any
agent starts would otherwise draw the same free port about once in seventy fleets."""


def free_port() -> int:
    """A loopback port nobody listens on now, nor handed out before by this process, for a
    server started next."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # a crowded machine: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if a server could listen on the port now (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def executable(name: str) -> str:
    """A console script of this installation (beside the running Python), or one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found: install it (scripts/setup.sh does)")
    return found


LOGS: list[Path] = []
"""The log file of every Process started in this interpreter, in order: the test session
scans them for secrets at its end (tests/conftest.py)."""


class Process:
    """A child process whose output goes to a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        LOGS.append(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                          env={**os.environ, **(env or {})},
                                          start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def wait_until(what: str, probe: Callable[[], T | None], timeout: float,
               watch: Process | None = None, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail with the watched process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if watch is not None and not watch.alive():
            raise StackError(f"{watch.name} exited ({watch.popen.returncode}) while waiting for "
                             f"{what}:\n{watch.tail()}")
        value = probe()
        if value:
            return value
        time.sleep(interval)
    tail = f":\n{watch.tail()}" if watch is not None else ""
    raise StackError(f"timed out after {timeout:g} s waiting for {what}{tail}")


def http_get(url: str, timeout: float = 2.0) -> bytes | None:
    """The body of a 200 answer, or None for any error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read() if resp.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def start_server(config: Path, workdir: Path) -> Process:
    proc = Process("wardready-server",
                   [executable("wardready-server"), "serve", "--config", str(config)],
                   workdir / "server.log")
    return proc


def start_agent(config: Path, workdir: Path, env: dict[str, str] | None = None) -> Process:
    return Process("wardready-agent",
                   [executable("wardready-agent"), "run", "--config", str(config)],
                   workdir / "agent.log", env=env)


def debian_binary(name: str) -> str:
    """A program of the Debian package of the same name, on PATH."""
    binary = shutil.which(name)
    if binary is None:
        raise StackError(f"{name} not found: install the Debian package {name!r} "
                         "(scripts/setup.sh does, as root)")
    return binary


def start_prometheus(workdir: Path, port: int, config: Path = PROMETHEUS_CONFIG,
                     receiver: bool = False, flags: Sequence[str] = ()) -> Process:
    """A Prometheus on loopback; `receiver`: it takes remote write too (/api/v1/write);
    `flags`: more command-line flags."""
    binary = debian_binary("prometheus")
    proc = Process("prometheus", [
        binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
        "--rules.alert.resend-delay=1s", "--log.level=warn",
        *(["--web.enable-remote-write-receiver"] if receiver else []), *flags,
    ], workdir / "prometheus.log")
    wait_until("Prometheus to be ready", lambda: http_get(f"http://127.0.0.1:{port}/-/ready"),
               30, proc)
    return proc


def start_victoria_metrics(workdir: Path, port: int, flags: Sequence[str] = ()) -> Process:
    """A VictoriaMetrics single node on loopback: remote write at /api/v1/write, PromQL at
    /api/v1/query, raw samples at /api/v1/export; `flags`: more command-line flags."""
    binary = debian_binary("victoria-metrics")
    proc = Process("victoria-metrics", [
        binary, f"-storageDataPath={workdir / 'vm-data'}", f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=1y", "-loggerLevel=WARN", "-search.latencyOffset=0s", *flags],
        workdir / "victoria-metrics.log")
    wait_until("VictoriaMetrics to be ready", lambda: http_get(
        f"http://127.0.0.1:{port}/health"), 30, proc)
    return proc


def prometheus_query(port: int, query: str) -> list[dict[str, Any]]:
    """An instant query's result vector (empty on any error)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    body = http_get(url)
    if body is None:
        return []
    answer = json.loads(body)
    result = answer.get("data", {}).get("result", [])
    return result if isinstance(result, list) else []


def issue_token(server_config: Path, ward: str, host: str) -> str:
    out = subprocess.run([executable("wardready-server"), "tokens", "issue", "--config",
                          str(server_config), "--ward", ward, "--host", host],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise StackError(f"issuing a token failed: {out.stderr.strip()}")
    return out.stdout.strip()
