"""A PC's NIC at 10 Mbit/s half duplex, for real (lab.slownic): iperf3 through it measures
what 10 Mbit/s of Ethernet can carry, and the `lasthop` check run inside the PC's namespace
reads back the speed and duplex that ethtool set."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lab.netlab import Namespaces, iperf3_goodput
from lab.slownic import WIRE_OVERHEAD, SlowNic, wire_bytes

PEER_IP = "10.77.0.1"
PC_IP = "10.77.0.2"
MSS = 1448
"""TCP payload per segment: MTU 1500 - 20 IP - 20 TCP - 12 timestamp option."""
DATA_FRAME = MSS + 12 + 20 + 20 + 14
ACK_FRAME = 66
"""A pure ACK with timestamps: 14 Ethernet + 20 IP + 32 TCP."""


class CablePair(Namespaces):
    """Two namespaces, `pc` and `peer`, joined by one veth cable (`eth0` on each side); the
    peer has PEER_IP/24 and its transmit offloads off (SlowNic's relay needs wire-sized,
    checksummed frames). Same interface as lab.netlab's labs, so `iperf3_goodput` runs on it."""

    def __init__(self) -> None:
        super().__init__()
        tag = secrets.token_hex(3)
        self.ward_ns, self.city_ns = f"wr-{tag}-pc", f"wr-{tag}-peer"
        self.city_ip = PEER_IP

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.ward_ns, self.city_ns)

    def _sh(self, argv: list[str]) -> None:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")

    def _build(self) -> None:
        for ns in self.namespaces:
            self._sh(["ip", "netns", "add", ns])
            self._created.append(ns)
            self._sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Created inside the namespaces: no interface ever appears in the root namespace.
        self._sh(["ip", "-n", self.ward_ns, "link", "add", "eth0", "type", "veth", "peer",
                  "name", "eth0", "netns", self.city_ns])
        self._sh(["ip", "-n", self.city_ns, "addr", "add", f"{PEER_IP}/24", "dev", "eth0"])
        self._sh(["ip", "netns", "exec", self.city_ns, "sysctl", "-qw",
                  "net.ipv6.conf.eth0.disable_ipv6=1"])
        self._sh(["ip", "netns", "exec", self.city_ns, "ethtool", "-K", "eth0", "gro", "off",
                  "gso", "off", "tso", "off", "tx", "off"])
        self._sh(["ip", "-n", self.city_ns, "link", "set", "eth0", "up"])

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        for ns in list(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20,
                           check=False)
            self._created.remove(ns)


def _root_interfaces() -> set[str]:
    """Interface names of the root namespace (without the `@peer` suffix)."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True,
                         timeout=10).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
            if line.count(":") >= 2}


def _require_lab() -> None:
    """Skip (a failure under CI=true) where namespaces and TAP devices cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces and a TAP device")
    missing = [b for b in ("ip", "ethtool", "iperf3", "ss") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (scripts/setup.sh installs them as root)")


@pytest.fixture
def slow_pc() -> Iterator[tuple[CablePair, SlowNic]]:
    """The pair, with the PC's NIC a TAP at 10 Mbit/s half duplex."""
    _require_lab()
    with CablePair() as pair, SlowNic(pair.ward_ns, "eth0", f"{PC_IP}/24", PEER_IP,
                                      speed_mbit=10, duplex="half") as nic:
        # Other labs may run beside this one: look for this lab's own names only.
        assert nic.name not in _root_interfaces()
        yield pair, nic
    assert nic.name not in _root_interfaces()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout
    assert pair.ward_ns not in listed and pair.city_ns not in listed


def _ethtool_settings(text: str) -> dict[str, str]:
    return {k: v.strip() for k, v in re.findall(r"^\s*(Speed|Duplex):\s*(\S+)", text,
                                                 re.MULTILINE)}


def test_the_kernel_reports_the_speed_and_duplex_set(slow_pc: tuple[CablePair, SlowNic]
                                                     ) -> None:
    pair, nic = slow_pc
    assert (nic.name, nic.speed_mbit, nic.duplex) == ("slow0", 10, "half")
    assert _ethtool_settings(nic.ethtool()) == {"Speed": "10Mb/s", "Duplex": "Half"}
    sysfs = pair.run(pair.ward_ns, ["cat", "/sys/class/net/slow0/speed",
                                    "/sys/class/net/slow0/duplex"], timeout=10).stdout.split()
    assert sysfs == ["10", "half"]


def test_iperf3_measures_what_10_mbit_half_duplex_carries(slow_pc: tuple[CablePair, SlowNic]
                                                          ) -> None:
    """Expected from Ethernet framing (IEEE 802.3), not from the relay: each 1448-byte
    segment costs a 1514-byte frame plus 24 bytes of FCS, preamble and gap on the wire, so
    10 Mbit/s full duplex carries at most 10 * 1448/1538 = 9.41 Mbit/s of TCP payload. Half
    duplex also carries the ACKs on the same medium: between one ACK per two segments
    (Linux's delayed ACK, 9.15 Mbit/s) and one per segment (8.89 Mbit/s). Measured here:
    9.12 to 9.15 Mbit/s either way over four runs (the same relay at full duplex: 9.41)."""
    pair, nic = slow_pc
    rate = nic.speed_mbit * 1e6
    data_wire = wire_bytes(DATA_FRAME)
    assert data_wire == 1514 + WIRE_OVERHEAD == 1538
    ack_wire = wire_bytes(ACK_FRAME)
    ceiling = rate * MSS / data_wire / 1e6
    floor = rate * MSS / (data_wire + ack_wire) / 1e6
    assert (round(ceiling, 2), round(floor, 2)) == (9.41, 8.89)
    for download in (False, True):
        goodput = iperf3_goodput(pair, seconds=5, download=download)  # type: ignore[arg-type]
        assert floor * 0.98 <= goodput <= ceiling * 1.01, (download, goodput, nic.relay_log())


def test_the_lasthop_check_in_the_pc_reads_10_mbit_half_duplex(
        slow_pc: tuple[CablePair, SlowNic]) -> None:
    pair, nic = slow_pc
    applied = _ethtool_settings(nic.ethtool())
    speed_mbit = int(applied["Speed"].removesuffix("Mb/s"))
    out = pair.run(pair.ward_ns, [sys.executable, "-m", "wardready.checks", "lasthop",
                                  "--config", json.dumps({"target": PEER_IP})], timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    assert result == {
        "target": PEER_IP, "interface": nic.name, "local_address": PC_IP,
        "medium": "wired", "speed_bits_per_second": speed_mbit * 1e6,
        "full_duplex": applied["Duplex"] == "Full", "wifi": None, "notes": []}
    assert speed_mbit * 1e6 / 8 == 1.25e6  # what wardready_lasthop_speed_bytes_per_second says


def test_full_duplex_gives_each_direction_the_whole_rate() -> None:
    """The same NIC at 10 Mbit/s full duplex: the ACKs no longer share the data's medium, so
    TCP reaches the framing ceiling, 10 * 1448/1538 = 9.41 Mbit/s (measured: 9.41)."""
    _require_lab()
    ceiling = 10e6 * MSS / wire_bytes(DATA_FRAME) / 1e6
    with CablePair() as pair:
        with SlowNic(pair.ward_ns, "eth0", f"{PC_IP}/24", PEER_IP, speed_mbit=10,
                     duplex="full") as nic:
            assert _ethtool_settings(nic.ethtool()) == {"Speed": "10Mb/s", "Duplex": "Full"}
            goodput = iperf3_goodput(pair, seconds=5, download=False)  # type: ignore[arg-type]
            assert ceiling * 0.98 <= goodput <= ceiling * 1.01, (goodput, nic.relay_log())
        # The TAP went with its relay; the namespace is still there.
        gone = pair.run(pair.ward_ns, ["ip", "link", "show", nic.name], timeout=10)
        assert gone.returncode != 0 and "does not exist" in gone.stderr


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="speed_mbit must be 10, 100 or 1000"):
        SlowNic("ns", "eth0", "10.0.0.2/24", speed_mbit=12)
    with pytest.raises(ValueError, match="duplex must be half or full"):
        SlowNic("ns", "eth0", "10.0.0.2/24", duplex="quarter")  # type: ignore[arg-type]
