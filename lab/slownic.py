"""A PC's NIC forced to a slow Ethernet speed and duplex (10 Mbit/s half duplex by default),
for real, inside a network namespace.

A veth cannot change the speed it reports, a TAP device can: `ethtool -s TAP speed 10 duplex
half autoneg off` makes the kernel report 10Mb/s Half (ethtool, sysfs, psutil). So `SlowNic`
puts a TAP device in the namespace as the PC's NIC (with the PC's address and default route)
and relays its frames to and from an existing veth end in the same namespace, which stays
cabled to the rest of the lab:

    PC stack <-> TAP (10 Mb/s half, IP, route) <-> relay process <-> veth (no IP) <-> peer

The relay (this file run as a script, inside the namespace) opens the TAP itself without
making it persistent, so the TAP disappears with the relay: nothing can be left behind, and
it never exists outside the namespace. It reads the veth through an AF_PACKET socket in
promiscuous mode (the TAP has its own MAC) and paces both directions to the configured
rate with a token bucket that counts what the frame occupies on a real wire (at least 60
bytes, plus FCS, preamble and inter-frame gap: 24 bytes). Half duplex shares one bucket
between the two directions, as the one medium of a half-duplex link is shared; full duplex
gives each direction its own. Collisions (CSMA/CD) are not emulated. Queues hold 50 ms of
traffic at the rate (at least 16 frames) and drop beyond, like a NIC's ring under tbf.

The veth end gets no address, ARP off and IPv6 off (it must not answer for the PC), and its
offloads off; the far end must have its transmit offloads off too (`ethtool -K IF tso off
gso off tx off`), or the relay would see 64 KB segments and frames without checksums.

Needs root, iproute2 and ethtool.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Literal

Duplex = Literal["half", "full"]
WIRE_OVERHEAD = 24
"""Bytes a frame costs on the wire beyond what the socket sees: FCS 4, preamble and start
delimiter 8, inter-frame gap 12 (IEEE 802.3)."""
MIN_FRAME = 60
"""Shortest Ethernet frame without its FCS; shorter ones are padded on the wire."""
MAX_WIRE_FRAME = 1514 + WIRE_OVERHEAD
QUEUE_SECONDS = 0.050
BURST_SECONDS = 0.004
IDLE_SECONDS = 0.5
DRAIN_BUDGET = 64
"""Frames read from one side per wake-up, so neither side starves the other."""

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4


def wire_bytes(frame_len: int) -> int:
    """What a frame of `frame_len` bytes (as the socket sees it) occupies on the wire."""
    return max(frame_len, MIN_FRAME) + WIRE_OVERHEAD


# --- the relay (runs inside the namespace) -----------------------------------------------------

class Bucket:
    """A token bucket of bytes: `rate` bytes/s, at most `burst` bytes saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait(self, size: int) -> float:
        """Seconds until `size` bytes may go (0 when now)."""
        return max(0.0, (size - self.tokens) / self.rate)


class Queue:
    """Frames waiting to go one way, bounded in bytes; what does not fit is dropped."""

    def __init__(self, limit: int) -> None:
        self.frames: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.limit = limit
        self.dropped = 0
        self.passed = 0

    def put(self, frame: bytes) -> None:
        if self.size + len(frame) > self.limit:
            self.dropped += 1
            return
        self.frames.append(frame)
        self.size += len(frame)

    def pop(self) -> bytes:
        frame = self.frames.popleft()
        self.size -= len(frame)
        self.passed += 1
        return frame


def open_tap(name: str) -> int:
    """A non-persistent TAP device `name` (gone when the fd closes), non-blocking."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError:
        os.close(fd)
        raise
    return fd


def open_packet_socket(interface: str) -> socket.socket:
    """A promiscuous AF_PACKET socket on `interface` that skips the frames it sends."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, ETH_P_ALL))
    index = socket.if_nametoindex(interface)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                    struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b""))
    with contextlib.suppress(OSError):  # Linux >= 4.20; pkttype is checked anyway
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setblocking(False)
    return sock


def relay(tap_name: str, veth: str, rate_mbit: float, duplex: Duplex,
          control: int, out: IO[str]) -> dict[str, int]:
    """Relay frames between TAP `tap_name` (created here) and `veth` at `rate_mbit`, until
    `control` (a pipe) reaches EOF; the counts of frames passed and dropped each way."""
    rate = rate_mbit * 1e6 / 8
    burst = max(rate * BURST_SECONDS, 4 * MAX_WIRE_FRAME)
    limit = int(max(rate * QUEUE_SECONDS, 16 * MAX_WIRE_FRAME))
    tap = open_tap(tap_name)
    sock = open_packet_socket(veth)
    up, down = Queue(limit), Queue(limit)  # up: PC -> veth, down: veth -> PC
    shared = Bucket(rate, burst)
    buckets = {id(up): shared, id(down): shared if duplex == "half" else Bucket(rate, burst)}
    print("ready", file=out, flush=True)
    turn = 0
    while True:
        now = time.monotonic()
        for b in {id(x): x for x in buckets.values()}.values():
            b.refill(now)
        # Release what the bucket allows, alternating directions so neither starves.
        progress = True
        while progress:
            progress = False
            for q in ((up, down) if turn == 0 else (down, up)):
                bucket = buckets[id(q)]
                if q.frames and bucket.wait(wire_bytes(len(q.frames[0]))) == 0.0:
                    frame = q.pop()
                    bucket.tokens -= wire_bytes(len(frame))
                    with contextlib.suppress(OSError):  # ENOBUFS: lost, as on a wire
                        if q is up:
                            sock.send(frame)
                        else:
                            os.write(tap, frame)
                    progress = True
            turn ^= 1
        waits = [buckets[id(q)].wait(wire_bytes(len(q.frames[0])))
                 for q in (up, down) if q.frames]
        timeout = max(min(waits), 0.0001) if waits else IDLE_SECONDS
        readable, _, _ = select.select([tap, sock.fileno(), control], [], [], timeout)
        if control in readable and not os.read(control, 4096):
            break
        if tap in readable:
            for _ in range(DRAIN_BUDGET):
                try:
                    up.put(os.read(tap, 65536))
                except BlockingIOError:
                    break
        if sock.fileno() in readable:
            for _ in range(DRAIN_BUDGET):
                try:
                    frame, address = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if address[2] != PACKET_OUTGOING:
                    down.put(frame)
    sock.close()
    os.close(tap)
    return {"up_passed": up.passed, "up_dropped": up.dropped,
            "down_passed": down.passed, "down_dropped": down.dropped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tap", required=True)
    parser.add_argument("--veth", required=True)
    parser.add_argument("--rate-mbit", type=float, required=True)
    parser.add_argument("--duplex", choices=("half", "full"), required=True)
    args = parser.parse_args(argv)
    # SIGTERM ends the process; the kernel then closes the TAP's fd and removes it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    counts = relay(args.tap, args.veth, args.rate_mbit, args.duplex, sys.stdin.fileno(),
                   sys.stdout)
    print(" ".join(f"{k}={v}" for k, v in counts.items()), file=sys.stderr)
    return 0


# --- the context manager (runs in the test process) --------------------------------------------

def _sh(argv: list[str], what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what}: {' '.join(argv)}: {done.stderr.strip() or done.stdout}")
    return done.stdout


class SlowNic:
    """Context manager: in namespace `ns`, a TAP `name` at `speed_mbit` and `duplex` carrying
    `address` (CIDR) and, when `gateway` is given, the default route, relayed to the
    existing veth `veth` of that namespace (see the module's docstring). The relay and the
    TAP go on exit, also when the body raises (and if this process dies, the relay sees its
    stdin close and goes too); the veth is left as a bare cable end (no address, ARP off),
    for the namespace's owner to delete with the namespace."""

    def __init__(self, ns: str, veth: str, address: str, gateway: str | None = None, *,
                 speed_mbit: int = 10, duplex: Duplex = "half", name: str = "slow0") -> None:
        if speed_mbit not in (10, 100, 1000):
            raise ValueError(f"speed_mbit must be 10, 100 or 1000 (an Ethernet speed), "
                             f"not {speed_mbit}")
        if duplex not in ("half", "full"):
            raise ValueError(f"duplex must be half or full, not {duplex!r}")
        if len(name) > 15:
            raise ValueError(f"interface name {name!r} is longer than 15 characters")
        self.ns = ns
        self.veth = veth
        self.address = address
        self.gateway = gateway
        self.speed_mbit = speed_mbit
        self.duplex: Duplex = duplex
        self.name = name
        self._relay: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _in_ns(self, argv: list[str], what: str) -> str:
        return _sh(["ip", "netns", "exec", self.ns, *argv], what)

    def __enter__(self) -> SlowNic:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        ns, veth = self.ns, self.veth
        # The veth is only a cable end now: no address, no ARP, no IPv6, no offloads.
        _sh(["ip", "-n", ns, "addr", "flush", "dev", veth], "veth")
        self._in_ns(["sysctl", "-qw", f"net.ipv6.conf.{veth}.disable_ipv6=1"], "veth")
        _sh(["ip", "-n", ns, "link", "set", veth, "arp", "off", "up"], "veth")
        self._in_ns(["ethtool", "-K", veth, "gro", "off", "gso", "off", "tso", "off",
                     "tx", "off"], "veth offloads")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._relay = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
             "--tap", self.name, "--veth", veth, "--rate-mbit", str(self.speed_mbit),
             "--duplex", self.duplex],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        line = _read_line(self._relay, timeout=10)
        if line != "ready":
            raise RuntimeError(f"slownic relay did not start: {line!r} {self.relay_log()}")
        name = self.name
        self._in_ns(["ethtool", "-s", name, "speed", str(self.speed_mbit), "duplex",
                     self.duplex, "autoneg", "off"], "ethtool -s")
        self._in_ns(["sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"], "tap")
        _sh(["ip", "-n", ns, "addr", "add", self.address, "dev", name], "tap address")
        _sh(["ip", "-n", ns, "link", "set", name, "up"], "tap up")
        if self.gateway is not None:
            _sh(["ip", "-n", ns, "route", "replace", "default", "via", self.gateway,
                 "dev", name], "default route")

    def ethtool(self) -> str:
        """`ethtool NAME` as the kernel reports the TAP now."""
        return self._in_ns(["ethtool", self.name], "ethtool")

    def relay_log(self) -> str:
        """What the relay wrote to stderr so far (its counts once it has stopped)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return str(self._log.read().decode(errors="replace").strip())

    def close(self) -> None:
        """Stop the relay (EOF, then SIGTERM, then SIGKILL); the TAP goes with it."""
        proc, self._relay = self._relay, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            for step in (None, proc.terminate, proc.kill):
                if step is not None:
                    step()
                try:
                    proc.wait(timeout=3)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self.last_log = self.relay_log()
            self._log.close()
            self._log = None

    last_log: str = ""
    """The relay's final counts, after `close()`."""


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of `proc`'s stdout within `timeout` s ('' if none came)."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1)  # one byte at a time: never read past the line
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


if __name__ == "__main__":
    sys.exit(main())
