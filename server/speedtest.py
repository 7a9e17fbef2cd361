"""Throughput-test endpoints and the scheduler that grants their slots.

An agent asks for a slot first (`POST /api/v1/speedtest/slots`). The measurement plan
(`server.plan`) may refuse it: inside a quiet window, past the ward's daily byte budget, or
while another PC of the ward carries a call. At most one test per ward runs at a time, since
machines sharing a ward's uplink would each measure a fraction of it, and at most
`max_concurrent_tests` city-wide, so the central uplink is not the bottleneck. A slot is a
lease: it expires after `slot_seconds` and carries a byte budget shared by all its streams
(one test's, within what is left of the ward's day). Download and upload requests name
their slot in the `X-Wardready-Slot` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web

from wardready.core import i18n, tcpinfo
from wardready.core.api import SLOT_HEADER, SLOTS_PATH
from wardready.core.i18n import _
from wardready.core.metrics import MetricSpec, Sample
from wardready.server.auth import authenticate, fail
from wardready.server.config import SpeedtestConfig
from wardready.server.plan import DEFERRALS, PLANNER, Planner
from wardready.server.store import Identity

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 << 10
PAYLOAD = os.urandom(1 << 20)
"""Random, so no compression anywhere on the path can inflate the figures."""
TIMELINE_STEP_SECONDS = 0.05


@dataclass
class Slot:
    """A granted throughput test: who holds it, until when, and what it may still move."""

    id: str
    ward: str
    host: str
    expires_at: float
    bytes_left: int
    granted_bytes: int = 0
    streams: int = 0
    uploaded: int = 0
    upload_timeline: list[tuple[float, int]] = field(default_factory=list)
    """(time, bytes so far) of every upload stream together, each TIMELINE_STEP_SECONDS at
    most: the agent reads it after aborting its streams (GET /api/v1/speedtest/slots/ID)."""
    download_tcp_info: list[tcpinfo.TcpInfo] = field(default_factory=list)
    """TCP_INFO of each download stream's socket, the sender's view (as ndt7 measures),
    taken every TIMELINE_STEP_SECONDS and when the stream ends; empty off Linux."""

    def record_upload(self, now: float, size: int) -> None:
        self.uploaded += size
        if not self.upload_timeline or now - self.upload_timeline[-1][0] >= \
                TIMELINE_STEP_SECONDS:
            self.upload_timeline.append((now, self.uploaded))


@dataclass
class Slots:
    """The scheduler: grants, refuses and expires slots (in memory; slots are short leases)."""

    config: SpeedtestConfig
    planner: Planner | None = None
    by_ward: dict[str, Slot] = field(default_factory=dict)
    refusals: Counter[str] = field(default_factory=Counter)
    bytes_moved: Counter[str] = field(default_factory=Counter)
    granted: int = 0
    clock: Callable[[], float] = time.time
    """Wall-clock time, for the day a slot's bytes are charged to (a simulation's own)."""

    def _expire(self, now: float) -> None:
        for ward in [w for w, s in self.by_ward.items() if s.expires_at <= now]:
            self._end(self.by_ward.pop(ward))

    def _end(self, slot: Slot) -> None:
        """Charge what the slot moved to its ward's daily budget."""
        if self.planner is not None:
            self.planner.spend(slot.ward, slot.granted_bytes - slot.bytes_left, self.clock())

    def acquire(self, identity: Identity, now: float,
                max_bytes: int | None = None) -> Slot | tuple[str, str]:
        """A new slot for this agent, or why there is none now: `ward_busy` or `city_busy`
        and a sentence."""
        self._expire(now)
        ward = identity.ward or ""
        held = self.by_ward.get(ward)
        if held is not None and held.host == identity.host:
            self._end(self.by_ward.pop(ward))  # the agent starts over (after a crash)
        elif held is not None:
            self.refusals["ward_busy"] += 1
            return "ward_busy", _("ward {ward!r} has a test running (host {host!r})").format(
                ward=ward, host=held.host)
        if len(self.by_ward) >= self.config.max_concurrent_tests:
            self.refusals["city_busy"] += 1
            return "city_busy", _("{count} tests are running city-wide (the cap)").format(
                count=len(self.by_ward))
        size = min(self.config.max_bytes_per_slot,
                   self.config.max_bytes_per_slot if max_bytes is None else max_bytes)
        slot = Slot(secrets.token_hex(16), ward, identity.host or "",
                    now + self.config.slot_seconds, size, granted_bytes=size)
        self.by_ward[ward] = slot
        self.granted += 1
        return slot

    def find(self, slot_id: str, identity: Identity, now: float) -> Slot | None:
        """The live slot with this id, if this agent holds it."""
        self._expire(now)
        slot = self.by_ward.get(identity.ward or "")
        if slot is None or slot.host != identity.host:
            return None
        # compare_digest takes only ASCII text: bytes, so any id a client sends compares.
        same = secrets.compare_digest(slot.id.encode(), slot_id.encode("utf-8", "replace"))
        return slot if same else None

    def release(self, slot: Slot) -> None:
        if self.by_ward.get(slot.ward) is slot:
            self._end(self.by_ward.pop(slot.ward))

    def samples(self) -> Iterator[Sample]:
        """The scheduler's own figures for the server's /metrics."""
        self._expire(time.monotonic())
        yield Sample(ACTIVE, (), len(self.by_ward))
        yield Sample(GRANTED, (), self.granted)
        for reason in ("ward_busy", "city_busy"):
            yield Sample(REFUSED, (reason,), self.refusals[reason])
        for direction in ("download", "upload"):
            yield Sample(MOVED, (direction,), self.bytes_moved[direction])

    def retry_after(self, now: float) -> float:
        """Seconds until the soonest slot expires (an upper bound on the wait)."""
        soonest = min((s.expires_at for s in self.by_ward.values()), default=now + 1)
        return max(1.0, soonest - now)


SLOTS = web.AppKey("speedtest_slots", Slots)

ACTIVE = MetricSpec("wardready_server_speedtest_active_tests", "Throughput-test slots held now.")
GRANTED = MetricSpec("wardready_server_speedtest_slots_granted_total",
                     "Throughput-test slots granted.", kind="counter")
REFUSED = MetricSpec("wardready_server_speedtest_slots_refused_total",
                     "Slot requests refused, by reason (ward_busy, city_busy).", ("reason",),
                     kind="counter")
MOVED = MetricSpec("wardready_server_speedtest_bytes_total",
                   "Bytes moved by throughput tests, by direction.", ("direction",),
                   kind="counter")
METRICS = (ACTIVE, GRANTED, REFUSED, MOVED)


def setup(app: web.Application, config: SpeedtestConfig, planner: Planner | None) -> Slots:
    """Give the app its slot scheduler."""
    slots = Slots(config, planner)
    app[SLOTS] = slots
    return slots


def _not_now(why: str, reason: str, wait: float) -> web.HTTPException:
    """429 with Retry-After, and the reason as a word the agent counts its deferral by."""
    body = {"error": _("no slot: {why}; retry in {wait:.0f} s").format(why=why, wait=wait),
            "reason": reason,
            "retry_after": wait}
    return web.HTTPTooManyRequests(text=json.dumps(body), content_type="application/json",
                                   headers={"Retry-After": str(int(wait + 0.999))})


async def acquire_slot(request: web.Request) -> web.Response:
    """201 with a slot; 429 with Retry-After and a `reason` when the plan holds the ward's
    tests back (`quiet_window`, `budget`, `ward_in_use`) or the ward or the city is busy
    (`ward_busy`, `city_busy`). `?override=1` (a technician's `--now`) passes quiet windows
    and the budget."""
    identity = await authenticate(request, "agent")
    slots, now = request.app[SLOTS], time.monotonic()
    planner, ward, wall = request.app[PLANNER], identity.ward or "", time.time()
    override = request.query.get("override") == "1"
    # A refusal's text in the language of the technician behind the agent.
    with i18n.using(i18n.accepted(request.headers.get("Accept-Language"))):
        refused = planner.refusal(ward, wall, override)
        if refused is not None:
            reason, wait, text = refused
            planner.defer(ward, reason)
            raise _not_now(text, reason, wait)
        slot = slots.acquire(identity, now, planner.slot_bytes(ward, wall, override))
        if isinstance(slot, tuple):
            busy, text = slot
            raise _not_now(text, busy, slots.retry_after(now))
    if override:
        planner.overrides += 1
        log.warning("speed-test slot for %s/%s overrides the plan (--now)", slot.ward, slot.host)
    log.info("speed-test slot for %s/%s (%d running)", slot.ward, slot.host,
             len(slots.by_ward))
    return web.json_response({"slot": slot.id, "expires_in": slots.config.slot_seconds,
                              "max_bytes": slot.bytes_left,
                              "max_streams": slots.config.max_streams,
                              "baseline_rtt_seconds": planner.baseline(ward, wall),
                              "rtt_bound_seconds": planner.rtt_bound(ward)}, status=201)


async def _own_slot(request: web.Request) -> Slot:
    identity = await authenticate(request, "agent")
    slot = request.app[SLOTS].find(request.match_info["slot_id"], identity, time.monotonic())
    if slot is None:
        raise fail(web.HTTPNotFound, "no such slot held by this agent")
    return slot


async def slot_state(request: web.Request) -> web.Response:
    """What the slot's uploads delivered, by the server's clock."""
    slot = await _own_slot(request)
    return web.json_response({"bytes_left": slot.bytes_left, "uploaded": slot.uploaded,
                              "upload_timeline": slot.upload_timeline,
                              "download_tcp_info": [d for i in slot.download_tcp_info
                                                    if (d := i.as_dict())]})


async def release_slot(request: web.Request) -> web.Response:
    """End the slot; `?deferred=REASON` says the agent found the link in use and did not
    test (counted with the plan's deferrals)."""
    slot = await _own_slot(request)
    deferred = request.query.get("deferred")
    if deferred is not None and deferred not in DEFERRALS:
        raise fail(web.HTTPBadRequest, f"deferred: unknown reason {deferred!r}")
    request.app[SLOTS].release(slot)
    if deferred is not None:
        request.app[PLANNER].defer(slot.ward, deferred)
    return web.Response(status=204)


async def _slot_for(request: web.Request) -> Slot:
    identity = await authenticate(request, "agent")
    slot = request.app[SLOTS].find(request.headers.get(SLOT_HEADER, ""), identity,
                                   time.monotonic())
    if slot is None:
        raise fail(web.HTTPConflict, f"a throughput test needs a live slot in {SLOT_HEADER}; "
                                     f"ask POST {SLOTS_PATH} first")
    if slot.bytes_left <= 0:
        raise fail(web.HTTPTooManyRequests, "this slot's byte budget is spent")
    if slot.streams >= request.app[SLOTS].config.max_streams:
        raise fail(web.HTTPTooManyRequests, "this slot runs its maximum number of streams")
    return slot


async def download(request: web.Request) -> web.StreamResponse:
    """Stream `bytes` random bytes (within the slot's budget and lease) to the agent."""
    slot = await _slot_for(request)
    try:
        wanted = int(request.query.get("bytes", "0"))
    except ValueError:
        raise fail(web.HTTPBadRequest, "bytes: not an integer") from None
    if wanted <= 0:
        raise fail(web.HTTPBadRequest, "bytes: must be a positive integer")
    slots = request.app[SLOTS]
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    slot.streams += 1
    sent, offset = 0, 0
    # The socket now: once the agent drops the connection the transport forgets it, so the
    # last snapshot before that is the stream's final one.
    sock = request.transport.get_extra_info("socket") if request.transport else None
    index, snapshot_at = len(slot.download_tcp_info), 0.0
    slot.download_tcp_info.append(tcpinfo.TcpInfo())  # this stream's place, empty so far

    def snapshot() -> None:
        info = tcpinfo.read(sock) if sock is not None else None
        if info is not None:
            slot.download_tcp_info[index] = info

    try:
        while sent < wanted and slot.bytes_left > 0 and time.monotonic() < slot.expires_at:
            size = min(CHUNK_BYTES, wanted - sent, slot.bytes_left)
            if offset + size > len(PAYLOAD):
                offset = 0
            await response.write(PAYLOAD[offset:offset + size])
            offset += size
            sent += size
            slot.bytes_left -= size
            slots.bytes_moved["download"] += size
            if time.monotonic() - snapshot_at >= TIMELINE_STEP_SECONDS:
                snapshot_at = time.monotonic()
                snapshot()
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the agent stopped reading: it had measured enough
    finally:
        snapshot()
        slot.streams -= 1
    return response


async def upload(request: web.Request) -> web.Response:
    """Read and discard the body, within the slot's budget and lease, recording what arrived
    and when in the slot (measured here, so the agent's figure does not include its own send
    buffers)."""
    slot = await _slot_for(request)
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        # Bytes that unpack larger than they travelled would count a link faster than it is.
        raise fail(web.HTTPUnsupportedMediaType, "a throughput test's upload is sent as it is, "
                   "without Content-Encoding", **{"Accept-Encoding": "identity"})
    slots = request.app[SLOTS]
    slot.streams += 1
    received = 0
    slot.record_upload(time.monotonic(), 0)
    try:
        # An upload that stalls is cut off when its slot ends, not held open for ever.
        async with asyncio.timeout(max(0.0, slot.expires_at - time.monotonic())):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                received += len(chunk)
                slot.bytes_left -= len(chunk)
                slots.bytes_moved["upload"] += len(chunk)
                now = time.monotonic()
                slot.record_upload(now, len(chunk))
                if slot.bytes_left <= 0 or now >= slot.expires_at:
                    break  # over budget: stop reading; the reply ends the transfer
    except TimeoutError:
        pass
    finally:
        slot.streams -= 1
        slot.record_upload(time.monotonic(), 0)
    response = web.json_response({"bytes": received})
    response.force_close()  # the body may not have been read to its end
    return response
