"""An emulated office LAN for tests: hosts in network namespaces on one Linux bridge.

    with Lan([Host("printer", "10.77.0.11", "00:00:85:11:22:33")], agent_ip="10.77.0.100") as lan:
        lan.run(lan.agent_ns, ["ping", "-c", "1", "10.77.0.11"], timeout=10)

A namespace `lan` holds the bridge `br0` (no address: it is the switch); the agent and each
host get a namespace of their own, joined to the bridge by a veth pair whose inside end is
`eth0`, with the host's MAC and address. STP stays off, so bridge ports forward at once.
Namespace names are random per instance; everything is torn down on exit, also when the
body raises. Needs root and iproute2 (with the kernel's bridge and veth drivers).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from lab.netlab import Namespaces

BRIDGE = "br0"


@dataclass(frozen=True)
class Host:
    """One machine on the LAN: a short role name (its namespace's suffix), address, MAC."""

    role: str
    ip: str
    mac: str


class Lan(Namespaces):
    """Context manager: the agent and `hosts` on one bridged /`prefix` subnet."""

    def __init__(self, hosts: Sequence[Host], agent_ip: str, prefix: int = 24) -> None:
        super().__init__()
        roles = [h.role for h in hosts]
        if len(set(roles)) != len(roles) or {"lan", "agent"} & set(roles):
            raise ValueError(f"host roles must be unique and not 'lan' or 'agent': {roles}")
        self.hosts = tuple(hosts)
        self.agent_ip, self.prefix = agent_ip, prefix
        self.network = ipaddress.IPv4Interface(f"{agent_ip}/{prefix}").network
        suffix = secrets.token_hex(4)
        self.lan_ns = f"ll-{suffix}-lan"
        self.agent_ns = f"ll-{suffix}-agent"
        self._host_ns = {h.role: f"ll-{suffix}-{h.role}" for h in hosts}

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.lan_ns, self.agent_ns, *self._host_ns.values())

    def ns(self, role: str) -> str:
        """The namespace of the host with this role."""
        return self._host_ns[role]

    @staticmethod
    def _ip(*argv: str) -> None:
        out = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20,
                             check=False)
        if out.returncode:
            raise RuntimeError(f"ip {' '.join(argv)} exited {out.returncode}: "
                               f"{out.stderr.strip()}")

    # -- building and tearing down -------------------------------------------------------

    def _build(self) -> None:
        for ns in self.namespaces:
            self._ip("netns", "add", ns)
            self._created.append(ns)
        self._ip("-n", self.lan_ns, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0")
        self._ip("-n", self.lan_ns, "link", "set", BRIDGE, "up")
        members = [(self.agent_ns, self.agent_ip, None),
                   *((self._host_ns[h.role], h.ip, h.mac) for h in self.hosts)]
        for index, (ns, ip, mac) in enumerate(members):
            port = f"p{index}"
            # Created inside the namespaces: no interface name ever appears in the root
            # namespace, where parallel instances would collide.
            self._ip("-n", self.lan_ns, "link", "add", port, "type", "veth",
                     "peer", "name", "eth0", "netns", ns)
            self._ip("-n", self.lan_ns, "link", "set", port, "master", BRIDGE, "up")
            if mac is not None:
                self._ip("-n", ns, "link", "set", "eth0", "address", mac)
            self._ip("-n", ns, "addr", "add", f"{ip}/{self.prefix}", "dev", "eth0")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        """Stop what runs in the namespaces, then delete them (their veths go with them)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._procs.clear()
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20,
                           check=False)
        self._created.clear()


def require_lanlab() -> str | None:
    """Why a Lan cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "missing ip (iproute2; scripts/setup.sh installs it as root)"
    return None
