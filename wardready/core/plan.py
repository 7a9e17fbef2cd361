"""The city measurement plan: which PCs run throughput tests, how often, how many bytes a ward
may spend on them a day, and when none may start (quiet windows).

It lives in `inventory.yml` (`measurement_plan:`), so operators change it in one place; the
server hands each agent its own part (`GET /api/v1/plan`) and enforces the windows and the
budget when it grants test slots. Times of day are in the plan's time zone (the city's).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from wardready.core.configfile import TimeZoneName
from wardready.core.i18n import _

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MB = 1_000_000


def _clock_text(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 10:00 as the sexagesimal number 600.
        raise ValueError(_('write times of day in quotes, e.g. "10:00" (unquoted, YAML reads '
                           "them as numbers)"))
    return value


ClockTime = Annotated[str, BeforeValidator(_clock_text),
                      Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
"""A time of day, "HH:MM" (24:00 is the end of the day)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def minutes(clock: str) -> int:
    """Minutes since midnight of an "HH:MM" time."""
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


class QuietWindow(Strict):
    """A time when no throughput test may start: a scheduled conference, office hours. For
    the whole city, or one working group's wards, or one ward."""

    name: str = Field(min_length=1, max_length=120)
    start: ClockTime
    end: ClockTime
    days: list[Weekday] = Field(default=list(WEEKDAYS), min_length=1, description=(
        "Days of the week it recurs on; default every day."))
    dates: list[date] = Field(default=[], description=(
        "Only on these dates (a one-off conference); then `days` is not used."))
    working_group: str | None = None
    ward: str | None = None

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: str, info: object) -> str:
        start = getattr(info, "data", {}).get("start")
        if start is not None and minutes(end) <= minutes(start):
            raise ValueError(_("the window ends ({end}) before it starts ({start}); a window "
                               "across midnight is written as two windows").format(
                                   end=end, start=start))
        return end

    @property
    def scope(self) -> tuple[str, str]:
        """("city", ""), ("working_group", id) or ("ward", id)."""
        if self.ward is not None:
            return "ward", self.ward
        if self.working_group is not None:
            return "working_group", self.working_group
        return "city", ""

    def on(self, day: date) -> bool:
        """Whether the window recurs on this (local) date."""
        return day in self.dates if self.dates else WEEKDAYS[day.weekday()] in self.days


class Throughput(Strict):
    """How a ward's uplink throughput is tested."""

    testers: int = Field(default=1, ge=0, le=16, description=(
        "PCs per ward that run scheduled tests (0: none)."))
    prefer_role: str | None = Field(default=None, description=(
        "Role of the PC elected first (e.g. conference-room); else the best-placed PC."))
    hosts: list[str] = Field(default=[], description=(
        "Named testers (the ward's hosts), overriding the election."))
    mean_interval_hours: float = Field(default=6.0, gt=0)
    min_interval_hours: float = Field(default=1.0, gt=0)
    max_interval_hours: float = Field(default=12.0, gt=0)
    daily_budget_mb: float = Field(default=500.0, gt=0, description=(
        "Bytes a ward's tests may move a day (local day), both directions, in MB (10^6)."))
    test_max_mb: float = Field(default=220.0, gt=0, description=(
        "The most one test may move, both directions (the slot's byte budget)."))
    max_age_hours: float = Field(default=24.0, gt=0, description=(
        "Freshness target: a ward's latest uplink figure is never older (the alert's bound)."))

    @property
    def problem(self) -> tuple[str, str] | None:
        """(field, why) if these figures contradict each other."""
        figures = {"least": self.min_interval_hours, "most": self.max_interval_hours,
                   "mean": self.mean_interval_hours, "budget": self.daily_budget_mb,
                   "test": self.test_max_mb, "age": self.max_age_hours}
        if self.min_interval_hours > self.max_interval_hours:
            return "min_interval_hours", _("{least:g} h is above max_interval_hours ({most:g} "
                                           "h)").format(**figures)
        if not self.min_interval_hours <= self.mean_interval_hours <= self.max_interval_hours:
            return "mean_interval_hours", _(
                "{mean:g} h is outside min_interval_hours..max_interval_hours "
                "({least:g}..{most:g})").format(**figures)
        if self.daily_budget_mb < self.test_max_mb:
            return "daily_budget_mb", _("{budget:g} MB is below one test (test_max_mb: "
                                        "{test:g} MB)").format(**figures)
        if self.max_age_hours < self.max_interval_hours:
            return "max_age_hours", _("{age:g} h is below max_interval_hours ({most:g} h): "
                                      "tests cannot keep up").format(**figures)
        return None

    def next_interval(self, rng: random.Random) -> float:
        """Seconds to the next test (`draw_interval` on these figures)."""
        return draw_interval(rng, 3600 * self.mean_interval_hours,
                             3600 * self.min_interval_hours, 3600 * self.max_interval_hours)


def draw_interval(rng: random.Random, mean: float, low: float, high: float) -> float:
    """Time to the next test: exponential around `mean`, clamped to [low, high], as ndt7's
    unattended clients draw theirs, so tests fall at random times, not on the hour."""
    return min(high, max(low, rng.expovariate(1 / mean)))


class ThroughputOverride(Strict):
    """The throughput fields a working group or ward sets differently; the rest inherit."""

    testers: int | None = Field(default=None, ge=0, le=16)
    prefer_role: str | None = None
    hosts: list[str] | None = None
    mean_interval_hours: float | None = Field(default=None, gt=0)
    min_interval_hours: float | None = Field(default=None, gt=0)
    max_interval_hours: float | None = Field(default=None, gt=0)
    daily_budget_mb: float | None = Field(default=None, gt=0)
    test_max_mb: float | None = Field(default=None, gt=0)
    max_age_hours: float | None = Field(default=None, gt=0)


class Override(Strict):
    """Throughput settings for one working group's wards or one ward."""

    working_group: str | None = None
    ward: str | None = None
    throughput: ThroughputOverride


class MeasurementPlan(Strict):
    """The whole `measurement_plan:` section."""

    timezone: TimeZoneName = Field(default="Asia/Ho_Chi_Minh", description="An IANA time zone.")
    pull_seconds: float = Field(default=300.0, ge=10, le=86400, description=(
        "How often agents fetch their plan: how soon a change reaches them."))
    throughput: Throughput = Throughput()
    overrides: list[Override] = []
    quiet_windows: list[QuietWindow] = []

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def throughput_for(self, ward: str, working_group: str) -> Throughput:
        """The ward's throughput settings: the city's, then its group's, then its own."""
        merged = self.throughput
        for o in self.overrides:  # the group's first, so the ward's own wins
            if o.ward is None and o.working_group == working_group:
                merged = merged.model_copy(update=o.throughput.model_dump(exclude_none=True))
        for o in self.overrides:
            if o.ward == ward:
                merged = merged.model_copy(update=o.throughput.model_dump(exclude_none=True))
        return merged

    def windows_for(self, ward: str, working_group: str) -> list[QuietWindow]:
        """The quiet windows that apply to the ward: the city's, its group's, its own."""
        return [w for w in self.quiet_windows
                if (w.ward is None and w.working_group is None) or w.ward == ward
                or (w.ward is None and w.working_group == working_group)]


@dataclass(frozen=True)
class Quiet:
    """One occurrence of a quiet window, in seconds since the epoch."""

    name: str
    start: float
    end: float


def occurrences(windows: Sequence[QuietWindow], zone: ZoneInfo, since: float,
                until: float) -> list[Quiet]:
    """Every occurrence of `windows` that overlaps [since, until), by start."""
    first = datetime.fromtimestamp(since, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(until, zone).date()
    found = []
    day = first
    while day <= last:
        for w in windows:
            if w.on(day):
                start = _at(day, w.start, zone)
                end = _at(day, w.end, zone)
                if end > since and start < until:
                    found.append(Quiet(w.name, start, end))
        day += timedelta(days=1)
    return sorted(found, key=lambda q: (q.start, q.end))


def _at(day: date, clock: str, zone: ZoneInfo) -> float:
    m = minutes(clock)
    return datetime.combine(day + timedelta(days=m // 1440), time(m % 1440 // 60, m % 60),
                            zone).timestamp()


def quiet_at(windows: Sequence[QuietWindow], zone: ZoneInfo, now: float) -> Quiet | None:
    """The window in effect at `now`, its end extended over windows that follow without a
    gap (so a retry is not sent into the next one), or None."""
    found = occurrences(windows, zone, now, now + 2 * 86400)
    current = next((q for q in found if q.start <= now < q.end), None)
    if current is None:
        return None
    end, names = current.end, [current.name]
    for q in found:
        if q.start <= end and q.end > end:
            end = q.end
            names.append(q.name)
    return Quiet(" + ".join(dict.fromkeys(names)), current.start, end)


def day_start(now: float, zone: ZoneInfo) -> float:
    """When the local day that holds `now` began (the budget's day)."""
    local = datetime.fromtimestamp(now, zone)
    return datetime.combine(local.date(), time(0), zone).timestamp()


def day_end(now: float, zone: ZoneInfo) -> float:
    local = datetime.fromtimestamp(now, zone)
    return datetime.combine(local.date() + timedelta(days=1), time(0), zone).timestamp()


def plan_errors(plan: MeasurementPlan, wards: dict[str, str], groups: set[str],
                roles: set[str]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """References and figures `inventory.load_inventory` rejects, with where they are.
    `wards` maps each ward id to its working group."""
    base = ("measurement_plan",)
    yield from _throughput_errors(plan.throughput, (*base, "throughput"), roles)
    seen: dict[tuple[str | None, str | None], int] = {}
    for i, o in enumerate(plan.overrides):
        where = (*base, "overrides", i)
        if (o.ward is None) == (o.working_group is None):
            yield where, _("an override names exactly one of ward or working_group")
            continue
        yield from _scope_errors(o.ward, o.working_group, wards, groups, where)
        if (o.ward, o.working_group) in seen:
            yield where, _("a second override for the same {scope} (also {also})").format(
                scope=_scope_text(o.ward, o.working_group),
                also=f"overrides[{seen[o.ward, o.working_group]}]")
        seen.setdefault((o.ward, o.working_group), i)
        merged = plan.throughput_for(o.ward or "", o.working_group or wards.get(o.ward or "", ""))
        yield from _throughput_errors(merged, (*where, "throughput"), roles,
                                      given=o.throughput.model_fields_set)
    for i, w in enumerate(plan.quiet_windows):
        where = (*base, "quiet_windows", i)
        if w.ward is not None and w.working_group is not None:
            yield where, _("a quiet window names ward or working_group, not both")
        yield from _scope_errors(w.ward, w.working_group, wards, groups, where)
        for j, other in enumerate(plan.quiet_windows[:i]):
            if other.scope == w.scope and _overlap(w, other):
                yield where, _("overlaps {other} ({name}, {start}-{end}) for the same {scope}: "
                               "merge them").format(other=f"quiet_windows[{j}]",
                                                    name=repr(other.name), start=other.start,
                                                    end=other.end,
                                                    scope=_scope_text(w.ward, w.working_group))
                break


def _throughput_errors(t: Throughput, where: tuple[str | int, ...], roles: set[str],
                       given: set[str] | None = None
                       ) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if t.prefer_role is not None and t.prefer_role not in roles:
        yield (*where, "prefer_role"), _("unknown role {value} (expected one of: {known})"
                                         ).format(value=repr(t.prefer_role),
                                                  known=", ".join(sorted(roles))
                                                  or _("none defined"))
    problem = t.problem
    if problem is not None:
        field, why = problem
        if given is None or field in given:
            yield (*where, field), why
        else:  # the inherited figure is wrong only with what this override sets
            yield (*where, sorted(given)[0]), _("makes {field} wrong: {why}").format(
                field=field, why=why)


def _scope_errors(ward: str | None, group: str | None, wards: dict[str, str],
                  groups: set[str], where: tuple[str | int, ...]
                  ) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if ward is not None and ward not in wards:
        yield (*where, "ward"), _("unknown ward {value} (not in the inventory's wards)").format(
            value=repr(ward))
    if group is not None and group not in groups:
        shown = sorted(groups)
        known = ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")
        yield (*where, "working_group"), _("unknown working group {value} (expected one of: "
                                           "{known})").format(value=repr(group), known=known)


def _scope_text(ward: str | None, group: str | None) -> str:
    if ward is not None:
        return _("ward {value}").format(value=repr(ward))
    if group is not None:
        return _("working group {value}").format(value=repr(group))
    return _("city")


def _overlap(a: QuietWindow, b: QuietWindow) -> bool:
    if a.dates and b.dates:
        shared = bool(set(a.dates) & set(b.dates))
    elif a.dates or b.dates:
        dated, weekly = (a, b) if a.dates else (b, a)
        shared = any(WEEKDAYS[d.weekday()] in weekly.days for d in dated.dates)
    else:
        shared = bool(set(a.days) & set(b.days))
    return shared and minutes(a.start) < minutes(b.end) and minutes(b.start) < minutes(a.end)
