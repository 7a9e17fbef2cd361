"""A ward's path in segments for tests: pc -- router -- provider -- city in network namespaces.

    with SegmentLab(SegmentSpec(lan_loss_percent=10)) as lab:
        lab.run(lab.pc_ns, ["ping", "-c", "3", lab.city_ip], timeout=10)

- **pc**: the ward's PC (`pc_ip`), default route via the router.
- **router**: the ward's gateway, its switch/router (`gateway_ip` on the LAN,
  `router_access_ip` toward the provider).
- **provider**: the provider's first hop (`provider_ip`, the address it answers from as
  hop 2: the one facing the ward); a second, backup access link (`provider_backup_ip`) lets
  a test change the route (`SegmentSpec.access_link`).
- **city**: where the server runs (`city_ip`).

Links: LAN (pc -- router), access (router -- provider), core (provider -- city). Every
impairment is on one segment only (`SegmentSpec`), applied on entry and live by
`reconfigure`:
- loss: nftables ``numgen random`` drop rules in the prerouting and postrouting hooks of the
  segment's near end, both directions, so on the LAN the router's own packets (its ICMP
  errors, its echo replies) are dropped too, as on a bad patch cable;
- DSCP rewrite: the router sets the DSCP of what it forwards from the LAN (``ip dscp set``);
- the PC's own rate: tbf on the pc's egress and on the router's LAN egress.
The routers keep the kernel's ICMP rate limits (`net.ipv4.icmp_ratelimit`, 1 per second per
peer with a burst of 6): a test of the path check meets them as a real path would.

`pc_sent()` reads nftables counters of what leaves the pc (IP packets and bytes, by
protocol), so a test measures a check's cost with the kernel's own counts.

Names and addresses are random per instance; IPv6 is off and offloads are off on every veth
end; everything is torn down on exit, also when the body raises. Needs root, iproute2,
nftables, ethtool.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lab.netlab import Namespaces, _stop, tbf_args

NFT_TABLE = "segmentlab"
LOSS_SCALE = 1_000_000  # numgen modulus: loss resolution of 0.0001 %
PROTOCOLS = ("icmp", "udp", "tcp")
# Interface names, the same inside every instance (each lives in its own namespaces).
PC_IF = "eth0"
LAN_IF = "lan"  # router, toward the pc
ACCESS_IF = "access"  # router toward provider, provider toward router
BACKUP_IF = "backup"  # the second access link, both ends
CORE_IF = "core"  # provider toward city
CITY_IF = "eth0"


@dataclass(frozen=True)
class SegmentSpec:
    """The impairment of each segment; the default is a clean path."""

    lan_loss_percent: float = 0.0
    """Random loss pc <-> router, each direction, the router's own traffic included."""
    access_loss_percent: float = 0.0
    """Random loss router <-> provider, each direction."""
    core_loss_percent: float = 0.0
    """Random loss provider <-> city ("past the provider's first hop"), each direction."""
    dscp_rewrite: int | None = None
    """The router rewrites the DSCP of what it forwards from the LAN to this value."""
    pc_rate_mbit: float | None = None
    """The PC's own link rate, both ways (tbf on pc egress and router LAN egress)."""
    access_link: Literal["main", "backup"] = "main"
    """Which access link the router and provider route the ward's traffic over."""

    def __post_init__(self) -> None:
        for name in ("lan_loss_percent", "access_loss_percent", "core_loss_percent"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} {getattr(self, name)} outside 0..100")
        if self.dscp_rewrite is not None and not 0 <= self.dscp_rewrite <= 63:
            raise ValueError(f"dscp_rewrite {self.dscp_rewrite} outside 0..63")
        if self.pc_rate_mbit is not None and not 0.01 <= self.pc_rate_mbit <= 10_000:
            raise ValueError(f"pc_rate_mbit {self.pc_rate_mbit} outside 0.01..10000")
        if self.access_link not in ("main", "backup"):
            raise ValueError(f"access_link {self.access_link!r} is neither main nor backup")


class SegmentLab(Namespaces):
    """Context manager: the four namespaces pc, router, provider, city (module docstring)."""

    def __init__(self, spec: SegmentSpec | None = None) -> None:
        super().__init__()
        suffix = secrets.token_hex(4)
        self.pc_ns, self.router_ns, self.provider_ns, self.city_ns = (
            f"wr-{suffix}-{role}" for role in ("pc", "router", "provider", "city"))
        rng = random.SystemRandom()
        # Four /30s in 10.a.b.0/28, a and b random per instance.
        net = f"10.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}"
        self.gateway_ip, self.pc_ip = f"{net}.1", f"{net}.2"
        self.router_access_ip, self.provider_ip = f"{net}.5", f"{net}.6"
        self.provider_core_ip, self.city_ip = f"{net}.9", f"{net}.10"
        self.router_backup_ip, self.provider_backup_ip = f"{net}.13", f"{net}.14"
        self.lan_net = f"{net}.0/30"
        self.spec = spec or SegmentSpec()
        self._routes = ""  # the access link the routes use now

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.pc_ns, self.router_ns, self.provider_ns, self.city_ns)

    # -- running things ------------------------------------------------------------------

    # -- building and tearing down -------------------------------------------------------

    def _build(self) -> None:
        for ns in self.namespaces:
            self._sh(None, ["ip", "netns", "add", ns])
            self._created.append(ns)
        pc, router, provider, city = self.namespaces
        for a, a_if, a_ip, b, b_if, b_ip in (
                (router, LAN_IF, self.gateway_ip, pc, PC_IF, self.pc_ip),
                (router, ACCESS_IF, self.router_access_ip, provider, ACCESS_IF,
                 self.provider_ip),
                (router, BACKUP_IF, self.router_backup_ip, provider, BACKUP_IF,
                 self.provider_backup_ip),
                (provider, CORE_IF, self.provider_core_ip, city, CITY_IF, self.city_ip)):
            # Created straight inside the namespaces: no name ever appears in the root one.
            self._sh(None, ["ip", "-n", a, "link", "add", a_if, "type", "veth",
                            "peer", "name", b_if, "netns", b])
            self._interface_up(a, a_if, f"{a_ip}/30")
            self._interface_up(b, b_if, f"{b_ip}/30")
        for ns in self.namespaces:
            self._sh(None, ["ip", "-n", ns, "link", "set", "lo", "up"])
            # No IPv6: no router solicitations or DAD packets mixed into measurements.
            for conf in ("all", "default"):
                self._sysctl(ns, f"net/ipv6/conf/{conf}/disable_ipv6", "1")
        for ns in (router, provider):
            self._sysctl(ns, "net/ipv4/ip_forward", "1")
        self._sh(None, ["ip", "-n", pc, "route", "add", "default", "via", self.gateway_ip])
        self._sh(None, ["ip", "-n", city, "route", "add", "default",
                        "via", self.provider_core_ip])
        for ns in (router, provider):
            # Loss in prerouting and postrouting: forwarded packets and the namespace's own.
            self._sh(ns, ["nft", "-f", "-"], input=(
                f"table ip {NFT_TABLE} {{\n"
                "  chain pre { type filter hook prerouting priority -300; policy accept; }\n"
                "  chain post { type filter hook postrouting priority 300; policy accept; }\n"
                "  chain forward { type filter hook forward priority 0; policy accept; }\n"
                "}\n"))
        # What leaves the pc, counted at its last hook.
        rules = "".join(f"    meta l4proto {p} counter\n" for p in PROTOCOLS)
        self._sh(pc, ["nft", "-f", "-"], input=(
            f"table ip {NFT_TABLE} {{\n  chain out {{\n"
            "    type filter hook postrouting priority 300; policy accept;\n"
            f"    counter\n{rules}  }}\n}}\n"))
        self.reconfigure(self.spec)

    def _interface_up(self, ns: str, dev: str, address: str) -> None:
        """Offloads off (loss and tbf see wire-sized packets), the address, up."""
        self._sh(None, ["ip", "-n", ns, "addr", "add", address, "dev", dev])
        self._sh(ns, ["ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off"])
        self._sh(None, ["ip", "-n", ns, "link", "set", dev, "up"])

    def close(self) -> None:
        """Stop every process started here and delete the namespaces (idempotent)."""
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        self._delete_namespaces()

    # -- changing the path ---------------------------------------------------------------

    def reconfigure(self, spec: SegmentSpec) -> None:
        """Apply `spec` to the running lab without rebuilding it."""
        for ns, dev in ((self.pc_ns, PC_IF), (self.router_ns, LAN_IF)):
            if spec.pc_rate_mbit is None:
                self._sh(None, ["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"],
                         ok_codes=(0, 2))  # 2: no root qdisc to delete
            else:
                self._sh(None, ["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                                *tbf_args(spec.pc_rate_mbit)])
        access = ACCESS_IF if spec.access_link == "main" else BACKUP_IF
        router_script = self._loss_script(
            ((LAN_IF, spec.lan_loss_percent), (access, spec.access_loss_percent)))
        router_script += f"flush chain ip {NFT_TABLE} forward\n"
        if spec.dscp_rewrite is not None:
            router_script += (f'add rule ip {NFT_TABLE} forward iifname "{LAN_IF}" counter '
                              f"ip dscp set {spec.dscp_rewrite}\n")
        self._sh(self.router_ns, ["nft", "-f", "-"], input=router_script)
        self._sh(self.provider_ns, ["nft", "-f", "-"],
                 input=self._loss_script(((CORE_IF, spec.core_loss_percent),)))
        if spec.access_link != self._routes:
            if spec.access_link == "main":
                via_router, via_provider = self.provider_ip, self.router_access_ip
            else:
                via_router, via_provider = self.provider_backup_ip, self.router_backup_ip
            self._sh(None, ["ip", "-n", self.router_ns, "route", "replace", "default",
                            "via", via_router])
            self._sh(None, ["ip", "-n", self.provider_ns, "route", "replace", self.lan_net,
                            "via", via_provider])
            self._routes = spec.access_link
        self.spec = spec

    @staticmethod
    def _loss_script(segments: Sequence[tuple[str, float]]) -> str:
        """nft commands: random drop on each (interface, percent), both directions."""
        script = f"flush chain ip {NFT_TABLE} pre\nflush chain ip {NFT_TABLE} post\n"
        for dev, percent in segments:
            if percent <= 0:
                continue
            threshold = round(percent / 100 * LOSS_SCALE)
            for chain, match in (("pre", "iifname"), ("post", "oifname")):
                script += (f'add rule ip {NFT_TABLE} {chain} {match} "{dev}" '
                           f"numgen random mod {LOSS_SCALE} < {threshold} counter drop\n")
        return script

    # -- counters ------------------------------------------------------------------------

    def _counters(self, ns: str, chain: str) -> list[tuple[str, int, int]]:
        """(rule text, packets, bytes) of each counter in `chain` of our table in `ns`."""
        doc = json.loads(self._sh(ns, ["nft", "-j", "list", "chain", "ip", NFT_TABLE, chain]))
        out = []
        for entry in doc["nftables"]:
            rule = entry.get("rule")
            if rule is None:
                continue
            match, counter = "", None
            for expr in rule["expr"]:
                if "match" in expr:
                    match = json.dumps(expr["match"]["right"])
                elif "counter" in expr:
                    counter = expr["counter"]
            if counter is not None:
                out.append((match.strip('"'), int(counter["packets"]), int(counter["bytes"])))
        return out

    def pc_sent(self) -> dict[str, tuple[int, int]]:
        """What has left the pc so far, as IP packets: (packets, bytes) for "all" and for each
        of icmp, udp, tcp."""
        out: dict[str, tuple[int, int]] = {}
        for match, packets, size in self._counters(self.pc_ns, "out"):
            out[match or "all"] = (packets, size)
        return out

    def dscp_rewritten(self) -> int:
        """Packets the router has rewritten the DSCP of (0 when the rewrite is off)."""
        return sum(p for _, p, _ in self._counters(self.router_ns, "forward"))

    def loss_drops(self) -> int:
        """Packets the loss rules have dropped so far, all segments."""
        return sum(p for ns in (self.router_ns, self.provider_ns)
                   for chain in ("pre", "post") for _, p, _ in self._counters(ns, chain))


def require_segmentlab() -> str | None:
    """Why a SegmentLab cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [b for b in ("ip", "tc", "nft", "ethtool") if shutil.which(b) is None]
    if missing:
        return f"missing {', '.join(missing)} (scripts/setup.sh installs them as root)"
    return None
