"""Video-conferencing readiness: what was measured against what the ward's profile requires,
criterion by criterion, with a verdict and what to do about a failure.

One evaluation for everyone who needs it: `wardready-agent check` on the spot, and the
server's roll-up per ward (`rollup`, docs/readiness.md). Thresholds come only from the
inventory's profile; the MOS bands are ITU-T G.109's user-satisfaction categories
(docs/emodel.md).

The texts people read (criterion names, notes, fixes) are made in the language current when
`evaluate` or `rollup` runs (`wardready.core.i18n`); ids, verdicts and states stay English.
Wrap a call in `i18n.using("en")` for machine output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from wardready.checks import bandwidth, host, latency, media, peripherals
from wardready.checks.base import CheckResult
from wardready.core import emodel
from wardready.core.i18n import N_, _, decimal_mark, ngettext
from wardready.core.inventory import CallPreset, LinkRequirement, Profile
from wardready.model.report import Outcome

Verdict = Literal["pass", "warn", "fail", "unknown"]
State = Literal["ready", "ready-with-warnings", "not-ready", "unknown"]
HEADROOM = 0.2
"""A link figure within 20 % of its limit passes with a warning: one busy hour would break
it."""
MOS_GOOD, MOS_POOR = 3.6, 3.1
"""MOS of R 70 and R 60: below 70 'many users dissatisfied', below 60 'nearly all' (G.109)."""


@dataclass(frozen=True)
class Criterion:
    """One line of the verdict: measured against required, and what to do when it fails."""

    id: str
    name: str
    measured: float | None
    required: float | None
    unit: str
    verdict: Verdict
    note: str = ""
    """Where the figure comes from when it is not the usual source, or why it is unknown."""
    fix: str = ""
    """What to do about a failure or warning; empty when it passes."""
    host: str = ""
    """In a ward's verdict, the PC the figure is from."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Readiness:
    """Every criterion and the overall state: not ready if any fails."""

    criteria: tuple[Criterion, ...]

    @property
    def state(self) -> State:
        verdicts = {c.verdict for c in self.criteria}
        if "fail" in verdicts:
            return "not-ready"
        if "unknown" in verdicts:
            return "unknown"
        return "ready-with-warnings" if "warn" in verdicts else "ready"

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "criteria": [c.as_dict() for c in self.criteria]}


def at_least(value: float | None, required: float, headroom: float = 0.0) -> Verdict:
    """A figure that must reach `required`; within `headroom` of it, a warning (measured
    throughput varies; a count of cores or cameras does not)."""
    if value is None:
        return "unknown"
    if value < required:
        return "fail"
    return "warn" if value < required * (1 + headroom) and required > 0 else "pass"


def at_most(value: float | None, limit: float) -> Verdict:
    """A figure that must stay under `limit` (delay, jitter, loss)."""
    if value is None:
        return "unknown"
    if value > limit:
        return "fail"
    return "warn" if value > limit * (1 - HEADROOM) else "pass"


def _line(id_: str, name: str, measured: float | None, required: float | None, unit: str,
          verdict: Verdict, fix: str, note: str = "") -> Criterion:
    return Criterion(id_, name, measured, required, unit, verdict, note,
                     fix if verdict in ("fail", "warn") else "")


def evaluate(profile: Profile, results: Mapping[str, CheckResult | None],
             errors: Mapping[str, str] | None = None,
             call: LinkRequirement | None = None, role: str | None = None) -> Readiness:
    """Judge one machine's latest results (by check name) against `profile`, and against
    the video call it requires (`call`, per PC) rather than the ward link's figures when
    the profile names one. A PC whose `role` does not hold the calls (a counter PC) is not
    asked for a camera, microphone and speaker.

    A check that did not run or failed makes its criteria unknown, with the reason from
    `errors` when given.
    """
    errors = errors or {}

    def missing(check: str) -> str:
        return _("{check} check: {error}").format(
            check=check, error=errors[check] if check in errors else _("did not run"))

    link, video, hosts = call or profile.link, profile.video, profile.hosts
    criteria: list[Criterion] = []
    bw = results.get("bandwidth")
    rates = ({d.direction: d for d in bw.directions}
             if isinstance(bw, bandwidth.Result) else {})
    for direction, name, required, ask in (
            ("download", _("download"), link.min_download_mbps,
             _("ask the provider for at least {required:g} Mbit/s download, or keep other "
               "traffic off the line during meetings")),
            ("upload", _("upload"), link.min_upload_mbps,
             _("ask the provider for at least {required:g} Mbit/s upload, or keep other "
               "traffic off the line during meetings"))):
        d = rates.get(direction)  # type: ignore[call-overload]
        mbps = d.bytes_per_second * 8 / 1e6 if d else None
        criteria.append(_line(
            direction, name, mbps, required, "Mbit/s", at_least(mbps, required, HEADROOM),
            ask.format(required=required), "" if d else missing("bandwidth")))

    path = _path(results, errors)
    udp = path.udp
    criteria.append(_line(
        "udp", _("UDP media path"), None if udp is None else float(udp), 1.0, "", "unknown"
        if udp is None else "pass" if udp else "fail",
        _("allow outgoing UDP to the server's echo port and the bridge's media ports in the "
          "ward firewall; over TCP relays calls stutter"), path.note if udp is None else ""))
    for id_, name, value, limit, fix in (
            ("rtt", _("round-trip time"), path.rtt_ms, link.max_rtt_ms,
             _("check the route to the city network with the provider")),
            ("jitter", _("jitter"), path.jitter_ms, link.max_jitter_ms,
             _("find what else loads the line (downloads, backups) or enable QoS for calls")),
            ("loss", _("packet loss"), path.loss_percent, link.max_loss_percent,
             _("check cabling, Wi-Fi and the modem; ask the provider to test the line"))):
        criteria.append(_line(id_, name, value, limit, "ms" if id_ != "loss" else "%",
                              at_most(value, limit), fix, path.note))
    if isinstance(call, CallPreset) and call.has_window_criteria:
        criteria += window_criteria(call, results, errors)

    loaded = [d.rtt_under_load_median_seconds * 1e3 for d in rates.values()
              if d.rtt_under_load_median_seconds is not None]
    worst = max(loaded, default=None)
    criteria.append(_line(
        "rtt_under_load", _("RTT under load"), worst, link.max_rtt_ms, "ms",
        at_most(worst, link.max_rtt_ms),
        _("the router queues too much when the line is full: enable SQM/fq_codel or QoS"),
        "" if loaded else missing("bandwidth")))

    mos = path.mos
    criteria.append(_line(
        "mos", _("predicted call MOS"), mos, MOS_GOOD, "", "unknown" if mos is None else
        "pass" if mos >= MOS_GOOD else "warn" if mos >= MOS_POOR else "fail",
        _("fix the failing delay, jitter or loss figures above"), path.note))

    kit = results.get("peripherals")
    counts = kit.counts if isinstance(kit, peripherals.Result) else {}
    for id_, kind, name, required, fix in (
            ("camera", "webcam", _("cameras"), video.cameras, _("connect a USB webcam")),
            ("microphone", "microphone", _("microphones"), video.microphones,
             _("connect a microphone or speakerphone")),
            ("speaker", "speaker", _("speakers"), video.speakers,
             _("connect speakers or a speakerphone"))) if video.holds_calls(role) else ():
        count = counts.get(kind)  # type: ignore[call-overload]
        note = "" if count is not None else (
            missing("peripherals") if kit is None else _("could not be read on this machine"))
        criteria.append(_line(id_, name, None if count is None else float(count),
                              float(required), "", at_least(count, required), fix, note))

    facts = results.get("host")
    h = facts if isinstance(facts, host.Result) else None
    cores = float(h.cpu_logical_cores) if h else None
    memory = h.memory_total_bytes / 2**30 if h else None
    criteria.append(_line("cpu_cores", _("CPU cores"), cores, float(hosts.min_cpu_cores), "",
                          at_least(cores, hosts.min_cpu_cores),
                          _("use a PC with more cores for meetings"),
                          "" if h else missing("host")))
    criteria.append(_line("memory", _("memory"), memory, hosts.min_memory_gib, "GiB",
                          at_least(memory, hosts.min_memory_gib),
                          _("add memory up to {memory:g} GiB").format(
                              memory=hosts.min_memory_gib),
                          "" if h else missing("host")))
    return Readiness(tuple(criteria))


def window_criteria(call: CallPreset, results: Mapping[str, CheckResult | None],
                    errors: Mapping[str, str]) -> list[Criterion]:
    """The call preset's targets over short windows (Teams': loss and jitter in any 15 s,
    loss in any 200 ms, reordering), judged on the media run's worst window; each note
    names that window and says where it started in the run."""
    m = results.get("media")
    r = m if isinstance(m, media.Result) and m.udp_reachable else None
    why = ("" if r is not None else _("UDP blocked: no media stream to judge") if
           isinstance(m, media.Result) else _("{check} check: {error}").format(
               check="media", error=errors["media"] if "media" in errors else _("did not run")))
    w, b = call.window_seconds, call.burst_seconds * 1e3
    out = []
    for id_, name, limit, unit, fix in (
            ("window_loss", _("loss, worst {seconds:g} s").format(seconds=w),
             call.max_window_loss_percent, "%",
             _("loss comes and goes: check Wi-Fi interference, cabling and the modem's log of "
               "line drops; ask the provider to watch the line over a day")),
            ("window_jitter", _("jitter, worst {seconds:g} s").format(seconds=w),
             call.max_window_jitter_ms, "ms",
             _("find what loads the line at times (backups, updates, video streams) or enable "
               "QoS for calls")),
            ("burst_loss", _("loss, worst {ms:g} ms").format(ms=b),
             call.max_burst_loss_percent, "%",
             _("short outages: check Wi-Fi roaming and interference, cabling, and whether the "
               "modem resynchronises")),
            ("reorder", _("reordering"), call.max_reorder_percent, "%",
             _("packets take different paths (load-balanced or bonded lines, a Wi-Fi mesh): "
               "have the router or provider keep each flow on one path"))):
        if limit is None:
            continue
        measured, note = (None, why) if r is None else _worst(id_, r, call, limit)
        verdict = "unknown" if measured is None else at_most(measured, limit)
        out.append(_line(id_, name, measured, limit, unit, verdict, fix, note))
    return out


def _worst(id_: str, r: media.Result, call: CallPreset,
           limit: float) -> tuple[float | None, str]:
    """One window criterion's figure (in the criterion's unit) and its note."""
    if r.window_seconds is None:
        return None, _("the agent's media check predates window statistics: update the agent")
    if id_ == "reorder":
        if r.reorder_ratio is None:
            return None, _("no echo came back")
        return r.reorder_ratio * 100, _(
            "{late:.0f} of {received} packets arrived after a later one (RFC 4737), the worse "
            "direction").format(late=r.reorder_ratio * r.packets_received,
                                received=r.packets_received)
    burst = id_ == "burst_loss"
    window, configured, wanted = (
        (r.burst_loss, r.burst_seconds, call.burst_seconds) if burst else
        (r.window_jitter if id_ == "window_jitter" else r.window_loss, r.window_seconds,
         call.window_seconds))
    if configured is None or abs(configured - wanted) > 1e-9:
        what = "burst_seconds" if burst else "window_seconds"
        return None, _("the media check measured {measured:g} s spans, the call preset judges "
                       "{wanted:g} s: set the media check's {key} to {wanted:g}").format(
                           measured=configured or 0, wanted=wanted, key=what)
    if window is None:
        return None, _("too few echoes came back")
    jitter = id_ == "window_jitter"
    value = window.value * (1e3 if jitter else 100)
    shown = (_("{value:.1f} ms jitter") if jitter else _("{value:.1f} % loss")).format(
        value=value)
    if window.length_seconds < wanted - 1e-9 and window.start_seconds == 0:
        where = _("the whole {seconds:g} s run (shorter than one window)").format(
            seconds=round(window.length_seconds, 1))
    else:
        where = (_("{ms:g} ms window starting {start:g} s into the test") if burst else
                 _("{seconds:g} s window starting {start:g} s into the test")).format(
                     ms=wanted * 1e3, seconds=wanted, start=round(window.start_seconds, 2))
    if value > limit:
        return value, _("{where}: {shown} > {limit:g} {unit}").format(
            where=where, shown=shown, limit=limit, unit="ms" if jitter else "%")
    return value, _("worst: {where}, {shown}").format(where=where, shown=shown)


def _enough(good: int, pending: int, need: int) -> Verdict:
    """Enough PCs are good; or could be, once the ones not yet measured are; or not."""
    return "pass" if good >= need else "unknown" if good + pending >= need else "fail"


def pcs_text(n: int) -> str:
    """"3 PCs", in the current language."""
    return ngettext("{count} PC", "{count} PCs", n).format(count=n)


@dataclass(frozen=True)
class _Path:
    udp: bool | None
    rtt_ms: float | None
    jitter_ms: float | None
    loss_percent: float | None
    mos: float | None
    note: str


def _path(results: Mapping[str, CheckResult | None], errors: Mapping[str, str]) -> _Path:
    """The media path's figures from the UDP check; from ICMP/TCP when UDP is blocked or
    was not measured, and saying so."""
    m = results.get("media")
    figures = media.call_figures(m) if isinstance(m, media.Result) else None
    if isinstance(m, media.Result) and m.udp_reachable and figures is not None:
        return _Path(True, *figures, m.predicted_mos, "")
    udp = False if isinstance(m, media.Result) else None
    why = (_("UDP blocked") if udp is False else
           _("no UDP measurement ({error})").format(
               error=errors["media"] if "media" in errors else _("media check did not run")))
    lat = results.get("latency")
    target = lat.targets[0] if isinstance(lat, latency.Result) and lat.targets else None
    if target is None or target.rtt_median_seconds is None:
        return _Path(udp, None, None, None, None,
                     _("{why}; no latency figures either").format(why=why))
    rtt, jitter = target.rtt_median_seconds * 1e3, (target.jitter_seconds or 0.0) * 1e3
    loss = (target.loss_ratio or 0.0) * 100
    return _Path(udp, rtt, jitter, loss, emodel.predict(rtt, jitter, loss).mos,
                 _("from {method} probes: {why}").format(method=target.method, why=why))


FORMATS: dict[str, Callable[[float], str]] = {
    "Mbit/s": lambda v: f"{v:.1f} Mbit/s", "ms": lambda v: f"{v:.1f} ms",
    "%": lambda v: f"{v:.2f} %", "GiB": lambda v: f"{v:.1f} GiB", "": lambda v: f"{v:g}"}
"""How the table writes each unit's figures (with the language's decimal mark: `show`)."""


def show(value: float | None, unit: str, criterion_id: str = "") -> str:
    """A figure as the table prints it."""
    if value is None:
        return "-"
    if criterion_id == "udp":
        return _("gets through") if value else _("blocked")
    if criterion_id == "mos":
        return decimal_mark(f"{value:.2f}")
    return decimal_mark(FORMATS[unit](value))


VERDICT_WORDS: dict[Verdict, str] = {"pass": N_("PASS"), "warn": N_("WARN"), "fail": N_("FAIL"),
                                     "unknown": N_("UNKNOWN")}
STATE_WORDS: dict[State, str] = {"ready": N_("READY"),
                                 "ready-with-warnings": N_("READY-WITH-WARNINGS"),
                                 "not-ready": N_("NOT-READY"), "unknown": N_("UNKNOWN")}
"""Verdicts and states as a table shows them (`_()` of these at the point of use)."""


def verdict_word(verdict: Verdict) -> str:
    """A verdict as a person reads it: FAIL, or KHÔNG ĐẠT in Vietnamese."""
    return _(VERDICT_WORDS[verdict])


def state_word(state: State) -> str:
    """A state as a person reads it: NOT-READY, or CHƯA SẴN SÀNG in Vietnamese."""
    return _(STATE_WORDS[state])


STATE_VALUE: dict[State, int] = {"ready": 0, "ready-with-warnings": 1, "not-ready": 2,
                                 "unknown": -1}
VERDICT_VALUE: dict[Verdict, int] = {"pass": 0, "warn": 1, "fail": 2, "unknown": -1}
"""How states and verdicts are exported as gauges: by severity, unknown apart."""
_RANK: dict[State, int] = {"ready": 0, "ready-with-warnings": 1, "unknown": 2, "not-ready": 3}


@dataclass(frozen=True)
class HostResults:
    """One PC's latest results by check name, the errors of checks that failed, its role."""

    role: str | None
    results: Mapping[str, CheckResult | None]
    errors: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, role: str | None, outcomes: Mapping[str, Outcome]) -> HostResults:
        """From each check's latest outcome, as the agent and the server hold them."""
        return cls(role, {n: o.result for n, o in outcomes.items()},
                   {n: o.error or "" for n, o in outcomes.items() if not o.ok})


@dataclass(frozen=True)
class WardReadiness(Readiness):
    """A ward's verdict: enough working PCs, enough video-ready PCs, and the criteria of its
    best PC for the calls (`video_host`); each PC's own verdict in `hosts`."""

    hosts: Mapping[str, Readiness] = field(default_factory=dict)
    video_host: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "video_host": self.video_host,
                "hosts": {h: r.as_dict() for h, r in sorted(self.hosts.items())}}


def rollup(profile: Profile, hosts: Mapping[str, HostResults],
           call: LinkRequirement | None = None) -> WardReadiness:
    """One verdict for a ward from its PCs' latest results.

    The ward holds the city's calls if enough of the PCs whose role holds them are ready
    (one good conference-room PC is enough when the profile asks for one, whatever the
    counter PCs lack); the call criteria shown are those of the best such PC. Every PC
    counts toward the working PCs the profile requires when it meets the host spec.
    """
    judged = {name: evaluate(profile, h.results, h.errors, call, h.role)
              for name, h in hosts.items()}
    spec = [[c.verdict for c in r.criteria if c.id in ("cpu_cores", "memory")]
            for r in judged.values()]
    working = sum(all(v in ("pass", "warn") for v in pc) for pc in spec)
    pending = sum("unknown" in pc and "fail" not in pc for pc in spec)
    need = profile.hosts.min_count
    reporting = (_("{pcs} reporting, {pending} not yet measured") if pending else
                 _("{pcs} reporting")).format(pcs=pcs_text(len(hosts)), pending=pending)
    criteria = [_line(
        "hosts", _("working PCs"), float(working), float(need), "",
        _enough(working, pending, need) if hosts else "unknown",
        _("add or upgrade PCs to {cores} cores and {memory:g} GiB, and install the agent on "
          "each").format(cores=profile.hosts.min_cpu_cores, memory=profile.hosts.min_memory_gib),
        reporting if hosts else _("no agent reports from this ward"))]

    video = profile.video
    candidates = {name: judged[name] for name, h in hosts.items() if video.holds_calls(h.role)}
    ready = sum(r.state in ("ready", "ready-with-warnings") for r in candidates.values())
    pending = sum(r.state == "unknown" for r in candidates.values())
    roles = _(" or ").join(video.roles) or _("any")
    verdict = _enough(ready, pending, video.min_ready_hosts)
    if not candidates:
        verdict = "unknown" if video.min_ready_hosts else "pass"
    criteria.append(_line(
        "video_hosts", _("video-ready PCs"), float(ready), float(video.min_ready_hosts), "",
        verdict, _("fix the failing criteria of the best PC below"),
        _("{pcs} in role {roles} reporting").format(pcs=pcs_text(len(candidates)), roles=roles)
        if candidates else
        _("no PC in role {roles} reports: install the agent there, with that role").format(
            roles=roles)))

    best = min(candidates, default=None, key=lambda n: (
        _RANK[candidates[n].state], -sum(c.verdict == "pass" for c in candidates[n].criteria),
        n))
    if best is not None:
        criteria += [replace(c, host=best) for c in candidates[best].criteria]
    else:
        why = _("no PC in role {roles} reports").format(roles=roles)
        criteria += [replace(c, measured=None, verdict="unknown", note=why, fix="")
                     for c in evaluate(profile, {}, {}, call).criteria]
    return WardReadiness(tuple(criteria), judged, best)
