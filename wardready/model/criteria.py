"""What makes a ward short of its profile, defined once.

Each criterion says what is measured (a check's metric and label matchers), how one PC's
series combine and how a ward's PCs combine, over which window and quantile it is judged,
and against which requirement of the inventory's profile. From this table:

- `prometheus/build.py` writes the rules (prometheus/rules/wardready.rules.yml);
- `server.shortfalls` and `server.equipment` compute the same figures in Python for the
  equipment request list, from the same metric samples;
- the server exposes the requirements (`wardready_requirement_*`, label `ward`);
- `grafana/build.py` draws the measured series against the same requirement and window.

The on-the-spot verdict (`model.readiness`) judges one PC's latest results instead; how the
two differ, and why both exist: docs/readiness.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from wardready.checks import bandwidth, host, latency, media, peripherals
from wardready.core.i18n import N_, _
from wardready.core.inventory import CallPreset, Profile
from wardready.core.metrics import MetricSpec

Aggregation = Literal["max", "min", "sum"]

DELAY_WINDOW_SECONDS = 6 * 3600.0
"""Round-trip time, jitter and loss are judged over the last 6 h, not one probe: the latency
probes run every 5 minutes and the media test every 15, so a 75th percentile over 6 h is
worse than allowed only when a quarter of the six hours was."""
THROUGHPUT_WINDOW_SECONDS = 24 * 3600.0
"""Download and upload are judged over the last 24 h: under the city measurement plan one PC
of the ward tests it every 6 h on average (1 to 12 h apart; later past a quiet window or a
spent budget), and never less often than the plan's freshness target, 24 h. A day then holds
four or five tests, as the 6 h window held six hourly ones before the plan, and always at
least one (docs/readiness.md). A plan whose `max_age_hours` is above this window leaves
wards unjudged between its tests: raise both together."""
EVALUATION_SECONDS = 15.0
"""How often Prometheus evaluates the rules (prometheus/prometheus.yml): a window's quantile
is taken over the recorded values at these instants, as `quantile_over_time` does."""
AGENT_SILENT_SECONDS = 900.0
"""An agent with no report for this long is silent: three rounds of the host check (every
300 s by default)."""


# -- requirements ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Requirement:
    """A figure of the ward's profile, or of the call preset it names, exposed by the
    server as a metric (label `ward`) in the base unit of what it is compared with."""

    spec: MetricSpec
    of: Callable[[Profile], float | None]
    """The figure from a profile; None when the profile sets none."""
    of_call: Callable[[CallPreset], float | None] | None = None
    """For a figure of the call preset instead: the figure from it (None: not set)."""

    def value(self, profile: Profile, call: CallPreset | None) -> float | None:
        """The figure for a ward of this profile, whose profile names the call `call`."""
        if self.of_call is None:
            return self.of(profile)
        return None if call is None else self.of_call(call)


def _required(name: str, help: str, of: Callable[[Profile], float | None]) -> Requirement:
    return Requirement(MetricSpec(name, help + " (inventory profile)", ("ward",)), of)


DOWNLOAD = _required("wardready_requirement_download_bytes_per_second",
                     "Required download throughput of the ward's link.",
                     lambda p: p.link.min_download_mbps * 1e6 / 8)
UPLOAD = _required("wardready_requirement_upload_bytes_per_second",
                   "Required upload throughput of the ward's link.",
                   lambda p: p.link.min_upload_mbps * 1e6 / 8)
RTT = _required("wardready_requirement_rtt_seconds", "Highest acceptable round-trip time.",
                lambda p: p.link.max_rtt_ms / 1e3)
JITTER = _required("wardready_requirement_jitter_seconds", "Highest acceptable jitter.",
                   lambda p: p.link.max_jitter_ms / 1e3)
LOSS = _required("wardready_requirement_loss_ratio", "Highest acceptable packet loss (0-1).",
                 lambda p: p.link.max_loss_percent / 100)
HOSTS = _required("wardready_requirement_hosts", "Working PCs the ward needs.",
                  lambda p: p.hosts.min_count)
HOST_CPU_CORES = _required("wardready_requirement_host_cpu_cores", "CPU cores each PC needs.",
                           lambda p: p.hosts.min_cpu_cores)
HOST_MEMORY = _required("wardready_requirement_host_memory_bytes", "Memory each PC needs.",
                        lambda p: p.hosts.min_memory_gib * 2**30)
HOST_DISK_FREE = _required("wardready_requirement_host_disk_free_bytes",
                           "Free disk space each PC needs.",
                           lambda p: p.hosts.min_disk_free_gib * 2**30)
CAMERAS = _required("wardready_requirement_cameras", "Conference cameras the ward needs.",
                    lambda p: p.video.cameras)
MICROPHONES = _required("wardready_requirement_microphones",
                        "Conference microphones the ward needs.", lambda p: p.video.microphones)
SPEAKERS = _required("wardready_requirement_speakers", "Conference speakers the ward needs.",
                     lambda p: p.video.speakers)
PRINTERS = _required("wardready_requirement_printers", "Printers the ward needs.",
                     lambda p: p.peripherals.printers)
SCANNERS = _required("wardready_requirement_scanners", "Scanners the ward needs.",
                     lambda p: p.peripherals.scanners)
UPS = _required("wardready_requirement_ups", "UPS units the ward needs.",
                lambda p: p.peripherals.ups)
PORT_SPEED = _required(
    "wardready_requirement_port_speed_bytes_per_second",
    "Speed every connected Ethernet port of the ward's routers and switches needs.",
    lambda p: p.network.min_port_speed_mbps * 1e6 / 8
    if p.network and p.network.min_port_speed_mbps else None)

PORT_CRC_ERRORS = _required(
    "wardready_requirement_port_crc_errors",
    "CRC errors a switch or router port of the ward may count in 24 h (more: a bad cable).",
    lambda p: p.segments.max_port_crc_errors_per_day)


def _call_required(name: str, help: str,
                   of: Callable[[CallPreset], float | None]) -> Requirement:
    return Requirement(MetricSpec(name, help + " (inventory call preset)", ("ward",)),
                       lambda p: None, of)


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100


WINDOW_LOSS = _call_required("wardready_requirement_window_loss_ratio",
                             "Highest acceptable loss (0-1) in any window of a call.",
                             lambda c: _ratio(c.max_window_loss_percent))
WINDOW_JITTER = _call_required(
    "wardready_requirement_window_jitter_seconds",
    "Highest acceptable jitter in any window of a call.",
    lambda c: None if c.max_window_jitter_ms is None else c.max_window_jitter_ms / 1e3)
WINDOW_LENGTH = _call_required(
    "wardready_requirement_window_seconds",
    "Length of the windows the call's window loss and jitter are judged over.",
    lambda c: c.window_seconds if c.max_window_loss_percent is not None
    or c.max_window_jitter_ms is not None else None)
BURST_LOSS = _call_required("wardready_requirement_burst_loss_ratio",
                            "Highest acceptable loss (0-1) in any burst span of a call.",
                            lambda c: _ratio(c.max_burst_loss_percent))
BURST_LENGTH = _call_required(
    "wardready_requirement_burst_seconds", "Length of the span the burst loss is judged over.",
    lambda c: c.burst_seconds if c.max_burst_loss_percent is not None else None)
REORDER = _call_required("wardready_requirement_reorder_ratio",
                         "Highest acceptable share (0-1) of packets received out of order.",
                         lambda c: _ratio(c.max_reorder_percent))

REQUIREMENTS = (DOWNLOAD, UPLOAD, RTT, JITTER, LOSS, HOSTS, HOST_CPU_CORES, HOST_MEMORY,
                HOST_DISK_FREE, CAMERAS, MICROPHONES, SPEAKERS, PRINTERS, SCANNERS, UPS,
                PORT_SPEED, PORT_CRC_ERRORS, WINDOW_LOSS, WINDOW_JITTER, WINDOW_LENGTH,
                BURST_LOSS, BURST_LENGTH, REORDER)


# -- sources --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Series of one check's metric, and how one PC's several series (directions, targets)
    combine into its figure."""

    check: str
    metric: MetricSpec
    matchers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Label -> the values selected; absent labels are not constrained."""
    per_pc: Aggregation = "max"

    def selector(self, extra: str = "") -> str:
        """The PromQL series selector, e.g. `metric{direction="download"}`; `extra` adds
        matchers written out (a dashboard's `ward="$ward"`)."""
        parts = [extra] if extra else []
        for label, values in self.matchers.items():
            parts.append(f'{label}="{values[0]}"' if len(values) == 1
                         else f'{label}=~"{"|".join(values)}"')
        return self.metric.name + ("{" + ",".join(parts) + "}" if parts else "")

    def pc_expr(self, extra: str = "") -> str:
        """One series per PC (labels ward, host)."""
        return f"{self.per_pc} by (ward, host) ({self.selector(extra)})"


# -- the ward's link ------------------------------------------------------------------------

LinkId = Literal["download", "upload", "rtt", "jitter", "loss"]


@dataclass(frozen=True)
class LinkCriterion:
    """A figure of the ward's link: each PC's from the first source it has (the UDP media
    path, else the latency probes), the ward's from its best PC, judged at a quantile of its
    window against a requirement."""

    id: LinkId
    name: str
    """As the request list writes it, in English (`title` in the current language)."""
    series: str
    """The recorded series' metric part, e.g. `download_bytes_per_second`."""
    sources: tuple[Source, ...]
    higher_is_better: bool
    quantile: float
    requirement: Requirement
    window_seconds: float
    """How far back the quantile looks."""

    @property
    def ward_aggregation(self) -> Aggregation:
        """The ward's link is its best PC's: a PC on poor Wi-Fi does not make it slow."""
        return "max" if self.higher_is_better else "min"

    @property
    def ward_record(self) -> str:
        """The recorded series of the ward's figure now."""
        return f"ward:wardready_{self.series}:{self.ward_aggregation}"

    @property
    def window_record(self) -> str:
        """The recorded series of the ward's figure at its quantile over the window."""
        return (f"ward:wardready_{self.series}:p{round(self.quantile * 100)}"
                f"_{self.window_hours:g}h")

    @property
    def window_hours(self) -> float:
        return self.window_seconds / 3600

    @property
    def title(self) -> str:
        """The name in the current language."""
        return _(self.name)

    @property
    def statistic(self) -> str:
        """The window's statistic in words, e.g. `25th percentile` (current language)."""
        return _("{percent}th percentile").format(percent=round(self.quantile * 100))


_MEDIA_THEN_LATENCY = "the UDP media path, else the latency probes"

LINK: tuple[LinkCriterion, ...] = (
    # Throughput is short when a quarter of the window was; delay, jitter and loss when a
    # quarter of the window was worse than allowed.
    LinkCriterion("download", N_("download"), "download_bytes_per_second",
                  (Source("bandwidth", bandwidth.RATE, {"direction": ("download",)}),),
                  True, 0.25, DOWNLOAD, THROUGHPUT_WINDOW_SECONDS),
    LinkCriterion("upload", N_("upload"), "upload_bytes_per_second",
                  (Source("bandwidth", bandwidth.RATE, {"direction": ("upload",)}),),
                  True, 0.25, UPLOAD, THROUGHPUT_WINDOW_SECONDS),
    LinkCriterion("rtt", N_("round-trip time"), "rtt_seconds",
                  (Source("media", media.RTT, {"statistic": ("median",)}),
                   Source("latency", latency.RTT, {"statistic": ("median",)}, "min")),
                  False, 0.75, RTT, DELAY_WINDOW_SECONDS),
    LinkCriterion("jitter", N_("jitter"), "jitter_seconds",
                  (Source("media", media.JITTER),
                   Source("latency", latency.JITTER, per_pc="min")),
                  False, 0.75, JITTER, DELAY_WINDOW_SECONDS),
    LinkCriterion("loss", N_("packet loss"), "loss_ratio",
                  (Source("media", media.LOSS, {"direction": ("forward", "return")}),
                   Source("latency", latency.LOSS, per_pc="min")),
                  False, 0.75, LOSS, DELAY_WINDOW_SECONDS),
)
"""A PC's media figures are its worst direction (`max`); its latency figures its best target
(`min`): the probes go to several targets and the nearest says most about the link."""
LINK_BY_ID: dict[LinkId, LinkCriterion] = {c.id: c for c in LINK}
LINK_CHECKS = frozenset(s.check for c in LINK for s in c.sources)
"""The checks whose results give link figures."""
HISTORY_SECONDS = max(c.window_seconds for c in LINK)
"""How far back the ward link figures are needed: the longest window."""


# -- the call's short windows ----------------------------------------------------------------

WindowId = Literal["window_loss", "window_jitter", "burst_loss", "reorder"]


@dataclass(frozen=True)
class WindowCriterion:
    """A target of the call preset over short windows of one media run (Teams' loss and
    jitter in any 15 s, loss in any 200 ms, reordering). A PC's figure is its latest run's
    worst window, counted only when the run's windows are as long as the preset's (`length`
    against `length_requirement`); the ward's is its best PC's, judged at a quantile of the
    6 h window like the link's delay figures: p75 over the limit means the worst window of
    the latest run failed for more than a quarter of the six hours (docs/readiness.md)."""

    id: WindowId
    name: str
    """In English (`title` in the current language)."""
    series: str
    source: Source
    requirement: Requirement
    length: MetricSpec | None
    """The run's window length metric; None when the figure has none (reordering)."""
    length_requirement: Requirement | None
    quantile: float = 0.75
    window_seconds: float = DELAY_WINDOW_SECONDS

    @property
    def title(self) -> str:
        """The name in the current language."""
        return _(self.name)

    @property
    def ward_record(self) -> str:
        """The ward's figure now: its best PC's (`min`)."""
        return f"ward:wardready_{self.series}:min"

    @property
    def window_record(self) -> str:
        return (f"ward:wardready_{self.series}:p{round(self.quantile * 100)}"
                f"_{self.window_seconds / 3600:g}h")

    def pc_expr(self) -> str:
        """One series per PC, only from runs whose windows have the preset's length."""
        expr = self.source.pc_expr()
        if self.length is not None and self.length_requirement is not None:
            expr += (f"\n    and on (ward, host) ({self.length.name}\n      == on (ward) "
                     f"group_left {self.length_requirement.spec.name})")
        return expr


WINDOWS: tuple[WindowCriterion, ...] = (
    WindowCriterion("window_loss", N_("packet loss in the worst window"),
                    "media_window_loss_ratio",
                    Source("media", media.WINDOW_LOSS), WINDOW_LOSS, media.WINDOW,
                    WINDOW_LENGTH),
    WindowCriterion("window_jitter", N_("jitter in the worst window"),
                    "media_window_jitter_seconds",
                    Source("media", media.WINDOW_JITTER), WINDOW_JITTER, media.WINDOW,
                    WINDOW_LENGTH),
    WindowCriterion("burst_loss", N_("packet loss in the worst burst"),
                    "media_burst_loss_ratio",
                    Source("media", media.BURST_LOSS), BURST_LOSS, media.BURST, BURST_LENGTH),
    WindowCriterion("reorder", N_("packet reordering"), "media_reorder_ratio",
                    Source("media", media.REORDER), REORDER, None, None),
)


def windows_text(windows: Mapping[LinkId, float] | None = None) -> str:
    """Which window each link figure is judged over, in words: `download and upload over
    the last 24 h; round-trip time, jitter and packet loss over the last 6 h` (in the
    current language)."""
    by_window: dict[float, list[str]] = {}
    for c in LINK:
        seconds = c.window_seconds if windows is None else windows.get(c.id, c.window_seconds)
        by_window.setdefault(seconds, []).append(c.title)
    parts = []
    for seconds, names in by_window.items():
        listed = (_("{first} and {last}").format(first=", ".join(names[:-1]), last=names[-1])
                  if len(names) > 1 else names[0])
        parts.append(_("{figures} over the last {duration}").format(
            figures=listed, duration=_duration(seconds)))
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds % 3600 == 0 else f"{seconds / 60:g} min"


# -- equipment ------------------------------------------------------------------------------

ItemId = Literal["webcam", "microphone", "speaker", "printer", "scanner", "ups"]


@dataclass(frozen=True)
class ItemCriterion:
    """Equipment the ward counts: the PCs' counts combine into the ward's (`per_ward`), from
    the PCs that hold the video calls only or from all; short of the requirement is missing.
    A kind no PC could count is unknown (no series), never missing."""

    item: ItemId
    source: Source
    per_ward: Aggregation
    calls_only: bool
    requirement: Requirement


ITEMS: tuple[ItemCriterion, ...] = (
    # On the best PC that holds the ward's calls.
    ItemCriterion("webcam", Source("peripherals", peripherals.COUNT, {"kind": ("webcam",)}),
                  "max", True, CAMERAS),
    ItemCriterion("microphone",
                  Source("peripherals", peripherals.COUNT, {"kind": ("microphone",)}),
                  "max", True, MICROPHONES),
    ItemCriterion("speaker", Source("peripherals", peripherals.COUNT, {"kind": ("speaker",)}),
                  "max", True, SPEAKERS),
    # A network printer or scanner shows on every PC: the ward has as many as the PC that
    # sees the most. A UPS is each PC's own: they add up.
    ItemCriterion("printer", Source("peripherals", peripherals.COUNT, {"kind": ("printer",)}),
                  "max", False, PRINTERS),
    ItemCriterion("scanner", Source("peripherals", peripherals.COUNT, {"kind": ("scanner",)}),
                  "max", False, SCANNERS),
    ItemCriterion("ups", Source("host", host.POWER_SUPPLIES, {"kind": ("ups",)}),
                  "sum", False, UPS),
)
ITEM_BY_ID: dict[ItemId, ItemCriterion] = {c.item: c for c in ITEMS}

PC_SPEC = ((Source("host", host.CPU_LOGICAL), HOST_CPU_CORES),
           (Source("host", host.MEM_TOTAL), HOST_MEMORY))
"""A working PC meets every one of these (item `pc`, against `HOSTS` PCs)."""
