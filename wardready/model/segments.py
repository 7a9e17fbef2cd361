"""Which segment of the path is weak: the PC, the ward's LAN, its router, or the uplink.

The link criteria (`model.criteria`) judge the path end to end, PC to server. Here its
segments are told apart, each from its own evidence, so that the equipment request list asks
for the fix that segment needs (a cable, a network card, a router setting, a quote from the
provider) instead of "upgrade the uplink" for every weak ward:

- **pc**: its last hop (`checks.lasthop`: Wi-Fi signal, NIC speed and duplex) and the speed
  test's TCP_INFO (`checks.bandwidth`: time limited by the PC's receive window or send
  buffer);
- **lan**: loss and jitter to the ward's gateway, measured in the same round as to the
  server (`checks.path`), and the CRC errors and duplex of the ward switches' ports
  (`checks.devices`);
- **router**: the DSCP marking of calls cleared at the ward's router (the first hop past it
  quotes the probe's header with the marking changed);
- **uplink**: loss to the server that the gateway does not show, and the hop of the trace
  where it begins: the provider's first hop (its access line), or beyond.

Thresholds come from the ward's profile only: its link figures (a LAN that alone spends the
path's whole loss or jitter budget is at fault) and its `segments` figures. One function
(`ward_findings`) serves the server's /metrics (`wardready_ward_segment_faults`, which the
rules count), the equipment request list and `wardready-server readiness`; the agent's
`check` command shows its own PC's (`host_findings`). docs/segments.md.

Evidence and fixes are written in the language current when the findings are made
(`wardready.core.i18n`); reasons, segments and needs stay English ids (`segment_name` gives a
segment's name to show).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from wardready.checks import bandwidth, devices, lasthop, path
from wardready.checks.base import CheckResult
from wardready.core.i18n import N_, _, decimal_mark
from wardready.core.inventory import LinkRequirement, NeedKind, Profile

Segment = Literal["pc", "lan", "router", "uplink"]
SEGMENTS: tuple[Segment, ...] = ("pc", "lan", "router", "uplink")

Reason = Literal["wifi-signal", "wifi-loss", "nic-speed", "nic-duplex", "receive-window",
                 "send-buffer", "lan-loss", "lan-jitter", "port-errors", "port-duplex",
                 "dscp-cleared", "access-loss", "core-loss"]
LinkFigure = Literal["download", "upload", "rtt", "jitter", "loss"]


@dataclass(frozen=True)
class Kind:
    """What a reason says about the path: its segment, what the request list asks for, and
    which of the ward's link figures it can explain (a PC on a 10 Mbit/s card cannot measure
    a 50 Mbit/s uplink)."""

    segment: Segment
    need: NeedKind
    explains: tuple[LinkFigure, ...]


REASONS: dict[Reason, Kind] = {
    "wifi-signal": Kind("pc", "cabling", ("download", "upload", "jitter", "loss")),
    "wifi-loss": Kind("pc", "cabling", ("loss", "jitter")),
    "nic-speed": Kind("pc", "nic", ("download", "upload")),
    "nic-duplex": Kind("pc", "network-fix", ("download", "upload", "loss")),
    "receive-window": Kind("pc", "network-fix", ("download",)),
    "send-buffer": Kind("pc", "network-fix", ("upload",)),
    "lan-loss": Kind("lan", "cabling", ("loss",)),
    "lan-jitter": Kind("lan", "network-fix", ("jitter",)),
    "port-errors": Kind("lan", "cabling", ("loss",)),
    "port-duplex": Kind("lan", "network-fix", ("loss",)),
    "dscp-cleared": Kind("router", "network-fix", ()),
    "access-loss": Kind("uplink", "link-upgrade", ("loss",)),
    "core-loss": Kind("uplink", "link-upgrade", ("loss",)),
}
"""Every reason a segment can be at fault for: a bounded set, exported as a label."""

SEGMENT_NAMES: dict[Segment, str] = {"pc": N_("pc"), "lan": N_("lan"), "router": N_("router"),
                                     "uplink": N_("uplink")}


def segment_name(segment: Segment) -> str:
    """A segment as a person reads it (the id in English, `máy tính` in Vietnamese)."""
    return _(SEGMENT_NAMES[segment])


@dataclass(frozen=True)
class Finding:
    """One segment at fault, with the measured evidence and the fix."""

    reason: Reason
    evidence: str
    """What was measured, with the figures, e.g. `counter-01 on Wi-Fi at -78 dBm`."""
    fix: str
    host: str = ""
    """The PC whose measurements show it; empty for a device's port."""
    where: str = ""
    """The port or hop it is at, when it is one (`floor2-switch Gi0/7`, `hop 2`)."""

    @property
    def segment(self) -> Segment:
        return REASONS[self.reason].segment

    @property
    def need(self) -> NeedKind:
        return REASONS[self.reason].need

    @property
    def text(self) -> str:
        """The evidence and the fix, as the request list writes them."""
        return f"{self.evidence}: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "segment": self.segment, "need": self.need}


def _pct(ratio: float) -> str:
    return decimal_mark(f"{ratio * 100:.1f} %")


def _ms(seconds: float) -> str:
    return decimal_mark(f"{seconds * 1e3:.1f} ms")


def _who(host: str, role: str | None) -> str:
    return _("{host} ({role} PC)").format(host=host, role=role) if role else host


# -- one PC -----------------------------------------------------------------------------------

def host_findings(profile: Profile, results: Mapping[str, CheckResult | None], host: str,
                  role: str | None = None, call: LinkRequirement | None = None
                  ) -> list[Finding]:
    """The segments one PC's latest results show at fault, held to `call` (the video call
    its role holds) or else the profile's link figures."""
    link = call or profile.link
    limits = profile.segments
    who = _who(host, role)
    found: list[Finding] = []
    hop = results.get("lasthop")
    last = hop if isinstance(hop, lasthop.Result) else None
    trace = results.get("path")
    p = trace if isinstance(trace, path.Result) else None
    on_wifi = last is not None and last.medium == "wifi"

    if last is not None and on_wifi and last.wifi is not None \
            and last.wifi.signal_dbm is not None \
            and last.wifi.signal_dbm < limits.min_wifi_signal_dbm:
        found.append(Finding(
            "wifi-signal", _("{who} on Wi-Fi at {signal:.0f} dBm (at least {needed:g} dBm "
                             "needed)").format(who=who, signal=last.wifi.signal_dbm,
                                               needed=limits.min_wifi_signal_dbm),
            _("move it to a wired port"), host, last.interface or ""))
    if last is not None and not on_wifi:
        # The ward's link, not the call: whichever PC tests the uplink must carry all of it.
        need_bps = max(profile.link.min_download_mbps, profile.link.min_upload_mbps) * 1e6
        speed = last.speed_bits_per_second
        if speed is not None and speed < need_bps:
            found.append(Finding(
                "nic-speed", _("{who}'s network port runs at {speed:g} Mbit/s, below the "
                               "{need:g} Mbit/s the ward's link must carry").format(
                                   who=who, speed=speed / 1e6, need=need_bps / 1e6),
                _("fit a gigabit network adapter, or replace its cable and check the switch "
                  "port if the adapter is already gigabit"), host, last.interface or ""))
        if last.full_duplex is False:
            found.append(Finding(
                "nic-duplex", _("{who}'s network port runs half duplex").format(who=who),
                _("set the adapter and its switch port to auto-negotiate, and replace the "
                  "cable if it still comes up half duplex"), host, last.interface or ""))

    if p is not None and p.gateway.sent:
        gw, far = p.gateway, p.server
        if gw.loss_ratio is not None and gw.loss_ratio > link.max_loss_percent / 100:
            fields = {"who": who, "lost": _pct(gw.loss_ratio), "gateway": gw.address or "",
                      "server": _pct(far.loss_ratio or 0), "allowed": link.max_loss_percent}
            known = far.loss_ratio is not None
            if on_wifi:
                evidence = (_("{who} loses {lost} of probes to its gateway {gateway}, {server} "
                              "to the server (at most {allowed:g} % allowed on the whole path) "
                              "over Wi-Fi") if known else
                            _("{who} loses {lost} of probes to its gateway {gateway} (at most "
                              "{allowed:g} % allowed on the whole path) over Wi-Fi"))
                found.append(Finding("wifi-loss", evidence.format(**fields),
                                     _("move it to a wired port"), host))
            else:
                evidence = (_("{who} loses {lost} of probes to its gateway {gateway}, {server} "
                              "to the server (at most {allowed:g} % allowed on the whole path)")
                            if known else
                            _("{who} loses {lost} of probes to its gateway {gateway} (at most "
                              "{allowed:g} % allowed on the whole path)"))
                found.append(Finding("lan-loss", evidence.format(**fields),
                                     _("replace its patch cable and check its switch port "
                                       "(CRC errors, duplex)"), host))
        if gw.jitter_seconds is not None and gw.jitter_seconds > link.max_jitter_ms / 1e3 \
                and not on_wifi:
            found.append(Finding(
                "lan-jitter", _("{who}'s jitter to its gateway is {jitter} (at most {allowed:g} "
                                "ms allowed on the whole path)").format(
                                    who=who, jitter=_ms(gw.jitter_seconds),
                                    allowed=link.max_jitter_ms),
                _("find what loads the ward LAN (a loop, a broadcast storm, a saturated switch "
                  "port)"), host))
        gateway_clean = gw.loss_ratio is not None and gw.loss_ratio <= link.max_loss_percent / 100
        if gateway_clean and far.loss_ratio is not None \
                and far.loss_ratio > link.max_loss_percent / 100:
            found.append(_uplink_loss(p, who, host))
        if p.dscp_changed_at_hop == 2:
            first = next((h for h in p.hops if h.ttl == 2), None)
            seen = f"DSCP {first.received_dscp}" if first and first.received_dscp is not None \
                else _("another marking")
            router = p.hops[0].address if p.hops and p.hops[0].address else _("hop 1")
            found.append(Finding(
                "dscp-cleared", _("the ward's router ({router}) rewrites the DSCP {sent} "
                                  "marking of {who}'s call packets: the provider's first hop "
                                  "sees {seen}").format(router=router, sent=p.dscp_sent,
                                                        who=who, seen=seen),
                _("configure the router to keep (trust) the DSCP marking of call traffic, so "
                  "calls keep their priority on a congested uplink"), host, "hop 1"))

    bw = results.get("bandwidth")
    if isinstance(bw, bandwidth.Result):
        for d in bw.directions:
            ratio = (d.rwnd_limited_ratio if d.direction == "download"
                     else d.sndbuf_limited_ratio)
            if ratio is not None and ratio > limits.max_tcp_limited_ratio:
                download = d.direction == "download"
                evidence = (_("{who}'s download test was limited by its TCP receive window "
                              "{share} of the time (the sender's TCP_INFO)") if download else
                            _("{who}'s upload test was limited by its TCP send buffer {share} "
                              "of the time (the sender's TCP_INFO)"))
                found.append(Finding(
                    "receive-window" if download else "send-buffer",
                    evidence.format(who=who, share=_pct(ratio)),
                    _("check the PC's network settings (TCP window auto-tuning), its network "
                      "driver and security software: the PC, not the link, sets the pace"),
                    host))
    return found


def _uplink_loss(p: path.Result, who: str, host: str) -> Finding:
    """Loss the gateway does not show: where the trace says it begins."""
    start = p.loss_start_hop
    hop = next((h for h in p.hops if h.ttl == start), None) if start else None
    at = (_("hop {hop} ({address})").format(hop=start, address=hop.address)
          if hop and hop.address else _("hop {hop}").format(hop=start))
    fields = {"who": who, "server": _pct(p.server.loss_ratio or 0),
              "gateway": _pct(p.gateway.loss_ratio or 0), "at": at}
    if start == 2:
        return Finding("access-loss", _(
            "{who} loses {server} to the server and {gateway} to its gateway: loss begins at "
            "the provider's first hop {at}").format(**fields),
                       _("the provider's access line loses packets: ask the provider to repair "
                         "it or quote an upgrade, with this trace"), host, f"hop {start}")
    evidence = (_("{who} loses {server} to the server and {gateway} to its gateway: loss "
                  "begins past the provider's first hop, at {at}") if start else
                _("{who} loses {server} to the server and {gateway} to its gateway: loss "
                  "begins beyond the ward's router"))
    return Finding("core-loss", evidence.format(**fields),
                   _("the provider's network or the city's core loses packets: report it to "
                     "the provider and the city data centre, with this trace"), host,
                   f"hop {start}" if start else "")


# -- the ward's devices ----------------------------------------------------------------------

PortKey = tuple[str, str]
"""(device, interface)."""
PORT_ERRORS_WINDOW_SECONDS = 24 * 3600.0
"""A port's CRC errors are counted over a day, as `increase(...[24h])` in the rules does."""


def port_findings(profile: Profile, polls: Mapping[str, devices.DevicePoll],
                  crc_per_day: Mapping[PortKey, float]) -> list[Finding]:
    """Ports of the ward's switches and routers that point at a cable: CRC errors over the
    last 24 h (`crc_per_day`, from the counters' history) and half duplex on a connected
    physical port."""
    limit = profile.segments.max_port_crc_errors_per_day
    found: list[Finding] = []
    for (device, port), errors in sorted(crc_per_day.items()):
        if errors > limit:
            poll = polls.get(device)
            role = poll.role if poll else _("device")
            found.append(Finding(
                "port-errors", _("{role} port {port} of {device}: {errors:,.0f} CRC errors in "
                                 "24 h (at most {limit:g})").format(
                                     role=role, port=port, device=device, errors=errors,
                                     limit=limit),
                _("replace the cable on that port (and its patch cord), then check the port"),
                where=f"{device} {port}"))
    for name, poll in sorted(polls.items()):
        if not poll.up:
            continue
        for i in poll.interfaces:
            if i.oper_up and i.full_duplex is False and devices.is_physical_port(i.name):
                found.append(Finding(
                    "port-duplex", _("{role} port {port} of {device} runs half duplex").format(
                        role=poll.role, port=i.name, device=name),
                    _("set both ends to auto-negotiate (a duplex mismatch loses packets under "
                      "load) and replace the cable if it stays half duplex"),
                    where=f"{name} {i.name}"))
    return found


def ward_polls(hosts: Mapping[str, Mapping[str, CheckResult | None]]
               ) -> dict[str, devices.DevicePoll]:
    """The ward's devices as polled, by name: the answered poll of the first PC that has one."""
    polls: dict[str, devices.DevicePoll] = {}
    for name in sorted(hosts):
        result = hosts[name].get("devices")
        if isinstance(result, devices.Result):
            for poll in result.devices:
                if poll.up and poll.name not in polls:
                    polls[poll.name] = poll
    return polls


# -- the ward ---------------------------------------------------------------------------------

def ward_findings(profile: Profile, hosts: Mapping[str, tuple[str | None,
                                                              Mapping[str, CheckResult | None]]],
                  call: LinkRequirement | None = None,
                  crc_per_day: Mapping[PortKey, float] | None = None) -> list[Finding]:
    """Every segment at fault in a ward: each PC's (`hosts`: name -> (role, latest results)),
    held to the call when its role holds the calls, then its devices' ports."""
    found: list[Finding] = []
    for name in sorted(hosts):
        role, results = hosts[name]
        holds = profile.video.holds_calls(role)
        found += host_findings(profile, results, name, role, call if holds else None)
    found += port_findings(profile, ward_polls({h: r for h, (_, r) in hosts.items()}),
                           crc_per_day or {})
    return found


def counts(found: list[Finding]) -> Iterator[tuple[Segment, Reason, int]]:
    """How many findings of each reason, every reason listed (0 when none), for /metrics."""
    for reason, kind in REASONS.items():
        yield kind.segment, reason, sum(f.reason == reason for f in found)
