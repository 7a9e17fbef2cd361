"""Real SSH peers on loopback for the devices check: FakeNOS (emulated Cisco IOS and Arista EOS
answering with recorded outputs), a private OpenSSH server, a closed port and a silent listener.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fakenos import FakeNOS

from lab import REPO
from lab.stack import LOGS, free_port

LOOPBACK = "127.0.0.1"
DATA = REPO / "tests" / "data" / "devices"
SSHD = "/usr/sbin/sshd"
TEST_USER = "wardready-sshtest"
START_SECONDS = 5.0
PASSWORDS: set[str] = set()
"""Every password a peer of this interpreter was given: the test session checks that none
reached a log (tests/conftest.py)."""


def wait_listening(port: int, seconds: float = START_SECONDS) -> bool:
    """True once something accepts TCP connections on the loopback port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return True
        time.sleep(0.02)
    return False


def recorded(name: str) -> str:
    """A recorded device output from tests/data/devices (see its README)."""
    return (DATA / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class FakeDevice:
    """A FakeNOS host: its platform, login, and the outputs it gives in enable mode."""

    name: str
    platform: str
    username: str
    password: str
    outputs: Mapping[str, str]

    def __post_init__(self) -> None:
        PASSWORDS.add(self.password)


@contextlib.contextmanager
def fakenos(devices: list[FakeDevice]) -> Iterator[dict[str, int]]:
    """Run FakeNOS hosts on loopback; yields each one's port by name."""
    ports = {d.name: free_port() for d in devices}
    hosts = {
        d.name: {
            "username": d.username, "password": d.password, "port": ports[d.name],
            "platform": d.platform,
            # Outputs only at the enable prompt, like a real IOS `show version`: so the check
            # must enter enable mode for them.
            "nos": {"plugin": d.platform, "configuration": {"commands": {
                command: {"output": text, "help": command, "prompt": "{base_prompt}#"}
                for command, text in d.outputs.items()}}},
        }
        for d in devices}
    before = set(threading.enumerate())
    net = FakeNOS(inventory={"hosts": hosts})
    net.start()  # listening on return; a probe connection would crash its server thread
    try:
        yield ports
    finally:
        net.stop()
        # A session thread that outlives the emulator keeps pytest from ever exiting (FakeNOS
        # waits without a timeout for a client that hung up after the key exchange): fail
        # here, naming it, rather than hang CI.
        leftover = [t for t in set(threading.enumerate()) - before if not t.daemon]
        for thread in leftover:
            thread.join(2.0)
        leftover = [t for t in leftover if t.is_alive()]
        assert not leftover, f"FakeNOS threads still waiting after stop: {leftover}"


@dataclass(frozen=True)
class Sshd:
    """A private sshd on loopback and the test account it lets in."""

    port: int
    username: str
    password: str
    log: Path


def ensure_test_user(password: str) -> None:
    """Create the test account if missing and (re)set its password: idempotent. Needs root."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER],
                       check=True, capture_output=True)
    subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}\n", text=True, check=True,
                   capture_output=True)


@contextlib.contextmanager
def sshd(workdir: Path) -> Iterator[Sshd]:
    """Start /usr/sbin/sshd with its own config and host key on a free loopback port."""
    if os.geteuid() != 0:
        raise RuntimeError("the OpenSSH peer needs root: it creates a test account and runs "
                           "sshd, which reads /etc/shadow to check passwords")
    password = secrets.token_urlsafe(16)
    PASSWORDS.add(password)
    ensure_test_user(password)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    key = workdir / "host_ed25519"
    if not key.exists():
        subprocess.run([shutil.which("ssh-keygen") or "ssh-keygen", "-q", "-t", "ed25519",
                        "-N", "", "-f", str(key)], check=True, capture_output=True)
    port = free_port()
    config = workdir / "sshd_config"
    log = workdir / "sshd.log"
    LOGS.append(log)
    config.write_text(
        f"Port {port}\nListenAddress {LOOPBACK}\nHostKey {key}\n"
        f"PidFile {workdir / 'sshd.pid'}\nPasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication no\nUsePAM no\n"
        f"AllowUsers {TEST_USER}\nPermitRootLogin no\nLogLevel VERBOSE\n")
    # -D: stays our child, so we stop exactly the process we started.
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        if not wait_listening(port):
            proc.kill()
            proc.wait(5)
            text = log.read_text() if log.exists() else "(no log)"
            raise RuntimeError(f"sshd did not listen on {LOOPBACK}:{port}; its log:\n{text}")
        yield Sshd(port, TEST_USER, password, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Listener:
    """A silent listener's port and the connections it accepted (and holds open)."""

    port: int
    accepted: list[socket.socket]

    def client_closed_within(self, seconds: float) -> bool:
        """True once every accepted connection sees end-of-file from the client."""
        deadline = time.monotonic() + seconds
        for conn in self.accepted:
            conn.settimeout(0.1)
            while True:  # bounded by the deadline
                if time.monotonic() > deadline:
                    return False
                try:
                    if not conn.recv(4096):
                        break  # EOF: the client closed its socket
                except TimeoutError:
                    continue
                except OSError:
                    break  # reset by the client: closed too
        return True


@contextlib.contextmanager
def silent_listener() -> Iterator[Listener]:
    """A loopback port that accepts TCP connections and never says a word (no SSH banner)."""
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(16)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])  # held open, silent

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield Listener(int(server.getsockname()[1]), accepted)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def closed_port() -> int:
    """A loopback port with no listener: connecting to it is refused."""
    return free_port()
