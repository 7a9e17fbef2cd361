"""`wardready-agent check`: every enabled check once, now, then the readiness verdict.

For the technician installing the agent: a progress line per check on stderr while they run,
then a table (criterion, measured, required, verdict, what to do) or `--json` on stdout.
The requirement profile comes from the server, or from the local inventory when the server
cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from wardready.agent.agent import run_check
from wardready.agent.config import AgentConfig
from wardready.checks import REGISTRY
from wardready.checks.base import ServerLink, server_tls
from wardready.core.api import PROFILE_PATH
from wardready.core.errors import ConfigError
from wardready.core.inventory import CallPreset, Profile, load_inventory
from wardready.model import segments
from wardready.model.readiness import HostResults, Readiness, evaluate, show
from wardready.model.report import Outcome

ORDER = ("host", "peripherals", "latency", "media", "bandwidth")
"""Light checks first; the link is loaded last so it does not disturb the media figures."""
WIDTH = 100
PROFILE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Requirement:
    """The ward's profile, the video call it requires (if it names one), the PC roles."""

    profile: Profile
    call: CallPreset | None
    roles: list[str]


async def fetch_profile(server: ServerLink) -> tuple[Requirement | None, str]:
    """The ward's profile, call and roles from the server, or None and why not."""
    tls: ssl.SSLContext | bool = server_tls(server.ca_file) if server.url.startswith(
        "https") else False
    try:
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PROFILE_TIMEOUT_SECONDS)) as http, \
                http.get(server.url + PROFILE_PATH, ssl=tls,
                         headers={"Authorization": f"Bearer {server.token}"}) as resp:
            if resp.status != 200:
                return None, f"server answered {resp.status}"
            body = await resp.json()
        call = CallPreset.model_validate(body["call"]) if body.get("call") else None
        profile = Profile.model_validate(body["profile"])
        roles = [str(r["id"]) for r in body.get("roles", [])]
        return Requirement(profile, call, roles), f"from the server ({body['profile_id']})"
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        return None, f"server unreachable ({type(exc).__name__})"


def local_profile(config: AgentConfig) -> Requirement | None:
    if config.inventory is None:
        return None
    inventory = load_inventory(config.inventory)
    ward = inventory.ward(config.ward)
    if ward is None:
        return None
    profile = inventory.profile_of(ward)
    return Requirement(profile, inventory.call_of(profile), [r.id for r in inventory.roles])


async def run_once(config: AgentConfig, token: str,
                   progress: Callable[[str], None], now: bool = False
                   ) -> tuple[dict[str, Outcome], Requirement, str]:
    """Run the enabled checks one after another; the profile the verdict is judged by."""
    server = ServerLink(str(config.server_url).rstrip("/"), token, config.ca_file)
    required, source = await fetch_profile(server)
    if required is None:
        required = local_profile(config)
        if required is None:
            raise ConfigError("agent config", 0, "inventory",
                              f"no requirement profile: {source}, and no local inventory")
        source = f"from {config.inventory} ({source})"
    if config.role is not None and config.role not in required.roles:
        raise ConfigError("agent config", 0, "role", f"unknown role {config.role!r} (the "
                          f"ward's inventory has: {', '.join(required.roles) or 'none'})")
    context = config.context(server)
    # Continuous checks (the probe) measure over hours; the verdict on the spot does not use
    # them, and one interval would keep the technician waiting a minute for nothing.
    enabled = {n: c for n, c in config.check_configs().items() if not REGISTRY[n].continuous}
    if now and "bandwidth" in enabled:
        enabled["bandwidth"] = enabled["bandwidth"].model_copy(update={"override": True})
        progress("--now: the throughput test runs whatever the plan and the link say (quiet "
                 "windows, the ward's budget, a call in progress); the server counts it")
    names = [n for n in ORDER if n in enabled] + [n for n in enabled if n not in ORDER]
    outcomes: dict[str, Outcome] = {}
    for i, name in enumerate(names, start=1):
        progress(f"[{i}/{len(names)}] {name} ...")
        outcome = await run_check(REGISTRY[name], enabled[name], context)
        outcomes[name] = outcome
        state = "ok" if outcome.ok else f"failed: {outcome.error}"
        line = f"[{i}/{len(names)}] {name}: {state} ({outcome.duration_seconds:.1f} s)"
        waited = getattr(outcome.result, "slot_wait_seconds", 0.0)
        if waited >= 1:  # another PC of the ward (or this one's service) was testing
            line += f", after waiting {waited:.0f} s for the ward's test slot"
        deferred = getattr(outcome.result, "deferred", None)
        if deferred is not None:
            line = (f"[{i}/{len(names)}] {name}: not run: {deferred.detail}; it may run in "
                    f"{wait_text(deferred.retry_after_seconds)} (--now runs it anyway)")
        progress(line)
    return outcomes, required, source


def wait_text(seconds: float) -> str:
    """A wait as a person reads it: `25 min`, `3 h 10 min`."""
    mins = max(1, round(seconds / 60))
    return f"{mins} min" if mins < 60 else f"{mins // 60} h {mins % 60:02d} min"


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
        return ["Segments: no segment of this PC's path is at fault."]
    lines = ["Weak segments (what to fix):"]
    for f in found:
        lines.extend(textwrap.wrap(f"{f.segment}: {f.evidence}", WIDTH, initial_indent="  ",
                                   subsequent_indent="      ", break_on_hyphens=False))
        lines.extend(textwrap.wrap(f"fix: {f.fix}", WIDTH, initial_indent="    ",
                                   subsequent_indent="      ", break_on_hyphens=False))
    return lines


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


AIM_NAMES = {"rtc": "video calls", "streaming": "streaming", "gaming": "gaming"}


def reference_lines(readings: dict[str, Any]) -> list[str]:
    """The reference readings as table lines (none without a throughput test)."""
    if not readings:
        return []
    lines = ["Reference readings (shown, not judged):"]
    if readings["aim"]:
        lines.append("  Cloudflare AIM: " + ", ".join(
            f"{AIM_NAMES[k]} {v['class']} ({v['points']} points)"
            for k, v in sorted(readings["aim"].items(), key=lambda kv: kv[0] != "rtc")))
    rpm = [f"{d} {v:.0f}" for d, v in readings["responsiveness_rpm"].items() if v is not None]
    if rpm:
        lines.append("  Responsiveness under load (RPM, round trips per minute): "
                     + ", ".join(rpm))
    for direction, tcp in readings["tcp"].items():
        if tcp["rwnd_limited_ratio"] is None or tcp["sndbuf_limited_ratio"] is None:
            continue
        who = "the server" if direction == "download" else "this PC"
        lines.append(f"  {direction.capitalize()} sender ({who}) held by the receive window "
                     f"{tcp['rwnd_limited_ratio']:.0%} and the send buffer "
                     f"{tcp['sndbuf_limited_ratio']:.0%} of its busy time, "
                     f"{tcp['retransmitted_ratio'] or 0:.1%} retransmitted "
                     f"({tcp['loss_ratio'] or 0:.1%} needed)")
    return [line for text in lines for line in textwrap.wrap(
        text, WIDTH, subsequent_indent="      ", break_on_hyphens=False)]


def table(readiness: Readiness, config: AgentConfig, source: str,
          references: list[str] | None = None) -> str:
    """The verdict as a technician reads it, at most WIDTH columns; `references`: more
    lines shown before the state (the weak segments, readings not judged)."""
    role = f" ({config.role})" if config.role else " (no role set: judged as a video PC)"
    lines = [*textwrap.wrap(f"Ward {config.ward}, host {config.host}{role}: profile {source}",
                            WIDTH, subsequent_indent="    ", break_on_hyphens=False),
             f"{'criterion':<22}{'measured':>15}{'required':>15}  verdict"]
    for c in readiness.criteria:
        lines.append(f"{c.name:<22}{show(c.measured, c.unit, c.id):>15}"
                     f"{show(c.required, c.unit, c.id):>15}  {c.verdict.upper()}")
        for label, text in (("note", c.note), ("fix", c.fix)):
            if text:
                lines.extend(textwrap.wrap(f"{label}: {text}", WIDTH, initial_indent="    ",
                                           subsequent_indent="      ",
                                           break_on_hyphens=False))
    lines.extend(references or [])
    failed = sum(c.verdict == "fail" for c in readiness.criteria)
    lines.append(f"State: {readiness.state.upper()}"
                 + (f" ({failed} of {len(readiness.criteria)} criteria fail)" if failed else ""))
    return "\n".join(lines)


def main(config: AgentConfig, token: str, as_json: bool, now: bool = False) -> int:
    """Exit code: 0 ready (warnings allowed), 1 not ready or not known to be ready. `now`
    runs the throughput test inside a quiet window or past the budget."""
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    outcomes, required, source = asyncio.run(run_once(config, token, progress, now))
    if required.profile.video.call:
        source += f", call {required.profile.video.call} (per PC)"
    readiness = judge(outcomes, required, config.role)
    readings = reference_readings(outcomes)
    found = weak_segments(outcomes, required, config)
    if as_json:
        body: dict[str, Any] = {"ward": config.ward, "host": config.host, "role": config.role,
                                "profile_source": source, **readiness.as_dict(),
                                "reference_readings": readings,
                                "segments": [f.as_dict() for f in found],
                                "errors": {n: o.error for n, o in outcomes.items() if not o.ok}}
        print(json.dumps(body, indent=2))
    else:
        print(table(readiness, config, source,
                    segment_lines(found) + reference_lines(readings)))
    return 0 if readiness.state in ("ready", "ready-with-warnings") else 1
