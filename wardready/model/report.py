"""The report an agent delivers after each round: the one schema both sides use.

Each check's result is validated against that check's own typed result model, so the
server stores and exposes only what a check can really produce.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wardready.checks import REGISTRY
from wardready.checks.base import CheckResult
from wardready.core.inventory import Slug

SCHEMA_VERSION = 1
MAX_CHECKS_PER_REPORT = 64
MAX_ERROR_CHARS = 500
MAX_COUNT = 2**63 - 1
"""The largest count a report may carry: SQLite's largest integer."""
MAX_DURATION_SECONDS = 86400.0
"""No check runs for longer than a day."""
CLOCK_AHEAD_SECONDS = 300.0
"""How far ahead of the server's clock an agent's times may be: 5 minutes, the skew Kerberos
allows by default. A clock further ahead is wrong, and its results would hide the newer,
correct ones until that date came."""
CLOCK_WARN_SECONDS = CLOCK_AHEAD_SECONDS / 2
"""An agent whose clock is this far from the server's says so: half the bound, so that a
drifting clock is heard of before its reports are refused."""
MAX_REPORT_AGE_SECONDS = 90 * 86400.0
"""How old a report may be when it arrives: longer than an agent's spool may keep one."""
ClockDrift = Literal["right", "ahead", "refused", "behind"]


def clock_drift(offset_seconds: float) -> ClockDrift:
    """An agent's clock against the server's (agent minus server): right (within
    `CLOCK_WARN_SECONDS`), ahead or behind past it, or so far ahead (`CLOCK_AHEAD_SECONDS`)
    that the server refuses its reports."""
    if abs(offset_seconds) < CLOCK_WARN_SECONDS:
        return "right"
    if offset_seconds > CLOCK_AHEAD_SECONDS:
        return "refused"
    return "ahead" if offset_seconds > 0 else "behind"


class Outcome(BaseModel):
    """What one check produced in a round: a result, or the reason it has none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    check: str
    started_at: float = Field(description="Seconds since the epoch, agent clock.")
    duration_seconds: float = Field(ge=0, le=MAX_DURATION_SECONDS)
    ok: bool
    error: Annotated[str, Field(max_length=MAX_ERROR_CHARS)] | None = None
    result: SerializeAsAny[CheckResult] | None = None

    @field_validator("check")
    @classmethod
    def _known_check(cls, name: str) -> str:
        if name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            raise ValueError(f"unknown check {name!r} (this version knows: {known})")
        return name

    @field_validator("result", mode="before")
    @classmethod
    def _typed_result(cls, raw: Any, info: ValidationInfo) -> Any:
        spec = REGISTRY.get(info.data.get("check", ""))
        if spec is None:
            return None  # the unknown check is the error already reported
        # A report read from the wire (`parse_report`) is strict all the way down.
        strict = True if info.mode == "json" else None
        return raw if raw is None else spec.result_model.model_validate(raw, strict=strict)

    @model_validator(mode="after")
    def _result_iff_ok(self) -> Outcome:
        if self.ok and self.result is None:
            raise ValueError("an outcome with ok=true needs a result")
        if not self.ok and self.error is None:
            raise ValueError("an outcome with ok=false needs an error")
        return self


class Report(BaseModel):
    """One round of one agent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = 1
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per report; "
                          "the server stores each id at most once.")
    ward: Slug
    host: Slug
    role: Slug | None = Field(default=None, description="What the PC is for (an inventory "
                              "role id); None: not set.")
    agent_version: str = Field(max_length=64)
    generated_at: float
    dropped_reports_total: int = Field(
        default=0, ge=0, le=MAX_COUNT,
        description="Reports this agent dropped undelivered so far (spool full or too old).")
    outcomes: Annotated[list[Outcome], Field(max_length=MAX_CHECKS_PER_REPORT)]

    @field_validator("schema_version", mode="before")
    @classmethod
    def _not_a_boolean(cls, version: Any) -> Any:
        if isinstance(version, bool):  # True == 1 would pass the Literal
            raise ValueError("a boolean is not a schema version")
        return version


def parse_report(body: bytes | str) -> Report:
    """A report as an agent sent it, with strict JSON types: `"1700000000"` is not a number,
    `"yes"` not a boolean, `true` not a schema version. Raises pydantic's ValidationError."""
    return Report.model_validate_json(body, strict=True)


def clock_error(report: Report, now: float) -> str | None:
    """Why the report's times cannot be right by the server's clock `now` (more than
    `CLOCK_AHEAD_SECONDS` ahead, or older than `MAX_REPORT_AGE_SECONDS`), or None."""
    times = [("generated_at", report.generated_at)]
    times += [(f"outcomes.{i}.started_at", o.started_at) for i, o in enumerate(report.outcomes)]
    for name, at in times:
        if at > now + CLOCK_AHEAD_SECONDS:
            return (f"{name}: {at - now:.4g} s ahead of the server's clock (at most "
                    f"{CLOCK_AHEAD_SECONDS:g} s allowed): set this PC's clock")
        if at < now - MAX_REPORT_AGE_SECONDS:
            return (f"{name}: {(now - at) / 86400:.4g} days before the server's clock (at most "
                    f"{MAX_REPORT_AGE_SECONDS / 86400:g} days allowed)")
    return None


def schema_version_of(payload: Any) -> Any:
    """The declared schema version of a raw payload, to give unknown versions a clear error."""
    return payload.get("schema_version") if isinstance(payload, dict) else None
