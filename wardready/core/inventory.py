"""The inventory: wards, working groups, PC roles, requirement profiles, city platforms,
devices, catalogue.

`load_inventory()` validates the whole file strictly (unknown keys, wrong types, dangling
references, duplicate ids are all errors with file and line) so nothing starts half-configured.
Credentials never live here: devices name only where they are and how to speak to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr

from wardready.core.configfile import load
from wardready.core.i18n import N_, Localized, _
from wardready.core.plan import MeasurementPlan, plan_errors

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""An identifier used as a Prometheus label value: lower case, digits and dashes."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    _ = parts.port  # raises ValueError for a port out of range or not a number
    return value


HttpURL = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
"""An http(s) URL with a host, kept as written. (pydantic's HttpUrl would import
importlib.metadata and its URL machinery: ~1 MiB in every agent, for one check.)"""

DeviceType = Literal["cisco_ios", "cisco_xe", "cisco_nxos", "arista_eos", "juniper_junos",
                     "mikrotik_routeros", "hp_procurve", "huawei", "linux"]
"""netmiko device types the inventory accepts."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class WorkingGroup(Strict):
    """One of the city's working groups that supervise a set of wards."""

    id: Slug
    name: Localized
    lead: str | None = None


class LinkRequirement(Strict):
    """What the ward's uplink must sustain."""

    min_download_mbps: float = Field(gt=0)
    min_upload_mbps: float = Field(gt=0)
    max_rtt_ms: float = Field(gt=0)
    max_jitter_ms: float = Field(gt=0)
    max_loss_percent: float = Field(ge=0, le=100)


class HostRequirement(Strict):
    """What the ward's working PCs must have."""

    min_count: int = Field(ge=0)
    min_cpu_cores: int = Field(ge=1)
    min_memory_gib: float = Field(gt=0)
    min_disk_free_gib: float = Field(ge=0)


class CallPreset(LinkRequirement):
    """What one endpoint of a kind of video call needs from the link (per PC in the call),
    from the platform's published figures (docs/video-presets.md)."""

    description: str
    source: str = Field(min_length=1, description="Where the figures are published.")
    # Optional targets over short windows of a call's stream, as Microsoft publishes them
    # for Teams (docs/video-presets.md): the worst window of a media run is judged, on the
    # spot and over 6 h (docs/readiness.md). Unset maxima are not judged.
    window_seconds: float = Field(default=15.0, gt=0, le=3600, description=(
        "Length of the windows max_window_loss_percent and max_window_jitter_ms apply to."))
    max_window_loss_percent: float | None = Field(default=None, ge=0, le=100, description=(
        "Highest packet loss in any window_seconds of a media run."))
    max_window_jitter_ms: float | None = Field(default=None, gt=0, description=(
        "Highest RFC 3550 jitter in any window_seconds of a media run."))
    burst_seconds: float = Field(default=0.2, gt=0, le=60, description=(
        "Length of the span max_burst_loss_percent applies to."))
    max_burst_loss_percent: float | None = Field(default=None, ge=0, le=100, description=(
        "Highest packet loss in any burst_seconds of a media run."))
    max_reorder_percent: float | None = Field(default=None, ge=0, le=100, description=(
        "Highest share of packets received out of order (RFC 4737) in a media run."))

    @property
    def has_window_criteria(self) -> bool:
        """Whether any of the window, burst or reorder maxima is set."""
        return any(v is not None for v in (self.max_window_loss_percent,
                                           self.max_window_jitter_ms,
                                           self.max_burst_loss_percent,
                                           self.max_reorder_percent))


class Role(Strict):
    """What a ward PC is for (an agent's config names its role)."""

    id: Slug
    name: str


class VideoRequirement(Strict):
    """What the ward needs for the city's online video conferencing: the call it must be
    able to hold (a preset's id), and the equipment each PC that holds it needs."""

    cameras: int = Field(ge=0)
    microphones: int = Field(ge=0)
    speakers: int = Field(ge=0)
    call: Slug | None = None
    roles: list[Slug] = Field(default=[], description=(
        "Roles of the PCs that hold the calls; empty: any PC. A PC with no role set counts."))
    min_ready_hosts: int = Field(default=1, ge=0, description=(
        "How many of those PCs must be video-ready for the ward to be."))

    def holds_calls(self, role: str | None) -> bool:
        """Whether a PC of this role must hold the video calls (and so needs the kit)."""
        return role is None or not self.roles or role in self.roles


class PeripheralRequirement(Strict):
    """Counter equipment for receiving administrative-procedure records."""

    printers: int = Field(ge=0, default=0)
    scanners: int = Field(ge=0, default=0)
    ups: int = Field(ge=0, default=0)


class NetworkRequirement(Strict):
    """What the ward's own routers and switches must do."""

    min_port_speed_mbps: float | None = Field(default=None, gt=0, description=(
        "Every connected Ethernet port of a polled router or switch runs at least this fast."))


class SegmentRequirement(Strict):
    """When a segment of the path (the PC, the ward LAN, the router, the uplink) is at fault
    beyond what the link figures say (docs/segments.md gives the sources). Loss and jitter
    to the gateway are held to the profile's link figures: a LAN that alone spends the
    whole path's budget is at fault."""

    min_wifi_signal_dbm: float = Field(default=-67, le=0, description=(
        "A PC on Wi-Fi needs at least this signal (-67 dBm: the vendors' figure for voice "
        "and video over Wi-Fi)."))
    max_port_crc_errors_per_day: float = Field(default=100, ge=0, description=(
        "A switch or router port with more CRC errors than this in 24 h has a bad cable."))
    max_tcp_limited_ratio: float = Field(default=0.3, gt=0, le=1, description=(
        "A speed test limited by the PC's receive window or send buffer for more than this "
        "share of its busy time is limited by the PC, not by the link."))


class Profile(Strict):
    """A requirement profile: what a ward of this kind needs to run the shared platforms."""

    description: str
    example: bool = Field(default=False, description="Figures are illustrative, not official.")
    link: LinkRequirement
    hosts: HostRequirement
    video: VideoRequirement
    peripherals: PeripheralRequirement = PeripheralRequirement()
    network: NetworkRequirement | None = None
    segments: SegmentRequirement = SegmentRequirement()


class Platform(Strict):
    """A city platform every ward must reach."""

    id: Slug
    name: str
    url: HttpURL
    kind: Literal["video-conference", "document-management", "feedback-portal",
                  "administrative-procedures", "other"]


class Device(Strict):
    """A router or switch in a ward, polled over SSH; credentials come from elsewhere."""

    name: Slug
    address: str = Field(min_length=1)
    device_type: DeviceType
    role: Literal["router", "switch", "firewall", "access-point"]
    port: int = Field(default=22, ge=1, le=65535)


class Ward(Strict):
    """A ward, commune or special zone of the two-level local government."""

    id: Slug
    name: str
    kind: Literal["ward", "commune", "special-zone"]
    former_district: str
    former_province: str
    working_group: Slug
    profile: Slug | None = None
    devices: list[Device] = []


NeedKind = Literal["pc", "webcam", "microphone", "speaker", "printer", "scanner", "ups",
                   "router", "switch", "link-upgrade", "network-fix", "cabling", "nic"]
"""What the equipment request list can find a ward short of; each is bought (or done) as a
catalogue item that covers it."""


class CatalogueItem(Strict):
    """An orderable piece of equipment (or a service) for the equipment request list."""

    id: Slug
    kind: Literal["webcam", "microphone", "speaker", "conference-kit", "pc", "printer",
                  "scanner", "ups", "router", "switch", "link-upgrade", "network-fix", "cabling",
                  "nic", "other"]
    description: Localized = Field(description=(
        "What to order, one text or one per language ({en: ..., vi: ...}); the list shows "
        "the reader's language, else English."))
    unit_price_vnd: int | None = Field(default=None, ge=0, description=(
        "None when the item needs a quote or is not a purchase."))
    covers: list[NeedKind] = Field(default=[], description=(
        "The needs one unit meets (a speakerphone: microphone and speaker); default: its kind."))

    @property
    def needs(self) -> list[str]:
        return list(self.covers) or [self.kind]


class EndOfSupport(Strict):
    """Network-device OS versions out of their vendor's support: such a device is replaced."""

    device_type: DeviceType
    os_versions: list[str] = Field(min_length=1, description=(
        "Shell-style patterns matched against the polled OS version (`12.*`)."))
    note: Localized = Field(min_length=1, description=(
        "Whose announcement, and since when; one string or one per language."))


class Defaults(Strict):
    profile: Slug


class Inventory(Strict):
    """The whole inventory file."""

    version: Literal[1]
    defaults: Defaults
    working_groups: list[WorkingGroup]
    roles: list[Role] = []
    call_presets: dict[Slug, CallPreset] = {}
    profiles: dict[Slug, Profile]
    platforms: list[Platform] = []
    catalogue: list[CatalogueItem] = []
    end_of_support: list[EndOfSupport] = []
    wards: list[Ward]
    measurement_plan: MeasurementPlan = MeasurementPlan()
    _wards_by_id: dict[str, Ward] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        self._wards_by_id = {w.id: w for w in self.wards}

    def ward(self, ward_id: str) -> Ward | None:
        """The ward with this id, or None."""
        return self._wards_by_id.get(ward_id)

    def profile_of(self, ward: Ward) -> Profile:
        """The requirement profile that applies to `ward`."""
        return self.profiles[ward.profile or self.defaults.profile]

    def call_of(self, profile: Profile) -> CallPreset | None:
        """The video call the profile requires, if it names one."""
        return self.call_presets[profile.video.call] if profile.video.call else None


def load_inventory(path: Path) -> Inventory:
    """Load and fully validate an inventory file; raises ConfigError on the first mistake."""
    inventory, doc = load(path, Inventory)
    for where, message in _reference_errors(inventory):
        raise doc.error(where, message)
    return inventory


def _reference_errors(inv: Inventory) -> Iterator[tuple[tuple[str | int, ...], str]]:
    yield from _duplicates("working_groups", [g.id for g in inv.working_groups], "working group")
    yield from _duplicates("wards", [w.id for w in inv.wards], "ward id")
    yield from _duplicates("platforms", [p.id for p in inv.platforms], "platform id")
    yield from _duplicates("catalogue", [c.id for c in inv.catalogue], "catalogue id")
    yield from _duplicates("roles", [r.id for r in inv.roles], "role id")
    if inv.defaults.profile not in inv.profiles:
        yield ("defaults", "profile"), _unknown("profile", inv.defaults.profile, inv.profiles)
    for pid, profile in inv.profiles.items():
        if profile.video.call is not None and profile.video.call not in inv.call_presets:
            yield ("profiles", pid, "video", "call"), _unknown(
                "call preset", profile.video.call, inv.call_presets)
        roles = {r.id for r in inv.roles}
        for i, role in enumerate(profile.video.roles):
            if role not in roles:
                yield ("profiles", pid, "video", "roles", i), _unknown("role", role, roles)
    groups = {g.id for g in inv.working_groups}
    for i, ward in enumerate(inv.wards):
        if ward.working_group not in groups:
            yield ("wards", i, "working_group"), _unknown(
                "working group", ward.working_group, groups)
        if ward.profile is not None and ward.profile not in inv.profiles:
            yield ("wards", i, "profile"), _unknown("profile", ward.profile, inv.profiles)
        for where, message in _duplicates("devices", [d.name for d in ward.devices], "device"):
            yield ("wards", i, *where), message
    yield from plan_errors(inv.measurement_plan, {w.id: w.working_group for w in inv.wards},
                           groups, {r.id for r in inv.roles})


# Whole sentences per kind, so that a translation can place the words as its language does.
_DUPLICATE = {
    "working group": N_("duplicate working group {value} (also {also})"),
    "ward id": N_("duplicate ward id {value} (also {also})"),
    "platform id": N_("duplicate platform id {value} (also {also})"),
    "catalogue id": N_("duplicate catalogue id {value} (also {also})"),
    "role id": N_("duplicate role id {value} (also {also})"),
    "device": N_("duplicate device {value} (also {also})"),
}
_UNKNOWN = {
    "profile": (N_("unknown profile {value} (none is defined)"),
                N_("unknown profile {value} (expected one of: {known})")),
    "call preset": (N_("unknown call preset {value} (none is defined)"),
                    N_("unknown call preset {value} (expected one of: {known})")),
    "role": (N_("unknown role {value} (none is defined)"),
             N_("unknown role {value} (expected one of: {known})")),
    "working group": (N_("unknown working group {value} (none is defined)"),
                      N_("unknown working group {value} (expected one of: {known})")),
}


def _duplicates(
    field: str, ids: list[str], what: str
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    first: dict[str, int] = {}
    for i, value in enumerate(ids):
        if value in first:
            yield (field, i), _(_DUPLICATE[what]).format(value=repr(value),
                                                        also=f"{field}[{first[value]}]")
        first.setdefault(value, i)


def _unknown(what: str, value: str, known: object) -> str:
    names = sorted(known)  # type: ignore[call-overload]
    none, some = _UNKNOWN[what]
    if not names:
        return _(none).format(value=repr(value))
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return _(some).format(value=repr(value), known=shown)

