"""The equipment request list: what each ward must buy or upgrade to meet its profile, with
the measured evidence, priced from the inventory's catalogue.

It is built from the server's own view (each PC's latest results and each ward's link
history) with the same figures and the same comparisons as the Prometheus rules
(`server.shortfalls`), so a ward is on the list exactly when a shortfall rule flags it, for
the same reasons (`Line.flags`). Wards with no fresh evidence are listed apart (`NoData`),
never as needing nothing. Rendered as CSV, XLSX and Markdown by `server.equipment_formats`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from wardready.checks import REGISTRY, devices, host, platforms
from wardready.core import i18n
from wardready.core.i18n import N_, _, ngettext
from wardready.core.inventory import CatalogueItem, Inventory, NeedKind, Profile
from wardready.core.metrics import Sample
from wardready.model import criteria
from wardready.model.criteria import ItemCriterion, LinkId, Source
from wardready.model.readiness import HostResults, pcs_text, rollup, show
from wardready.model.segments import REASONS, Finding, Reason
from wardready.server import readiness, shortfalls
from wardready.server.store import AgentState, Store
from wardready.server.store.port_errors import PORT_ERRORS_WINDOW_SECONDS, PortPoints, crc_per_day

Priority = Literal["high", "medium", "low"]
PRIORITY_ORDER: dict[Priority, int] = {"high": 0, "medium": 1, "low": 2}
"""high: the ward cannot hold the city's video meetings or reach a platform; medium: PCs,
UPS and network devices; low: printers and scanners."""
PRIORITY_NAMES: dict[Priority, str] = {"high": N_("high"), "medium": N_("medium"),
                                       "low": N_("low")}
"""A priority in words, for people (machine output keeps the value)."""
SEGMENT_NAMES: dict[str, str] = {"pc": N_("the PC"), "lan": N_("ward LAN"),
                                 "router": N_("ward router"), "uplink": N_("uplink")}
"""How a line's reason names the segment it fixes (`Line.stated_reason`)."""
LINK_NAMES: dict[LinkId, str] = {"download": N_("download"), "upload": N_("upload"),
                                 "rtt": N_("round-trip time"), "jitter": N_("jitter"),
                                 "loss": N_("packet loss")}
"""A link figure's name as the list writes it (`criteria.LINK`'s, in the language)."""


def link_name(c: LinkId) -> str:
    return _(LINK_NAMES[c])


def windows_text(windows: Mapping[LinkId, float]) -> str:
    """Which window each link figure is judged over, in words (`criteria.windows_text` in
    the current language)."""
    by_window: dict[float, list[str]] = {}
    for c in criteria.LINK:
        by_window.setdefault(windows.get(c.id, c.window_seconds), []).append(link_name(c.id))
    return "; ".join(_("{figures} over the last {duration}").format(
        figures=_listed(names), duration=_duration(seconds))
        for seconds, names in by_window.items())


def _listed(names: Sequence[str]) -> str:
    """`a, b and c`."""
    if len(names) < 2:
        return "".join(names)
    return _("{first} and {last}").format(first=", ".join(names[:-1]), last=names[-1])


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return _("{hours} h").format(hours=_number(seconds / 3600))
    return _("{minutes} min").format(minutes=_number(seconds / 60))


def _number(value: float) -> str:
    """A count of hours or a figure as `g` writes it, with the language's decimal mark."""
    return i18n.decimal_mark(f"{value:g}")


def _decimal(value: float, digits: int) -> str:
    """`value` with `digits` decimals, no grouping: 18.2, or 18,2 in Vietnamese."""
    return i18n.decimal_mark(f"{value:.{digits}f}")


@dataclass(frozen=True)
class WardRef:
    """Who a line is for, as the inventory names it."""

    id: str
    name: str
    working_group: str
    former_district: str


@dataclass(frozen=True)
class Line:
    """One thing a ward must buy or do, how many, why, and what it costs."""

    ward: WardRef
    item: str
    """Catalogue id; empty when no catalogue item covers the need (the reason says which)."""
    description: str
    quantity: int
    unit_price_vnd: int | None
    """None for what needs a quote (a link upgrade) or is not a purchase."""
    reason: str
    """The measured evidence against the requirement, in words."""
    measured_at: float | None
    """When the newest evidence behind the line was measured (epoch seconds)."""
    priority: Priority
    flags: tuple[str, ...]
    """The Prometheus shortfalls this line answers: a link criterion (download, upload, rtt,
    jitter, loss), an item (pc, webcam, microphone, speaker, printer, scanner, ups, router,
    switch), `video`, `platform:<id>`, or `segment:<reason>` (a segment at fault)."""
    segment: str = ""
    """The segment of the path the line fixes (pc, lan, router, uplink); empty for
    equipment that is simply missing."""

    @property
    def subtotal_vnd(self) -> int | None:
        return None if self.unit_price_vnd is None else self.quantity * self.unit_price_vnd

    @property
    def stated_reason(self) -> str:
        """The reason, led by the segment it fixes when it fixes one (`ward LAN: ...`)."""
        if not self.segment:
            return self.reason
        return _("{segment}: {reason}").format(segment=_(SEGMENT_NAMES[self.segment]),
                                               reason=self.reason)


@dataclass(frozen=True)
class NoData:
    """A ward, or part of one, the list cannot judge: nothing is known, not nothing needed."""

    ward: WardRef
    reason: str
    last_report_at: float | None


@dataclass(frozen=True)
class ItemTotal:
    item: str
    description: str
    quantity: int
    unit_price_vnd: int | None
    subtotal_vnd: int | None
    lines: int


@dataclass(frozen=True)
class GroupTotal:
    working_group: str
    name: str
    wards: int
    """Wards with at least one line."""
    lines: int
    subtotal_vnd: int
    """Sum of the priced lines."""
    unpriced_lines: int
    """Lines that need a quote: not in `subtotal_vnd`."""


@dataclass(frozen=True)
class EquipmentList:
    """The whole list: lines ordered by working group, ward, priority and item."""

    generated_at: float
    working_groups: Mapping[str, str]
    """Working group id -> name, every group of the inventory in its order."""
    lines: tuple[Line, ...]
    no_data: tuple[NoData, ...]
    windows: Mapping[LinkId, float]
    """The window each link figure is judged over (the rules' windows), in seconds."""
    notes: tuple[str, ...] = field(default=())

    def only(self, group: str) -> EquipmentList:
        """The part of the list for one working group."""
        return replace(self, working_groups={group: self.working_groups[group]},
                       lines=tuple(x for x in self.lines if x.ward.working_group == group),
                       no_data=tuple(x for x in self.no_data if x.ward.working_group == group))

    def by_group(self) -> dict[str, list[Line]]:
        """Lines of each working group that has any, in the groups' order."""
        grouped: dict[str, list[Line]] = defaultdict(list)
        for line in self.lines:
            grouped[line.ward.working_group].append(line)
        return {g: grouped[g] for g in self.working_groups if g in grouped}

    def item_totals(self) -> list[ItemTotal]:
        """Quantity and cost per catalogue item, city-wide, in first-seen order."""
        totals: dict[tuple[str, str], list[Line]] = {}
        for line in self.lines:
            totals.setdefault((line.item, line.description), []).append(line)
        out = []
        for (item, description), lines in totals.items():
            prices = {line.unit_price_vnd for line in lines}
            price = prices.pop() if len(prices) == 1 else None
            subtotals = [line.subtotal_vnd for line in lines]
            out.append(ItemTotal(item, description, sum(line.quantity for line in lines), price,
                                 None if None in subtotals else sum(s or 0 for s in subtotals),
                                 len(lines)))
        return out

    def group_totals(self) -> list[GroupTotal]:
        """Cost per working group (every group, zero when it needs nothing)."""
        grouped = self.by_group()
        return [GroupTotal(g, name, len({line.ward.id for line in grouped.get(g, [])}),
                           len(grouped.get(g, [])), _priced(grouped.get(g, [])),
                           sum(line.subtotal_vnd is None for line in grouped.get(g, [])))
                for g, name in self.working_groups.items()]

    @property
    def total_vnd(self) -> int:
        """City-wide cost of the priced lines."""
        return _priced(self.lines)

    @property
    def unpriced_lines(self) -> int:
        return sum(line.subtotal_vnd is None for line in self.lines)


def _priced(lines: Iterable[Line]) -> int:
    return sum(line.subtotal_vnd or 0 for line in lines)


# --- building the list -------------------------------------------------------------------

VIDEO_NEEDS: dict[str, NeedKind] = {
    "camera": "webcam", "microphone": "microphone", "speaker": "speaker",
    "cpu_cores": "pc", "memory": "pc", "download": "link-upgrade", "upload": "link-upgrade",
    "rtt": "link-upgrade", "jitter": "link-upgrade", "loss": "link-upgrade",
    "mos": "link-upgrade", "udp": "network-fix", "rtt_under_load": "network-fix",
    # The call's short windows (a call preset's Teams targets): loss and jitter that come in
    # bursts are the line's; reordering is a routing setting (one path per flow).
    "window_loss": "link-upgrade", "window_jitter": "link-upgrade",
    "burst_loss": "link-upgrade", "reorder": "network-fix"}
"""What buys (or does) away each failing criterion of the PC that holds the ward's calls."""
PRIORITY: dict[NeedKind, Priority] = {
    "link-upgrade": "high", "network-fix": "high", "webcam": "high", "microphone": "high",
    "speaker": "high", "pc": "medium", "ups": "medium", "router": "medium", "switch": "medium",
    "cabling": "medium", "nic": "medium", "printer": "low", "scanner": "low"}
LINK_FIGURES = frozenset(c.id for c in criteria.LINK)
WINDOW_FIGURES: dict[str, LinkId] = {"window_loss": "loss", "burst_loss": "loss",
                                     "window_jitter": "jitter"}
"""The link figure a call's short-window criterion is a part of: loss in a 15 s window or a
200 ms burst that a weak segment explains is that segment's too."""
MAX_NAMED = 5
"""PCs or devices named in one reason; the rest are counted."""


@dataclass
class _Need:
    kind: NeedKind
    quantity: int
    reason: str
    measured_at: float | None
    flags: list[str]
    priority: Priority
    segment: str = ""
    reasons: list[Reason] = field(default_factory=list)
    """The segment findings behind the need, if any, and the PCs they are on."""
    hosts: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Evidence:
    """What the server knows, as the list reads it."""

    agents: Mapping[tuple[str, str], AgentState]
    active: set[tuple[str, str]]
    link_points: Mapping[tuple[str, str], Sequence[tuple[float, float | None]]]
    """(ward, link criterion) -> the ward's best figure over time (`Store.ward_link_points`)."""
    port_points: PortPoints = field(default_factory=dict)
    """The CRC counters of the wards' switch and router ports over time
    (`Store.port_error_points`)."""


def from_store(inventory: Inventory, store: Store, now: float, max_age: float
               ) -> EquipmentList:
    """The list from the database alone (the server need not run)."""
    evidence = Evidence(store.agent_states(), store.active_agents(),
                        store.ward_link_points(now - criteria.HISTORY_SECONDS),
                        store.port_error_points(now - PORT_ERRORS_WINDOW_SECONDS))
    return build(inventory, evidence, now, max_age)


def build(inventory: Inventory, evidence: Evidence, now: float, max_age: float
          ) -> EquipmentList:
    """The equipment request list of every inventory ward, as of `now`. PCs silent for longer
    than `max_age` (or whose token was revoked) count for nothing, as on /metrics."""
    counted = readiness.counted(evidence.agents, evidence.active, now, max_age)
    seen: dict[str, list[AgentState]] = defaultdict(list)
    for key, state in evidence.agents.items():
        if key in evidence.active:
            seen[key[0]].append(state)
    lines: list[Line] = []
    no_data: list[NoData] = []
    for ward in inventory.wards:
        ref = WardRef(ward.id, ward.name, ward.working_group, ward.former_district)
        pcs = counted.get(ward.id, {})
        if not pcs:
            last = max((s.last_report_at for s in seen.get(ward.id, [])), default=None)
            no_data.append(NoData(ref, _silent(len(seen.get(ward.id, [])), last, max_age),
                                  last))
            continue
        states = {h: evidence.agents[ward.id, h] for h in pcs}
        judge = _Ward(inventory, inventory.profile_of(ward), states, pcs)
        judge.segments(readiness.segment_findings(
            inventory, ward.id, pcs, crc_per_day(evidence.port_points, ward.id, now)))
        judge.link({c.id: shortfalls.window_quantile(
            evidence.link_points.get((ward.id, c.id), ()), c.quantile, now, c.window_seconds)
            for c in criteria.LINK})
        judge.equipment()
        judge.video()
        judge.platforms()
        judge.devices()
        lines += _lines_for(ref, judge.needs, inventory.catalogue)
        if judge.unknown:
            last = max(s.last_report_at for s in states.values())
            no_data.append(NoData(ref, "; ".join(judge.unknown), last))
    order = {g.id: i for i, g in enumerate(inventory.working_groups)}
    wards = {w.id: i for i, w in enumerate(inventory.wards)}
    lines.sort(key=lambda x: (order[x.ward.working_group], wards[x.ward.id],
                              PRIORITY_ORDER[x.priority], x.item))
    return EquipmentList(now, {g.id: i18n.localized(g.name) for g in inventory.working_groups},
                         tuple(lines),
                         tuple(no_data), {c.id: c.window_seconds for c in criteria.LINK})


def _silent(known: int, last: float | None, max_age: float) -> str:
    if not known or last is None:
        return _("no agent has reported from this ward")
    return ngettext("{count} PC known, none reported in the last {hours} h (last report {at})",
                    "{count} PCs known, none reported in the last {hours} h (last report {at})",
                    known).format(count=known, hours=_number(max_age / 3600), at=_ago(last))


def _ago(at: float) -> str:
    if i18n.language() == "vi":
        return time.strftime("%d/%m/%Y %H:%M UTC", time.gmtime(at))
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def _named(names: Sequence[str]) -> str:
    shown = "; ".join(names[:MAX_NAMED])
    if len(names) <= MAX_NAMED:
        return shown
    return _("{named}; and {count} more").format(named=shown, count=len(names) - MAX_NAMED)


class _Ward:
    """One ward's needs, found the way the rules find its shortfalls."""

    def __init__(self, inventory: Inventory, profile: Profile,
                 states: Mapping[str, AgentState], pcs: Mapping[str, HostResults]) -> None:
        self.inventory, self.profile = inventory, profile
        self.states, self.pcs = states, pcs
        self.needs: list[_Need] = []
        self.unknown: list[str] = []
        self._samples: dict[tuple[str, str], list[Sample]] = {}
        self._segment_needs: list[_Need] = []

    def _result(self, host: str, check: str) -> Any:
        return self.pcs[host].results.get(check)

    def _when(self, *checks: str) -> float | None:
        return max((o.started_at for s in self.states.values()
                    for name, o in s.outcomes.items() if name in checks and o.ok),
                   default=None)

    def need(self, kind: NeedKind, quantity: int, reason: str, measured_at: float | None,
             *flags: str) -> _Need:
        # Whatever keeps the ward out of the city's video meetings is urgent.
        priority: Priority = "high" if "video" in flags else PRIORITY[kind]
        need = _Need(kind, quantity, reason, measured_at, list(flags), priority)
        self.needs.append(need)
        return need

    def segments(self, found: Sequence[Finding]) -> None:
        """A need per reason a segment is at fault: one cable or card per PC or port that
        needs it, one change otherwise."""
        by_reason: dict[Reason, list[Finding]] = defaultdict(list)
        for f in found:
            by_reason[f.reason].append(f)
        checks = {"pc": ("lasthop", "bandwidth", "path"), "lan": ("path", "devices"),
                  "router": ("path",), "uplink": ("path",)}
        for reason, findings in by_reason.items():
            kind = REASONS[reason]
            places = {f.host or f.where for f in findings}
            quantity = len(places) if kind.need in ("cabling", "nic") else 1
            texts = [f.text for f in findings]
            need = self.need(kind.need, quantity, _named(texts),
                             self._when(*checks[kind.segment]), f"segment:{reason}")
            need.segment, need.reasons = kind.segment, [reason]
            need.hosts = {f.host for f in findings if f.host}
            self._segment_needs.append(need)

    def explain(self, figure: LinkId, text: str, host: str | None = None,
                flag: str | None = None) -> bool:
        """Give a short link figure to the segment needs that explain it (not the uplink's,
        which is what a link upgrade already is), with the flag of the rule that found it
        short (the figure's own, or `video` for the call PC's): True if any does."""
        takers = [n for n in self._segment_needs if n.segment != "uplink" and any(
            figure in REASONS[r].explains for r in n.reasons)]
        if host is not None:
            takers = [n for n in takers if host in n.hosts]
        for n in takers:
            if (flag or figure) not in n.flags:
                n.flags.append(flag or figure)
            n.reason = _("{reason}; so the ward's {figure}").format(reason=n.reason,
                                                                    figure=text)
            n.priority = "high"
        return bool(takers)

    def link(self, figures: Mapping[LinkId, float | None]) -> None:
        short: list[tuple[LinkId, str]] = []
        unmeasured: dict[float, list[str]] = {}
        for c_id, value in figures.items():
            c = criteria.LINK_BY_ID[c_id]
            if value is None:
                unmeasured.setdefault(c.window_hours, []).append(link_name(c_id))
                continue
            need = shortfalls.required(self.profile, c_id)
            if shortfalls.shortfall_ratio(c_id, value, need) > 0:
                template = (_("{figure} {value} ({percentile}th percentile of the last {hours} "
                              "h) against {limit} required") if c.higher_is_better else
                            _("{figure} {value} ({percentile}th percentile of the last {hours} "
                              "h) against {limit} allowed"))
                short.append((c_id, template.format(
                    figure=link_name(c_id), value=_show(c_id, value),
                    percentile=round(c.quantile * 100), hours=_number(c.window_hours),
                    limit=_show(c_id, need))))
        short = [(c, text) for c, text in short if not self.explain(c, text)]
        if short:
            self.need("link-upgrade", 1, "; ".join(text for _c, text in short),
                      self._when("bandwidth", "media", "latency"), *(c for c, _t in short))
        if unmeasured:
            self.unknown.append(_("link {figures}").format(figures="; ".join(
                _("{names} not measured in the last {hours} h").format(
                    names=", ".join(names), hours=_number(hours))
                for hours, names in unmeasured.items())))

    def equipment(self) -> None:
        spec = self.profile.hosts
        good, below, unmeasured = 0, [], []
        for name in sorted(self.pcs):
            h = self._result(name, "host")
            if not isinstance(h, host.Result):
                unmeasured.append(_("{pc} not yet measured").format(pc=name))
                continue
            cores = h.cpu_logical_cores < spec.min_cpu_cores
            memory = h.memory_total_bytes < spec.min_memory_gib * 2**30
            figures = {"pc": name, "cores": h.cpu_logical_cores, "min_cores": spec.min_cpu_cores,
                       "memory": _decimal(h.memory_total_bytes / 2**30, 1),
                       "min_memory": _number(spec.min_memory_gib)}
            if cores and memory:
                below.append(_("{pc} has {cores} cores of {min_cores} and {memory} GiB of "
                               "{min_memory} GiB memory").format(**figures))
            elif cores:
                below.append(_("{pc} has {cores} cores of {min_cores}").format(**figures))
            elif memory:
                below.append(_("{pc} has {memory} GiB of {min_memory} GiB memory")
                             .format(**figures))
            else:
                good += 1
        missing = spec.min_count - good
        if missing > 0:
            reason = _("{good} of the {needed} PCs needed meet {cores} cores and {memory} GiB "
                       "({reporting} reporting)").format(
                good=good, needed=spec.min_count, cores=spec.min_cpu_cores,
                memory=_number(spec.min_memory_gib), reporting=pcs_text(len(self.pcs)))
            if below or unmeasured:
                reason = _("{reason}: {pcs}").format(reason=reason,
                                                     pcs=_named(below + unmeasured))
            self.need("pc", missing, reason, self._when("host"), "pc")

        video = self.profile.video
        holders = [n for n, pc in self.pcs.items() if video.holds_calls(pc.role)]
        for item in criteria.ITEMS:
            need = int(item.requirement.of(self.profile) or 0)
            counts = {n: int(v) for n in (holders if item.calls_only else sorted(self.pcs))
                      if (v := self._figure(n, item.source)) is not None}
            if not counts:
                if need:
                    self.unknown.append(_unknown_words(item, holders, " or ".join(video.roles)
                                                       or "any"))
                continue
            have = int(shortfalls.aggregate(item.per_ward, counts.values()))
            if have < need:
                self.need(item.item, need - have, _item_words(item, counts, have, need),
                          self._when(item.source.check), item.item)

    def _figure(self, host: str, source: Source) -> float | None:
        """A PC's figure from its latest result of the source's check, as the rules take it
        from the metric samples; None when it has none."""
        result = self._result(host, source.check)
        if result is None:
            return None
        key = (host, source.check)
        if key not in self._samples:
            self._samples[key] = list(REGISTRY[source.check].samples(result))
        return shortfalls.source_value(source, self._samples[key])

    def video(self) -> None:
        verdict = rollup(self.profile, self.pcs, self.inventory.call_of(self.profile))
        gate = next(c for c in verdict.criteria if c.id == "video_hosts")
        if gate.verdict != "fail":
            return
        failing = [c for c in verdict.criteria
                   if c.verdict == "fail" and c.id not in ("hosts", "video_hosts")]
        by_need: dict[NeedKind, list[str]] = defaultdict(list)
        host_name = verdict.video_host or _("no PC")
        for c in failing:
            # The criterion's name, figures and fix are the model's, in the language it gives.
            text = _("{criterion} {measured} against {required}").format(
                criterion=_(c.name), measured=show(c.measured, c.unit, c.id),
                required=show(c.required, c.unit, c.id))
            figure = c.id if c.id in LINK_FIGURES else WINDOW_FIGURES.get(c.id)
            if figure is not None and self.explain(
                    figure, _("video PC {pc} fails {criterion}").format(pc=host_name,
                                                                         criterion=text),
                    host_name, "video"):
                continue
            by_need[VIDEO_NEEDS.get(c.id, "network-fix")].append(
                _("{criterion} ({fix})").format(criterion=text, fix=c.fix) if c.fix else text)
        when = self.states[host_name].last_report_at if host_name in self.states else None
        for kind, texts in by_need.items():
            self.need(kind, 1, _("video meetings: {pc} fails {criteria}").format(
                pc=host_name, criteria="; ".join(texts)), when, "video")

    def platforms(self) -> None:
        probes: dict[str, list[platforms.PlatformProbe]] = defaultdict(list)
        for name in sorted(self.pcs):  # the first PC's error is quoted: always the same one
            result = self._result(name, "platforms")
            if isinstance(result, platforms.Result):
                for p in result.platforms:
                    probes[p.id].append(p)
        names = {p.id: p.name for p in self.inventory.platforms}
        for pid, seen in probes.items():
            if any(p.up for p in seen):
                continue
            first = seen[0]
            why = first.error or (f"HTTP {first.http_status_code}" if first.http_status_code
                                  else first.failed_phase or _("no answer"))
            self.need("network-fix", 1,
                      _("{platform} ({id}) unreachable from {pcs}: {why}").format(
                          platform=names.get(pid, pid), id=pid, pcs=pcs_text(len(seen)), why=why),
                      self._when("platforms"), f"platform:{pid}")

    def devices(self) -> None:
        below: dict[str, dict[str, str]] = defaultdict(dict)
        for name in sorted(self.pcs):
            result = self._result(name, "devices")
            if not isinstance(result, devices.Result):
                continue
            for poll in result.devices:
                if (poll.role not in shortfalls.DEVICE_ROLES or not poll.up
                        or poll.name in below.get(poll.role, {})):
                    continue
                found = shortfalls.device_shortfalls(poll, self.profile,
                                                     self.inventory.end_of_support)
                if found:
                    model = f" ({poll.model})" if poll.model else ""
                    below[poll.role][poll.name] = (f"{poll.name}{model}: "
                                                   + "; ".join(f.text for f in found))
        for role, named in below.items():
            need = self.need(role, len(named), _named(list(named.values())),  # type: ignore[arg-type]
                             self._when("devices"), role)
            need.segment = "router" if role == "router" else "lan"


NOUNS: dict[str, tuple[str, str]] = {
    "webcam": (N_("webcam"), N_("webcams")), "microphone": (N_("microphone"), N_("microphones")),
    "speaker": (N_("speaker"), N_("speakers")), "printer": (N_("printer"), N_("printers")),
    "scanner": (N_("scanner"), N_("scanners")), "ups": (N_("UPS"), N_("UPS units"))}
"""An item's name in a sentence, one and several (Vietnamese has one form for both)."""


def _noun(item: str, count: int = 2) -> str:
    one, several = NOUNS.get(item, (item, f"{item}s"))
    return _(one) if count == 1 else _(several)


def _unknown_words(item: ItemCriterion, holders: Sequence[str], roles: str) -> str:
    """Why a ward's count of `item` is unknown: no PC that should count it could."""
    several = _noun(item.item)
    if item.calls_only:
        return (_("{items} unknown: no PC in role {roles} reports them").format(
                    items=several, roles=roles) if not holders
                else _("{items} unknown: could not be read on {pcs}").format(
                    items=several, pcs=", ".join(holders)))
    if item.source.check == "host":
        return _("{items} unknown: no PC could read its power supplies").format(items=several)
    return _("{items} unknown: no PC could count them").format(items=several)


def _item_words(item: ItemCriterion, counts: Mapping[str, int], have: int, need: int) -> str:
    """The evidence for a missing `item`: what the PCs that count it see."""
    if item.per_ward == "sum":
        return _("{have} {item} seen by {pcs}; {need} needed").format(
            have=have, item=_noun(item.item, 1), pcs=pcs_text(len(counts)), need=need)
    noun = _noun(item.item, have)
    if item.calls_only:
        return ngettext(
            "the PC holding the video calls ({pcs}) sees {have} {items}; {need} needed",
            "the PCs holding the video calls ({pcs}) see {have} {items}; {need} needed",
            len(counts)).format(pcs=", ".join(sorted(counts)), have=have, items=noun, need=need)
    return _("{have} {items} seen (the most any PC sees, as network {several} show on every "
             "PC); {need} needed").format(have=have, items=noun, several=_noun(item.item),
                                          need=need)


def _show(c: LinkId, value: float) -> str:
    if c in ("download", "upload"):
        return f"{_decimal(value * 8 / 1e6, 1)} Mbit/s"
    if c == "loss":
        return f"{_decimal(value * 100, 2)} %"
    return f"{_decimal(value * 1e3, 1)} ms"


def choose(catalogue: Sequence[CatalogueItem], kind: str) -> CatalogueItem | None:
    """The cheapest catalogue item that covers a need (unpriced items last)."""
    fits = [c for c in catalogue if kind in c.needs]
    return min(fits, default=None, key=lambda c: (c.unit_price_vnd is None,
                                                   c.unit_price_vnd or 0))


def _lines_for(ward: WardRef, needs: Sequence[_Need], catalogue: Sequence[CatalogueItem]
            ) -> list[Line]:
    """One line per catalogue item: needs one item covers (a speakerphone for a missing
    microphone and speaker) share a line, whose quantity is the largest need."""
    merged: dict[str, _Need] = {}
    items: dict[str, CatalogueItem | None] = {}
    for n in needs:
        item = choose(catalogue, n.kind)
        key = item.id if item else f"?{n.kind}"
        items[key] = item
        if key not in merged:
            merged[key] = _Need(n.kind, n.quantity, n.reason, n.measured_at, list(n.flags),
                                n.priority, n.segment, list(n.reasons))
            continue
        m = merged[key]
        m.quantity = max(m.quantity, n.quantity)
        m.reason = f"{m.reason}; {n.reason}"
        m.measured_at = max((t for t in (m.measured_at, n.measured_at) if t is not None),
                            default=None)
        m.flags += [f for f in n.flags if f not in m.flags]
        m.priority = min(m.priority, n.priority, key=PRIORITY_ORDER.__getitem__)
        m.segment = m.segment or n.segment
    lines = []
    for key, n in merged.items():
        item = items[key]
        if item is None:
            lines.append(Line(ward, "", _("(no catalogue item covers {need}: add one to the "
                                          "inventory's catalogue)").format(need=n.kind),
                              n.quantity, None, n.reason, n.measured_at, n.priority,
                              tuple(n.flags), n.segment))
        else:
            lines.append(Line(ward, item.id, i18n.localized(item.description), n.quantity,
                              item.unit_price_vnd, n.reason, n.measured_at, n.priority,
                              tuple(n.flags), n.segment))
    return lines
