"""The agent's part of the city measurement plan.

The agent fetches its plan from the server (`GET /api/v1/plan`) at start and every
`pull_seconds` after, so an operator's change reaches it without a restart. The plan says
whether this PC runs the ward's scheduled throughput tests; if it does, `ThroughputSchedule` draws
their times at random (exponential intervals, clamped) and moves a deferred test to a later
time. Whatever its part, the agent tells the server while this PC itself carries traffic (a
call, `LinkUse`), so no other PC of its ward starts a test meanwhile.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from wardready.checks.bandwidth import own_bytes
from wardready.checks.base import ServerLink, server_tls
from wardready.core import i18n
from wardready.core.api import BUSY_PATH, PLAN_PATH
from wardready.core.i18n import _, language
from wardready.core.plan import draw_interval

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
FIRST_TEST_SPREAD_SECONDS = 600.0
"""A ward with no recent uplink figure gets its first test within this, at random."""
RETRY_SPREAD = {"quiet_window": 3 * 3600.0, "budget": 7200.0}
"""After a quiet window or a spent budget, retries spread over this much past its end, so
the wards do not all ask the moment it ends: the tests a city-wide window holds back take
over an hour of the 4 slots at 3,300 wards (bench plan_capacity)."""
BUSY_RETRY_SECONDS = 600.0
"""A test deferred because the link was in use, or no slot was free within the wait, is
tried again 1-2 times this later."""
BUSY_MARK_SECONDS = 30.0
"""How long one busy mark holds the ward's tests back; renewed while the traffic lasts."""


def request(server: ServerLink, method: str, path: str,
            body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One HTTP(S) request with the standard library (blocking): status and JSON answer."""
    parts = urlsplit(server.url)
    tls: ssl.SSLContext | None = server_tls(server.ca_file) if parts.scheme == "https" else None
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443,
                                           timeout=TIMEOUT_SECONDS, context=tls)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80,
                                          timeout=TIMEOUT_SECONDS)
    headers = {"Authorization": f"Bearer {server.token}", "Accept-Language": i18n.language()}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, parts.path.rstrip("/") + path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read(1 << 20)
    finally:
        conn.close()
    return resp.status, json.loads(text) if text else None


def fetch_plan(server: ServerLink) -> dict[str, Any]:
    """This agent's plan; raises OSError or ValueError when the server does not give it."""
    status, body = request(server, "GET", PLAN_PATH)
    if status != 200 or not isinstance(body, dict):
        raise ValueError(f"the server answered {status} to GET {PLAN_PATH}")
    return body


def mark_busy(server: ServerLink, bits_per_second: float) -> None:
    status, _ = request(server, "POST", BUSY_PATH,
                        {"seconds": BUSY_MARK_SECONDS, "bits_per_second": bits_per_second})
    if status != 204:
        raise ValueError(f"the server answered {status} to POST {BUSY_PATH}")


@dataclass
class ThroughputSchedule:
    """When this PC's next scheduled throughput test falls due (wall-clock time), by the
    plan: None while it is not one of its ward's testers."""

    rng: random.Random = field(default_factory=random.Random)
    first_spread: float = FIRST_TEST_SPREAD_SECONDS
    plan: dict[str, Any] | None = None
    next_at: float | None = None
    deferrals: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> dict[str, Any]:
        return (self.plan or {}).get("throughput", {})

    def update(self, plan: dict[str, Any], now: float) -> None:
        """Follow a newly fetched plan: draw anew when whether or how often it tests changed."""
        before = self.throughput
        self.plan = plan
        after = self.throughput
        if not after.get("tester"):
            self.next_at = None
            return
        timing = ("tester", "mean_interval_seconds", "min_interval_seconds",
                  "max_interval_seconds")
        if self.next_at is not None and all(before.get(k) == after.get(k) for k in timing):
            return
        last = after.get("last_test_at")
        if last is None or now - last >= after["min_interval_seconds"]:
            self.next_at = now + self.rng.uniform(0, self.first_spread)
        else:
            self.next_at = max(now, last + self.draw())

    def draw(self) -> float:
        t = self.throughput
        return draw_interval(self.rng, t["mean_interval_seconds"], t["min_interval_seconds"],
                             t["max_interval_seconds"])

    def ran(self, now: float) -> None:
        self.next_at = now + self.draw() if self.next_at is not None else None

    def deferred(self, reason: str, retry_after: float, now: float) -> None:
        """Try again later: past the window or the day, or a while later if the link was
        busy; the plan's freshness target is kept by the next draw being short enough."""
        self.deferrals[reason] = self.deferrals.get(reason, 0) + 1
        if self.next_at is None:
            return
        spread = RETRY_SPREAD.get(reason)
        if spread is not None:
            self.next_at = now + retry_after + self.rng.uniform(0, spread)
        else:
            self.next_at = now + max(retry_after, BUSY_RETRY_SECONDS) * self.rng.uniform(1, 2)


@dataclass
class LinkUse:
    """This PC's own traffic, from the kernel's interface counters (loopback excluded)."""

    counters: Callable[[], int] = own_bytes
    clock: Callable[[], float] = time.monotonic
    _last: tuple[float, int] | None = None

    def rate(self) -> float | None:
        """Bits per second since the previous call (None on the first)."""
        now, total = self.clock(), self.counters()
        last, self._last = self._last, (now, total)
        if last is None or now <= last[0]:
            return None
        return 8 * (total - last[1]) / (now - last[0])



def next_test(host: str, port: int) -> float | None:
    """When the running agent on this PC schedules its next test (from its /metrics), if it
    runs and tests."""
    name = b"wardready_agent_next_throughput_test_timestamp_seconds "
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    line = next((x for x in text.splitlines() if x.startswith(name)), None)
    return float(line.split()[1]) if line else None


def describe(plan: dict[str, Any], next_test: float | None = None) -> str:
    """The plan as a person reads it, times in the plan's (the city's) time zone."""
    zone = ZoneInfo(plan["timezone"])

    # Weekday and month names are English in strftime; Vietnamese writes the date in digits.
    when = "%a %d %b %H:%M" if language() == "en" else "%d/%m %H:%M"

    def at(t: float) -> str:
        return datetime.fromtimestamp(t, zone).strftime(when)

    t = plan["throughput"]
    hours = {k: t[f"{k}_interval_seconds"] / 3600 for k in ("mean", "min", "max")}
    lines = [_("Measurement plan {version} for ward {ward}, PC {host} (times in {zone}):").format(
        version=plan["version"], ward=plan["ward"], host=plan["host"], zone=plan["timezone"])]
    fields = {"testers": ", ".join(t["testers"]) or _("none"), "elected": t["elected"]}
    lines.append("  " + (_("throughput tests: run by this PC (testers: {testers}; {elected})")
                         if t["tester"] else
                         _("throughput tests: not on this PC (testers: {testers}; {elected})")
                         ).format(**fields))
    lines.append("  " + _("how often: every {mean:g} h on average, at random, {least:g}-{most:g} "
                          "h apart").format(mean=hours["mean"], least=hours["min"],
                                            most=hours["max"]))
    if next_test is not None:
        lines.append("  " + _("next test: {time}").format(time=at(next_test)))
    lines.append("  " + _("budget: {used:.0f} of {budget:.0f} MB used today; one test moves at "
                          "most {most:.0f} MB").format(used=plan["budget_used_bytes"] / 1e6,
                                                       budget=t["daily_budget_bytes"] / 1e6,
                                                       most=t["test_max_bytes"] / 1e6))
    last = t.get("last_test_at")
    age = t["max_age_seconds"] / 3600
    lines.append("  " + (_("uplink figure: never measured, may be {hours:g} h old at most")
                         if last is None else
                         _("uplink figure: from {time}, may be {hours:g} h old at most")).format(
                             time=at(last) if last is not None else "", hours=age))
    if plan.get("quiet_now"):
        lines.append("  " + _("quiet now: {name} until {time}").format(
            name=plan["quiet_now"]["name"], time=at(plan["quiet_now"]["end"])))
    windows = plan["quiet_windows"]
    lines.append("  " + (_("quiet windows, next 7 days:") if windows else
                         _("quiet windows, next 7 days: none")))
    lines += [f"    {at(w['start'])}-{datetime.fromtimestamp(w['end'], zone):%H:%M}  {w['name']}"
              for w in windows]
    return "\n".join(lines)
