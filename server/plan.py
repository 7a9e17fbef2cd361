"""The city measurement plan as the server holds it: each agent's part of it, the tester
election, and what decides whether a throughput-test slot may be granted now.

The plan is read from the inventory file and read again when the file changes (a mistake
keeps the plan in force and is logged as one line), so an operator's change reaches every
agent at its next pull without a restart anywhere. The daily byte budgets, the PCs that say
they carry a call, the deferrals and the wards' RTT baselines are kept in memory: a restart
forgets them (a budget starts over, a baseline is learnt again from the next tests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from wardready.checks.bandwidth import DeferReason
from wardready.core import i18n
from wardready.core.errors import ConfigError
from wardready.core.i18n import _
from wardready.core.inventory import Inventory, load_inventory
from wardready.core.metrics import MetricSpec, Sample
from wardready.core.plan import (
    MB,
    Quiet,
    QuietWindow,
    Throughput,
    day_end,
    day_start,
    occurrences,
    quiet_at,
)
from wardready.model.report import Outcome
from wardready.server.auth import authenticate
from wardready.server.bodies import read_json, validated
from wardready.server.context import FLEET, Fleet

log = logging.getLogger(__name__)

Refusal = Literal["quiet_window", "budget", "ward_in_use"]
"""Why the plan refuses a slot (the 429's `reason`; the scheduler's own are ward_busy and
city_busy)."""
DEFERRALS: tuple[DeferReason, ...] = get_args(DeferReason)
RELOAD_CHECK_SECONDS = 2.0
BUSY_MAX_TTL_SECONDS = 120.0
BASELINE_SECONDS = 24 * 3600.0
"""A ward's RTT baseline is the lowest idle RTT its tests saw over this span."""
WINDOWS_AHEAD_SECONDS = 7 * 86400.0


@dataclass(frozen=True)
class Candidate:
    """A PC of the ward, as the election sees it."""

    host: str
    role: str | None
    download_bytes_per_second: float | None
    """Its latest throughput test's download figure, if it has one."""


def elect(settings: Throughput, candidates: list[Candidate]) -> tuple[list[str], str]:
    """The ward's testers and why: named hosts, else PCs of the preferred role, then the
    best placed (fastest recent download), then by name so every ask gets the same answer."""
    if settings.testers == 0:
        return [], _("the plan runs no scheduled tests here")
    if settings.hosts:
        return list(settings.hosts), _("named in the plan")
    preferred = [c for c in candidates if settings.prefer_role and c.role == settings.prefer_role]
    others = [c for c in candidates if c not in preferred]
    others.sort(key=lambda c: (-(c.download_bytes_per_second or 0.0), c.host))
    chosen = (sorted(preferred, key=lambda c: c.host) + others)[:settings.testers]
    if not chosen:
        return [], _("no PC of the ward has reported yet")
    if chosen[0] in preferred:
        return [c.host for c in chosen], _("role {role}").format(role=settings.prefer_role)
    return [c.host for c in chosen], _("best placed (fastest recent figures)")


class PlanBook:
    """The inventory's plan, re-read when its file changes; a bad edit keeps the last good
    one in force."""

    def __init__(self, path: Path | None, inventory: Inventory,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.inventory, self.clock = path, inventory, clock
        self._stamp = self._stat()
        self._looked_at = clock()
        self.loaded_at = time.time()
        self.reload_errors = 0
        self.error: str | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def current(self) -> Inventory:
        """The inventory whose plan is in force now."""
        now = self.clock()
        if self.path is None or now - self._looked_at < RELOAD_CHECK_SECONDS:
            return self.inventory
        self._looked_at = now
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return self.inventory
        self._stamp = stamp
        try:
            self.inventory = load_inventory(self.path)
        except ConfigError as exc:
            self.reload_errors += 1
            self.error = str(exc)
            log.error("measurement plan not reloaded, the last good one stays: %s", exc)
        else:
            self.loaded_at, self.error = time.time(), None
            log.info("measurement plan reloaded from %s", self.path)
        return self.inventory


@dataclass
class Planner:
    """What the plan decides at the server, and the state it needs."""

    book: PlanBook
    spent: dict[tuple[str, float], int] = field(default_factory=dict)
    """Bytes each ward's tests moved, by (ward, start of its local day)."""
    busy: dict[tuple[str, str], float] = field(default_factory=dict)
    """(ward, host) -> until when the PC says it carries traffic (a call)."""
    deferrals: Counter[tuple[str, str]] = field(default_factory=Counter)
    overrides: int = 0
    idle_rtts: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    measured_at: dict[str, float] = field(default_factory=dict)
    """When each ward's latest throughput test that measured something started."""
    _today: float = 0.0

    def settings(self, ward: str) -> tuple[Throughput, list[QuietWindow], Inventory]:
        inv = self.book.current()
        entry = inv.ward(ward)
        group = entry.working_group if entry else ""
        plan = inv.measurement_plan
        return plan.throughput_for(ward, group), plan.windows_for(ward, group), inv

    def spent_today(self, ward: str, now: float) -> int:
        zone = self.book.current().measurement_plan.zone
        return self.spent.get((ward, day_start(now, zone)), 0)

    def spend(self, ward: str, size: int, now: float) -> None:
        """Count bytes a ward's test moved against its day's budget."""
        zone = self.book.current().measurement_plan.zone
        key = (ward, day_start(now, zone))
        if key[1] > self._today:  # the city's first test of a new day: forget the old ones
            self._today = key[1]
            self.spent = {k: v for k, v in self.spent.items() if k[1] >= key[1]}
        self.spent[key] = self.spent.get(key, 0) + size

    def mark_busy(self, ward: str, host: str, seconds: float, now: float) -> None:
        self.busy[ward, host] = now + min(seconds, BUSY_MAX_TTL_SECONDS)

    def in_use(self, ward: str, now: float) -> tuple[str, float] | None:
        """A PC of the ward that says it carries a call, and until when."""
        for (w, host), until in list(self.busy.items()):
            if until <= now:
                del self.busy[w, host]
            elif w == ward:
                return host, until
        return None

    def refusal(self, ward: str, now: float, override: bool
                ) -> tuple[Refusal, float, str] | None:
        """Why no test of this ward may start now (reason, seconds to wait, text), or None.
        An override (a technician's `--now`) passes quiet windows, the budget and calls."""
        settings, windows, inv = self.settings(ward)
        zone = inv.measurement_plan.zone
        if not override:
            quiet = quiet_at(windows, zone, now)
            if quiet is not None:
                return "quiet_window", quiet.end - now, _("quiet window {name!r}").format(
                    name=quiet.name)
            left = settings.daily_budget_mb * MB - self.spent_today(ward, now)
            if left < settings.test_max_mb * MB:
                used = settings.daily_budget_mb - left / MB
                return "budget", day_end(now, zone) - now, _(
                    "the ward's daily test budget is spent ({used:.0f} of {budget:g} MB)"
                ).format(used=used, budget=settings.daily_budget_mb)
        busy = self.in_use(ward, now)
        if busy is not None and not override:
            return "ward_in_use", busy[1] - now, _(
                "PC {host!r} of the ward carries a call").format(host=busy[0])
        return None

    def slot_bytes(self, ward: str, now: float, override: bool) -> int:
        """What a slot granted now may move: one test, within what is left of the budget."""
        settings, _windows, _inv = self.settings(ward)
        test = int(settings.test_max_mb * MB)
        if override:
            return test
        return max(0, min(test, int(settings.daily_budget_mb * MB) - self.spent_today(ward, now)))

    def defer(self, ward: str, reason: str) -> None:
        self.deferrals[ward, reason] += 1

    def note_idle_rtt(self, ward: str, at: float, rtt: float) -> None:
        """An idle RTT a ward's test measured before it started: the baseline's material."""
        series = self.idle_rtts.setdefault(ward, deque(maxlen=64))
        series.append((at, rtt))

    def note_outcomes(self, ward: str, outcomes: Iterable[Outcome]) -> None:
        """Learn from a ward's throughput tests: when it was last measured, and its RTT
        baseline (the idle RTT each test measured before it started)."""
        for o in outcomes:
            if o.check != "bandwidth" or o.result is None:
                continue
            if getattr(o.result, "directions", None):
                self.measured_at[ward] = max(self.measured_at.get(ward, 0.0), o.started_at)
            rtt = getattr(o.result, "idle_rtt_median_seconds", None)
            if rtt is not None and not getattr(o.result, "deferred", None):
                self.note_idle_rtt(ward, o.started_at, rtt)

    def baseline(self, ward: str, now: float) -> float | None:
        """The ward's RTT to the server with the link idle: the lowest of its recent tests."""
        recent = [rtt for at, rtt in self.idle_rtts.get(ward, ()) if now - at < BASELINE_SECONDS]
        return min(recent) if recent else None

    def rtt_bound(self, ward: str) -> float | None:
        """The ward's call preset's RTT bound (else its profile's), in seconds."""
        inv = self.book.current()
        entry = inv.ward(ward)
        if entry is None:
            return None
        profile = inv.profile_of(entry)
        call = inv.call_of(profile)
        return (call.max_rtt_ms if call else profile.link.max_rtt_ms) / 1e3

    def agent_plan(self, ward: str, host: str, candidates: list[Candidate],
                   now: float) -> dict[str, object]:
        """What `GET /api/v1/plan` answers one agent."""
        settings, windows, inv = self.settings(ward)
        testers, why = elect(settings, candidates)
        if not testers and settings.testers and not candidates:
            testers, why = [host], _("the first PC of the ward to ask, until one has reported")
        zone = inv.measurement_plan.zone
        ahead = occurrences(windows, zone, now, now + WINDOWS_AHEAD_SECONDS)
        throughput: dict[str, object] = {
            "tester": host in testers, "testers": testers, "elected": why,
            "mean_interval_seconds": settings.mean_interval_hours * 3600,
            "min_interval_seconds": settings.min_interval_hours * 3600,
            "max_interval_seconds": settings.max_interval_hours * 3600,
            "daily_budget_bytes": int(settings.daily_budget_mb * MB),
            "test_max_bytes": int(settings.test_max_mb * MB),
            "max_age_seconds": settings.max_age_hours * 3600}
        quiet: Quiet | None = quiet_at(windows, zone, now)
        body: dict[str, object] = {
            "timezone": inv.measurement_plan.timezone,
            "pull_seconds": inv.measurement_plan.pull_seconds,
            "throughput": throughput,
            "quiet_windows": [{"name": q.name, "start": q.start, "end": q.end} for q in ahead],
        }
        version = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        throughput["last_test_at"] = self.measured_at.get(ward)  # not in the version
        body.update(version=version, ward=ward, host=host,
                    budget_used_bytes=self.spent_today(ward, now),
                    quiet_now=None if quiet is None else {"name": quiet.name, "end": quiet.end})
        return body

    def samples(self) -> Iterator[Sample]:
        """The plan's figures for the server's /metrics."""
        now = time.time()
        inv = self.book.current()
        yield Sample(PLAN_LOADED, (), self.book.loaded_at)
        yield Sample(PLAN_RELOAD_ERRORS, (), self.book.reload_errors)
        yield Sample(OVERRIDES, (), self.overrides)
        for (ward, reason), count in sorted(self.deferrals.items()):
            yield Sample(DEFERRED, (ward, reason), count)
        in_call: Counter[str] = Counter(w for (w, _), until in self.busy.items() if until > now)
        plan = inv.measurement_plan
        zone = plan.zone
        today = day_start(now, zone)
        quiet: dict[tuple[int, ...], bool] = {}  # most wards share the city's windows
        for entry in inv.wards:
            settings = plan.throughput_for(entry.id, entry.working_group)
            yield Sample(BUDGET, (entry.id,), settings.daily_budget_mb * MB)
            yield Sample(SPENT, (entry.id,), self.spent.get((entry.id, today), 0))
            yield Sample(MAX_AGE, (entry.id,), settings.max_age_hours * 3600)
            windows = plan.windows_for(entry.id, entry.working_group)
            key = tuple(id(w) for w in windows)
            if key not in quiet:
                quiet[key] = quiet_at(windows, zone, now) is not None
            yield Sample(QUIET, (entry.id,), 1 if quiet[key] else 0)
            yield Sample(IN_CALL, (entry.id,), in_call[entry.id])
            if entry.id in self.measured_at:
                yield Sample(MEASURED, (entry.id,), self.measured_at[entry.id])


PLANNER = web.AppKey("planner", Planner)

PLAN_LOADED = MetricSpec("wardready_plan_loaded_timestamp_seconds",
                         "When the measurement plan in force was read from the inventory.")
PLAN_RELOAD_ERRORS = MetricSpec("wardready_plan_reload_errors_total",
                                "Edits of the inventory whose plan was refused (the last good "
                                "one stayed in force).", kind="counter")
DEFERRED = MetricSpec("wardready_throughput_tests_deferred_total",
                      "Throughput tests that fell due but did not run, by ward and reason.",
                      ("ward", "reason"), kind="counter")
OVERRIDES = MetricSpec("wardready_throughput_test_overrides_total",
                       "Tests a technician ran inside a quiet window or past the budget (--now).",
                       kind="counter")
BUDGET = MetricSpec("wardready_plan_daily_budget_bytes",
                    "Bytes the ward's throughput tests may move a day.", ("ward",))
SPENT = MetricSpec("wardready_plan_budget_used_bytes",
                   "Bytes the ward's throughput tests moved today (the plan's local day).",
                   ("ward",))
MAX_AGE = MetricSpec("wardready_plan_max_age_seconds",
                     "How old the ward's latest uplink figure may grow (the plan's target).",
                     ("ward",))
QUIET = MetricSpec("wardready_plan_quiet_window_active",
                   "1 while a quiet window holds the ward's throughput tests back.", ("ward",))
IN_CALL = MetricSpec("wardready_plan_pcs_in_call",
                     "PCs of the ward that say they carry a call now (its tests wait).",
                     ("ward",))
MEASURED = MetricSpec("wardready_ward_uplink_measured_timestamp_seconds",
                      "When the ward's latest throughput test that measured something started "
                      "(any of its PCs).", ("ward",))
METRICS = (PLAN_LOADED, PLAN_RELOAD_ERRORS, DEFERRED, OVERRIDES, BUDGET, SPENT, MAX_AGE, QUIET,
           IN_CALL, MEASURED)


def candidates(fleet: Fleet, ward: str, now: float) -> list[Candidate]:
    """The ward's PCs that reported lately, with what the election weighs."""
    found = []
    for host in sorted(fleet.hosts.get(ward, ())):
        state = fleet.agents.get((ward, host))
        if state is None or now - state.last_report_at > fleet.max_age:
            continue
        test = state.outcomes.get("bandwidth")
        download = None
        if test is not None and test.result is not None:
            download = next((d.bytes_per_second for d in getattr(test.result, "directions", ())
                             if d.direction == "download"), None)
        found.append(Candidate(host, state.role, download))
    return found


async def get_plan(request: web.Request) -> web.Response:
    """The calling agent's part of the plan: whether it tests, how often, the budget, the
    quiet windows of the coming week."""
    identity = await authenticate(request, "agent")
    ward, host, now = identity.ward or "", identity.host or "", time.time()
    planner = request.app[PLANNER]
    with i18n.using(i18n.accepted(request.headers.get("Accept-Language"))):
        answer = planner.agent_plan(ward, host, candidates(request.app[FLEET], ward, now), now)
    return web.json_response(answer)


class BusyMark(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(gt=0, le=BUSY_MAX_TTL_SECONDS)
    bits_per_second: float = Field(ge=0)


async def mark_busy(request: web.Request) -> web.Response:
    """A PC says it carries traffic (a call) for the next `seconds`: no throughput test of its
    ward starts meanwhile."""
    identity = await authenticate(request, "agent")
    mark = validated(BusyMark, await read_json(request))
    request.app[PLANNER].mark_busy(identity.ward or "", identity.host or "", mark.seconds,
                                   time.time())
    return web.Response(status=204)
