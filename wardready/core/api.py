"""The server's HTTP paths that agents and checks call, and the headers they carry: defined
once, below both ends (`wardready.server.routes` serves them)."""

from __future__ import annotations

import email.utils

REPORTS_PATH = "/api/v1/reports"
"""POST a round's report (`wardready.agent.delivery`)."""
PROFILE_PATH = "/api/v1/profile"
"""GET the ward's requirement profile (`wardready-agent check`)."""
ENROLL_PATH = "/api/v1/enroll"
"""POST an enrollment code for a token (`wardready-agent enroll`)."""
WHOAMI_PATH = "/api/v1/whoami"
"""GET who a token is (`wardready-agent enroll`, re-enrolling)."""

PLAN_PATH = "/api/v1/plan"
"""GET the agent's part of the city measurement plan (`wardready.agent.plan`)."""
BUSY_PATH = "/api/v1/busy"
"""POST: this PC carries a call for the next few seconds; its ward's tests wait."""

SLOTS_PATH = "/api/v1/speedtest/slots"
"""POST asks for a throughput-test slot; GET and DELETE on `SLOTS_PATH/<slot id>` read and
release it (`wardready.checks.bandwidth`)."""
DOWNLOAD_PATH = "/api/v1/speedtest/download"
UPLOAD_PATH = "/api/v1/speedtest/upload"
SLOT_HEADER = "X-Wardready-Slot"
"""Names the slot a download or upload belongs to."""

SESSIONS_PATH = "/api/v1/udp-sessions"
"""POST opens a UDP echo session (`wardready.checks.media`; the wire format is
`wardready.core.echo`)."""
CURRENT_PATH = "/api/v1/udp-sessions/current"
"""GET what the server saw of the agent's session."""


MAX_RETRY_AFTER_SECONDS = 3600.0
"""The longest `Retry-After` heeded: a server asking for more is waited on this long."""


def retry_after_seconds(header: str | None) -> float | None:
    """A `Retry-After` header's delay in seconds, at most MAX_RETRY_AFTER_SECONDS (RFC 9110:
    a number of seconds; the HTTP-date form, which no server here sends, is ignored)."""
    try:
        seconds = float(header or "")
    except ValueError:
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS) if seconds >= 0 else None


def clock_offset_seconds(date_header: str | None, local_now: float) -> float | None:
    """This machine's clock minus the server's, from an answer's `Date` header read at
    `local_now`; None without a readable one. An HTTP-date (RFC 9110) has whole seconds, cut
    down, so the server's clock stood half a second past it on average: within half a second
    (plus the answer's trip)."""
    if not date_header:
        return None
    try:
        server_now = email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return local_now - (server_now + 0.5)
