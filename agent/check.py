"""`wardready-agent check`: every enabled check once, now, then the readiness verdict.

For the technician installing the agent: a progress line per check on stderr while they run,
then a table (criterion, measured, required, verdict, what to do) or `--json` on stdout.
The requirement profile comes from the server, or from the local inventory when the server
cannot be reached.

What people read is in the current language (`wardready.core.i18n`, set by the CLI); `--json`
stays English, whatever the language.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import textwrap
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from wardready.agent.agent import run_check
from wardready.agent.config import AgentConfig
from wardready.checks import REGISTRY
from wardready.checks.base import ServerLink, server_tls
from wardready.core import i18n
from wardready.core.api import PROFILE_PATH, clock_offset_seconds
from wardready.core.errors import ConfigError
from wardready.core.i18n import N_, _
from wardready.core.inventory import CallPreset, Profile, load_inventory
from wardready.model import segments
from wardready.model.readiness import (
    HostResults,
    Readiness,
    evaluate,
    show,
    state_word,
    verdict_word,
)
from wardready.model.report import CLOCK_AHEAD_SECONDS, Outcome, clock_drift

ORDER = ("host", "peripherals", "latency", "media", "bandwidth")
CHECK_TITLES = {"host": N_("this PC"), "peripherals": N_("peripherals"),
                "latency": N_("latency"), "media": N_("call-shaped UDP stream"),
                "bandwidth": N_("throughput"), "platforms": N_("city platforms"),
                "neighbours": N_("LAN neighbours"), "devices": N_("routers and switches"),
                "path": N_("path to the server"), "lasthop": N_("this PC's network link")}
"""What the progress lines call each check, beside its name in the configuration."""
"""Light checks first; the link is loaded last so it does not disturb the media figures."""
WIDTH = 100
FIGURE = 15
"""Width of the measured and required columns."""
HEADINGS = (N_("criterion"), N_("measured"), N_("required"), N_("verdict"))
PROFILE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Requirement:
    """The ward's profile, the video call it requires (if it names one), the PC roles, and
    the ward's name when the source gives it."""

    profile: Profile
    call: CallPreset | None
    roles: list[str]
    ward_name: str | None = None


@dataclass(frozen=True)
class ProfileSource:
    """Where the profile came from, shown in any language by `text()`: the server (`profile`
    its id), or the local `inventory` because the server was not (`status`: what it
    answered; else `error`: why it could not be reached); `clock_offset`: this PC's clock
    minus the server's, from the answer's `Date`."""

    profile: str = ""
    inventory: str = ""
    status: int | None = None
    error: str = ""
    call: str | None = None
    clock_offset: float | None = None

    def text(self) -> str:
        """In the current language, e.g. `from the server (ward-standard)`."""
        if not self.inventory:
            out = _("from the server ({profile})").format(profile=self.profile)
        else:
            why = (_("server answered {status}").format(status=self.status)
                   if self.status is not None else
                   _("server unreachable ({error})").format(error=self.error))
            out = _("from {inventory} ({why})").format(inventory=self.inventory, why=why)
        if self.call:
            out = _("{source}, call {call} (per PC)").format(source=out, call=self.call)
        return out


async def fetch_profile(server: ServerLink) -> tuple[Requirement | None, ProfileSource]:
    """The ward's profile, call and roles from the server, or None and why not."""
    tls: ssl.SSLContext | bool = server_tls(server.ca_file) if server.url.startswith(
        "https") else False
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PROFILE_TIMEOUT_SECONDS)) as http, \
                http.get(server.url + PROFILE_PATH, ssl=tls,
                         headers={"Authorization": f"Bearer {server.token}"}) as resp:
            offset = clock_offset_seconds(resp.headers.get("Date"), time.time())
            if resp.status != 200:
                return None, ProfileSource(status=resp.status, clock_offset=offset)
            body = await resp.json()
        call = CallPreset.model_validate(body["call"]) if body.get("call") else None
        profile = Profile.model_validate(body["profile"])
        roles = [str(r["id"]) for r in body.get("roles", [])]
        name = body.get("ward_name")  # servers that send it; else the local inventory's
        return (Requirement(profile, call, roles, name if isinstance(name, str) else None),
                ProfileSource(profile=str(body["profile_id"]), clock_offset=offset))
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        return None, ProfileSource(error=type(exc).__name__)


def _ward_name(config: AgentConfig) -> str | None:
    """The ward's name (`Phường Sài Gòn`) from the local inventory, if there is one."""
    if config.inventory is None:
        return None
    ward = load_inventory(config.inventory).ward(config.ward)
    return ward.name if ward is not None else None


def local_profile(config: AgentConfig) -> Requirement | None:
    if config.inventory is None:
        return None
    inventory = load_inventory(config.inventory)
    ward = inventory.ward(config.ward)
    if ward is None:
        return None
    profile = inventory.profile_of(ward)
    return Requirement(profile, inventory.call_of(profile), [r.id for r in inventory.roles],
                       ward.name)


async def run_once(config: AgentConfig, token: str,
                   progress: Callable[[str], None], now: bool = False
                   ) -> tuple[dict[str, Outcome], Requirement, ProfileSource]:
    """Run the enabled checks one after another; the profile the verdict is judged by."""
    server = ServerLink(str(config.server_url).rstrip("/"), token, config.ca_file)
    required, source = await fetch_profile(server)
    if required is None:
        required = local_profile(config)
        if required is None:
            why = (_("server answered {status}").format(status=source.status)
                   if source.status is not None else
                   _("server unreachable ({error})").format(error=source.error))
            raise ConfigError(_("agent config"), 0, "inventory", _(
                "no requirement profile: {why}, and no local inventory").format(why=why))
        source = ProfileSource(inventory=str(config.inventory), status=source.status,
                               error=source.error, clock_offset=source.clock_offset)
    elif required.ward_name is None and config.inventory is not None:
        required = Requirement(required.profile, required.call, required.roles,
                               _ward_name(config))
    if config.role is not None and config.role not in required.roles:
        raise ConfigError(_("agent config"), 0, "role", _(
            "unknown role {role} (the ward's inventory has: {roles})").format(
                role=repr(config.role), roles=", ".join(required.roles) or _("none")))
    context = config.context(server)
    # Continuous checks (the probe) measure over hours; the verdict on the spot does not use
    # them, and one interval would keep the technician waiting a minute for nothing.
    enabled = {n: c for n, c in config.check_configs().items() if not REGISTRY[n].continuous}
    if now and "bandwidth" in enabled:
        enabled["bandwidth"] = enabled["bandwidth"].model_copy(update={"override": True})
        progress(_("--now: the throughput test runs whatever the plan and the link say (quiet "
                   "windows, the ward's budget, a call in progress); the server counts it"))
    names = [n for n in ORDER if n in enabled] + [n for n in enabled if n not in ORDER]
    outcomes: dict[str, Outcome] = {}
    for i, name in enumerate(names, start=1):
        title = _(CHECK_TITLES[name]) if name in CHECK_TITLES else name
        step = {"i": i, "n": len(names), "check": name if title == name else _(
            "{title} ({check})").format(title=title, check=name)}
        progress("[{i}/{n}] {check} ...".format(**step))
        outcome = await run_check(REGISTRY[name], enabled[name], context)
        outcomes[name] = outcome
        seconds = outcome.duration_seconds
        line = (_("[{i}/{n}] {check}: ok ({seconds:.1f} s)") if outcome.ok else
                _("[{i}/{n}] {check}: failed: {error} ({seconds:.1f} s)")).format(
                    **step, seconds=seconds, error=outcome.error)
        waited = getattr(outcome.result, "slot_wait_seconds", 0.0)
        if waited >= 1:  # another PC of the ward (or this one's service) was testing
            line = _("{line}, after waiting {seconds:.0f} s for the ward's test slot").format(
                line=line, seconds=waited)
        deferred = getattr(outcome.result, "deferred", None)
        if deferred is not None:
            line = _("[{i}/{n}] {check}: not run: {detail}; it may run in {wait} (--now runs "
                     "it anyway)").format(**step, detail=deferred.detail,
                                          wait=wait_text(deferred.retry_after_seconds))
        progress(line)
    return outcomes, required, source


def wait_text(seconds: float) -> str:
    """A wait as a person reads it: `25 min`, `3 h 10 min`."""
    mins = max(1, round(seconds / 60))
    if mins < 60:
        return _("{minutes} min").format(minutes=mins)
    return _("{hours} h {minutes:02d} min").format(hours=mins // 60, minutes=mins % 60)


def judge(outcomes: dict[str, Outcome], required: Requirement, role: str | None) -> Readiness:
    pc = HostResults.of(role, outcomes)
    return evaluate(required.profile, pc.results, pc.errors, required.call, role)


def weak_segments(outcomes: dict[str, Outcome], required: Requirement,
                  config: AgentConfig) -> list[segments.Finding]:
    """The segments of this PC's path its results show at fault (docs/segments.md)."""
    pc = HostResults.of(config.role, outcomes)
    holds = required.profile.video.holds_calls(config.role)
    return segments.host_findings(required.profile, pc.results, config.host, config.role,
                                  required.call if holds else None)


def segment_lines(found: list[segments.Finding]) -> list[str]:
    """Which segment is weak, as a technician reads it."""
    if not found:
        return [_("Segments: no segment of this PC's path is at fault.")]
    lines = [_("Weak segments (what to fix):")]
    for f in found:
        lines.extend(textwrap.wrap(f"{segments.segment_name(f.segment)}: {f.evidence}", WIDTH,
                                   initial_indent="  ", subsequent_indent="      ",
                                   break_on_hyphens=False))
        lines.extend(textwrap.wrap(_("fix: {text}").format(text=f.fix), WIDTH,
                                   initial_indent="    ", subsequent_indent="      ",
                                   break_on_hyphens=False))
    return lines


CLOCK_FIX = N_("turn on the PC's time synchronisation (Windows: Settings > Time & language > "
               "Date & time > Set time automatically, then Sync now; Linux: timedatectl "
               "set-ntp true)")


def clock_lines(offset: float | None) -> list[str]:
    """A warning when this PC's clock is far from the server's: the server refuses reports
    dated over `CLOCK_AHEAD_SECONDS` ahead of its clock, so they would be lost."""
    if offset is None or (drift := clock_drift(offset)) == "right":
        return []
    off, limit = wait_text(abs(offset)), wait_text(CLOCK_AHEAD_SECONDS)
    text = (_("Clock: this PC's clock is {offset} ahead of the server's: the server refuses "
              "reports dated over {limit} ahead, so this PC's reports would be lost")
            if drift == "refused" else
            _("Clock: this PC's clock is {offset} ahead of the server's; at {limit} ahead the "
              "server refuses its reports") if drift == "ahead" else
            _("Clock: this PC's clock is {offset} behind the server's: its measurements are "
              "dated that far in the past")).format(offset=off, limit=limit)
    return [*textwrap.wrap(text, WIDTH, subsequent_indent="      ", break_on_hyphens=False),
            *textwrap.wrap(_("fix: {text}").format(text=_(CLOCK_FIX)), WIDTH,
                           initial_indent="    ", subsequent_indent="      ",
                           break_on_hyphens=False)]


def reference_readings(outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """Readings shown beside the MOS but never judged: Cloudflare's AIM scores, the
    responsiveness (RPM) under load and what held the test's TCP senders (TCP_INFO), all
    from the throughput test (docs/emodel.md)."""
    outcome = outcomes.get("bandwidth")
    result = outcome.result if outcome is not None and outcome.ok else None
    directions = getattr(result, "directions", None) or []
    if result is None or not directions:
        return {}
    return {
        "aim": {s.experience: {"points": s.points, "class": s.label}
                for s in getattr(result, "aim", [])},
        "responsiveness_rpm": {d.direction: d.responsiveness_rpm for d in directions},
        "tcp": {d.direction: {"retransmitted_ratio": d.retransmitted_ratio,
                              "loss_ratio": d.loss_ratio,
                              "rwnd_limited_ratio": d.rwnd_limited_ratio,
                              "sndbuf_limited_ratio": d.sndbuf_limited_ratio}
                for d in directions},
    }


AIM_NAMES = {"rtc": N_("video calls"), "streaming": N_("streaming"), "gaming": N_("gaming")}
DIRECTIONS = {"download": N_("download"), "upload": N_("upload")}
AIM_CLASSES = {"bad": N_("bad"), "poor": N_("poor"), "average": N_("average"),
               "good": N_("good"), "great": N_("great")}
"""Cloudflare AIM's classes (core.aim.CLASSES) as a person reads them."""


def reference_lines(readings: dict[str, Any]) -> list[str]:
    """The reference readings as table lines (none without a throughput test)."""
    if not readings:
        return []
    lines = [_("Reference readings (shown, not judged):")]
    if readings["aim"]:
        lines.append("  " + _("Cloudflare AIM: {scores}").format(scores=", ".join(
            _("{experience} {label} ({points} points)").format(
                experience=_(AIM_NAMES[k]), label=_(AIM_CLASSES.get(v["class"], v["class"])),
                points=v["points"])
            for k, v in sorted(readings["aim"].items(), key=lambda kv: kv[0] != "rtc"))))
    rpm = [f"{_(DIRECTIONS.get(d, d))} {v:.0f}"
           for d, v in readings["responsiveness_rpm"].items() if v is not None]
    if rpm:
        lines.append("  " + _("Responsiveness under load (RPM, round trips per minute): "
                              "{values}").format(values=", ".join(rpm)))
    for direction, tcp in readings["tcp"].items():
        if tcp["rwnd_limited_ratio"] is None or tcp["sndbuf_limited_ratio"] is None:
            continue
        held = (_("Download sender (the server) held by the receive window {rwnd:.0%} and the "
                  "send buffer {sndbuf:.0%} of its busy time, {retransmitted:.1%} "
                  "retransmitted ({lost:.1%} needed)") if direction == "download" else
                _("Upload sender (this PC) held by the receive window {rwnd:.0%} and the send "
                  "buffer {sndbuf:.0%} of its busy time, {retransmitted:.1%} retransmitted "
                  "({lost:.1%} needed)"))
        lines.append("  " + held.format(rwnd=tcp["rwnd_limited_ratio"],
                                        sndbuf=tcp["sndbuf_limited_ratio"],
                                        retransmitted=tcp["retransmitted_ratio"] or 0,
                                        lost=tcp["loss_ratio"] or 0))
    return [line for text in lines for line in textwrap.wrap(
        text, WIDTH, subsequent_indent="      ", break_on_hyphens=False)]


def table(readiness: Readiness, config: AgentConfig, source: str,
          references: list[str] | None = None, ward_name: str | None = None) -> str:
    """The verdict as a technician reads it in the current language, at most WIDTH columns
    (counted in characters of NFC text: every Vietnamese letter is one column); `references`:
    more lines shown before the state (the weak segments, readings not judged)."""
    role = (f"({config.role})" if config.role else
            _("(no role set: judged as a video PC)"))
    head = (_("{ward} ({id}), host {host} {role}: profile {source}") if ward_name else
            _("Ward {id}, host {host} {role}: profile {source}")).format(
                ward=ward_name, id=config.ward, host=config.host, role=role, source=source)
    criterion, measured, required, verdict = (_(h) for h in HEADINGS)
    words = [verdict_word(c.verdict) for c in readiness.criteria]
    verdict_width = max(map(len, [verdict, *words]))
    # The name column fits the longest name (22 at least, as it always was in English),
    # as long as the figures and the verdict still fit in WIDTH; longer names wrap.
    most = WIDTH - 2 * FIGURE - 2 - verdict_width
    name_width = min(most, max([22, *(len(c.name) + 2 for c in readiness.criteria)]))
    lines = [*textwrap.wrap(head, WIDTH, subsequent_indent="    ", break_on_hyphens=False),
             f"{criterion:<{name_width}}{measured:>{FIGURE}}{required:>{FIGURE}}  {verdict}"]
    for c, word in zip(readiness.criteria, words, strict=True):
        name = textwrap.wrap(c.name, name_width - 1, subsequent_indent="  ",
                             break_on_hyphens=False) or [""]
        lines.append(f"{name[0]:<{name_width}}{show(c.measured, c.unit, c.id):>{FIGURE}}"
                     f"{show(c.required, c.unit, c.id):>{FIGURE}}  {word}")
        lines.extend(name[1:])
        for label, text in ((_("note: {text}"), c.note), (_("fix: {text}"), c.fix)):
            if text:
                lines.extend(textwrap.wrap(label.format(text=text), WIDTH,
                                           initial_indent="    ", subsequent_indent="      ",
                                           break_on_hyphens=False))
    lines.extend(references or [])
    failed = sum(c.verdict == "fail" for c in readiness.criteria)
    state = state_word(readiness.state)
    lines.extend(textwrap.wrap(
        _("State: {state} ({failed} of {total} criteria fail)").format(
            state=state, failed=failed, total=len(readiness.criteria)) if failed else
        _("State: {state}").format(state=state), WIDTH, subsequent_indent="    ",
        break_on_hyphens=False))
    return unicodedata.normalize("NFC", "\n".join(lines))


def main(config: AgentConfig, token: str, as_json: bool, now: bool = False) -> int:
    """Exit code: 0 ready (warnings allowed), 1 not ready or not known to be ready. `now`
    runs the throughput test inside a quiet window or past the budget."""
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    outcomes, required, source = asyncio.run(run_once(config, token, progress, now))
    if required.profile.video.call:
        source = replace(source, call=required.profile.video.call)
    readings = reference_readings(outcomes)
    if as_json:
        with i18n.using("en"):  # machine output: read by tools, whatever the language
            readiness = judge(outcomes, required, config.role)
            found = weak_segments(outcomes, required, config)
            body: dict[str, Any] = {
                "ward": config.ward, "host": config.host, "role": config.role,
                "profile_source": source.text(), **readiness.as_dict(),
                "reference_readings": readings, "segments": [f.as_dict() for f in found],
                "clock_offset_seconds": source.clock_offset,
                "errors": {n: o.error for n, o in outcomes.items() if not o.ok}}
        print(json.dumps(body, indent=2))
        return 0 if readiness.state in ("ready", "ready-with-warnings") else 1
    readiness = judge(outcomes, required, config.role)
    found = weak_segments(outcomes, required, config)
    print(table(readiness, config, source.text(),
                clock_lines(source.clock_offset) + segment_lines(found)
                + reference_lines(readings), required.ward_name))
    return 0 if readiness.state in ("ready", "ready-with-warnings") else 1
