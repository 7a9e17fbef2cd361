"""Remote write: every stored report's measurements, stamped with the time they were
measured, sent to a Prometheus-compatible store (Prometheus's receiver, VictoriaMetrics,
Mimir, Thanos Receive) with the remote-write 1.0 protocol: a protobuf `WriteRequest`,
snappy-compressed.

The reports table is the queue. A report is committed there before the agent hears 201; the
writer sends reports in the order they were stored and keeps, in the same database, the
last one the receiver acknowledged, so a restart or a receiver's outage resumes where it
stopped. The queue is bounded by `max_backlog_reports` and `max_age_hours`: what is skipped
is counted, by reason, and so is what the receiver refuses for good (a 4xx). A report
acknowledged to an agent is thus written to the receiver or counted as dropped.

What travels this way is what was measured (each check's samples, the continuous checks'
running totals, the devices below spec). What the server works out or knows now (the wards
and their requirements, readiness verdicts, agents' last report, asset changes) stays on
`/metrics`, which then leaves the measurements out (docs/remote-write.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from wardready.checks import REGISTRY
from wardready.core.api import retry_after_seconds
from wardready.core.inventory import Inventory
from wardready.core.metrics import AGENT_LABELS, MetricSpec, Sample, Totals
from wardready.core.serial import SerialThread
from wardready.model.report import Report
from wardready.server.config import RemoteWriteConfig
from wardready.server.exposition import outcome_measurements
from wardready.server.store import Store

log = logging.getLogger(__name__)

Series = tuple[tuple[str, str], Sample, int]
"""(ward and host, a sample, milliseconds since the epoch): labels are put in order only
as the request is encoded."""

SENT_REPORTS = MetricSpec("wardready_server_remote_write_reports_total",
                          "Reports whose measurements the receiver acknowledged.",
                          kind="counter")
SENT_SAMPLES = MetricSpec("wardready_server_remote_write_samples_total",
                          "Samples the receiver acknowledged.", kind="counter")
DROPPED = MetricSpec("wardready_server_remote_write_dropped_reports_total",
                     "Reports whose measurements will never reach the receiver, by reason: "
                     "backlog (past max_backlog_reports), too_old (past max_age_hours), "
                     "refused (the receiver answered 4xx), unreadable.",
                     ("reason",), kind="counter")
FAILURES = MetricSpec("wardready_server_remote_write_failures_total",
                      "Attempts that will be retried, by reason: connect, timeout, "
                      "server_error (5xx), throttled (429).", ("reason",), kind="counter")
PENDING = MetricSpec("wardready_server_remote_write_pending_reports",
                     "Stored reports not yet sent.")
LAST_SENT = MetricSpec("wardready_server_remote_write_last_sent_timestamp_seconds",
                       "When the receiver last acknowledged a batch.")
METRICS = (SENT_REPORTS, SENT_SAMPLES, DROPPED, FAILURES, PENDING, LAST_SENT)
DROP_REASONS = ("backlog", "too_old", "refused", "unreadable")
FAILURE_REASONS = ("connect", "timeout", "server_error", "throttled")

RECENT_REPORTS = 4096
"""Reports kept parsed after ingest, so the writer need not parse them again from SQLite."""
BACKOFF_MAX_SECONDS = 60.0


def _write_request_class() -> Any:
    """The remote-write 1.0 `WriteRequest` message (prometheus/prompb/remote.proto and
    types.proto: the fields a sender fills), built from its descriptor at run time so no
    generated code has to match the installed protobuf."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="wardready/prompb.proto",
                                               package="prometheus", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        added = proto.message_type.add(name=name)
        for field, number, kind, type_name in fields:
            if type_name:  # messages are repeated here; scalars are not
                added.field.add(name=field, number=number, type=kind,
                                label=fdp.LABEL_REPEATED, type_name=type_name)
            else:
                added.field.add(name=field, number=number, type=kind,
                                label=fdp.LABEL_OPTIONAL)

    message("Label", ("name", 1, fdp.TYPE_STRING, ""), ("value", 2, fdp.TYPE_STRING, ""))
    message("Sample", ("value", 1, fdp.TYPE_DOUBLE, ""), ("timestamp", 2, fdp.TYPE_INT64, ""))
    message("TimeSeries", ("labels", 1, fdp.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, fdp.TYPE_MESSAGE, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, fdp.TYPE_MESSAGE, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


_WRITE_REQUEST: Any = None


def encode(series: Iterable[Series]) -> bytes:
    """A snappy-compressed remote-write `WriteRequest` of these series, one sample each,
    their labels sorted by name as the protocol asks."""
    global _WRITE_REQUEST
    import cramjam

    if _WRITE_REQUEST is None:
        _WRITE_REQUEST = _write_request_class()
    request = _WRITE_REQUEST()
    add_series = request.timeseries.add
    for key, s, ms in series:
        name = s.spec.name + s.suffix
        order = _LABEL_ORDER.get(name) or _label_order(name, s)
        values = (name, *key, *s.labels)
        if len(values) != len(order[1]):
            raise ValueError(f"{name}: label values {values[1:]} do not match labels "
                             f"{order[0]}")
        ts = add_series()
        add_label = ts.labels.add
        for label, place in zip(order[0], order[1], strict=True):
            add_label(name=label, value=values[place])
        ts.samples.add(value=s.value, timestamp=ms)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


_LABEL_ORDER: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
"""Per series name: its label names in sorted order, and where each one's value is in
(name, ward, host, the metric's own labels)."""


def _label_order(name: str, s: Sample) -> tuple[tuple[str, ...], tuple[int, ...]]:
    names = ("__name__", *AGENT_LABELS, *s.spec.label_names(s.suffix))
    places = tuple(sorted(range(len(names)), key=names.__getitem__))
    order = _LABEL_ORDER[name] = (tuple(names[i] for i in places), places)
    return order


class ReportSeries:
    """A report's measurements as series, each stamped with its outcome's start; keeps the
    continuous checks' running totals per agent as the server's /metrics does (from zero
    at start: a counter reset to Prometheus)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.totals: dict[tuple[str, str, str], Totals] = {}

    def of(self, report: Report) -> list[Series]:
        key = (report.ward, report.host)
        out: list[Series] = []
        for outcome in report.outcomes:
            if outcome.result is None:
                continue
            ms = round(outcome.started_at * 1000)
            out.extend((key, s, ms) for s in outcome_measurements(self.inventory, key, outcome))
            spec = REGISTRY.get(outcome.check)
            if spec is not None and spec.counts is not None:
                totals = self.totals.setdefault((*key, outcome.check), Totals())
                totals.add(spec.counts(outcome.result))
                out.extend((key, s, ms) for s in totals.samples())
        return out


class RemoteWriter:
    """Sends stored reports' measurements to the receiver, in order, resuming after a
    restart from the last report it acknowledged."""

    def __init__(self, config: RemoteWriteConfig, store: Store, io: SerialThread,
                 inventory: Inventory) -> None:
        self.config, self.store, self.io = config, store, io
        self.series = ReportSeries(inventory)
        self.recent: OrderedDict[tuple[str, str, str], Report] = OrderedDict()
        self.wake = asyncio.Event()
        self.sent_reports = 0
        self.sent_samples = 0
        self.dropped: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.pending = 0
        self.last_sent = 0.0
        self._headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                         "User-Agent": "wardready-server",
                         "X-Prometheus-Remote-Write-Version": "0.1.0"}
        if config.bearer_token_file is not None:
            token = config.bearer_token_file.read_text().strip()
            self._headers["Authorization"] = f"Bearer {token}"

    def stored(self, report: Report) -> None:
        """A report was just committed: keep it parsed for the writer, and wake it."""
        self.recent[(report.ward, report.host, str(report.id))] = report
        while len(self.recent) > RECENT_REPORTS:
            self.recent.popitem(last=False)
        self.wake.set()

    def samples(self) -> Iterator[Sample]:
        """The writer's own figures for the server's /metrics."""
        yield Sample(SENT_REPORTS, (), self.sent_reports)
        yield Sample(SENT_SAMPLES, (), self.sent_samples)
        for reason in DROP_REASONS:
            yield Sample(DROPPED, (reason,), self.dropped[reason])
        for reason in FAILURE_REASONS:
            yield Sample(FAILURES, (reason,), self.failures[reason])
        yield Sample(PENDING, (), self.pending)
        yield Sample(LAST_SENT, (), self.last_sent)

    async def run(self) -> None:
        """Send forever, batch after batch in the order reports were stored; a batch is
        retried with backoff until the receiver takes it or refuses it for good."""
        while True:
            try:
                await self._run()
            except Exception:  # a bug: say so, and carry on from the cursor
                log.exception("remote write stopped; starting again in 10 s")
                await asyncio.sleep(10)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                rows = await self._next_batch()
                if not rows:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), 5.0)
                    continue
                reports = [report for _, report, _ in rows if report is not None]
                # Worked out once: the running totals move on once per report.
                series = [s for report in reports for s in self.series.of(report)]
                refused = await self._deliver(session, series) if series else False
                if refused:
                    self.dropped["refused"] += len(reports)
                else:
                    self.sent_reports += len(reports)
                    self.sent_samples += len(series)
                for _, _, reason in rows:
                    if reason is not None:
                        self.dropped[reason] += 1
                await self.io.call(self.store.remote_write_done, rows[-1][0])

    async def _deliver(self, session: aiohttp.ClientSession, series: list[Series]) -> bool:
        """POST the series until the receiver answers 2xx (False) or 4xx (True: refused
        for good), backing off after each failure."""
        body, backoff = encode(series), 1.0
        while True:
            try:
                return await self._post(session, body)
            except _Retry as exc:
                self.failures[exc.reason] += 1
                log.warning("remote write to %s failed (%s): %s; retrying", self.config.url,
                            exc.reason, exc)
                await asyncio.sleep(max(random.uniform(0.5, 1.0) * backoff,
                                        exc.retry_after or 0.0))
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> bool:
        try:
            async with session.post(self.config.url, data=body, headers=self._headers) as resp:
                answer = (await resp.read())[:300].decode(errors="replace")
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise _Retry("timeout", str(exc) or "no answer in time") from None
        except aiohttp.ClientError as exc:
            raise _Retry("connect", str(exc)) from None
        if status == 429 or status >= 500:
            raise _Retry("throttled" if status == 429 else "server_error",
                         f"{status} {answer}", retry_after_seconds(retry_after))
        if status >= 300:
            log.error("remote write: %s refused a batch for good (%d): %s", self.config.url,
                      status, answer)
            return True
        self.last_sent = time.time()
        return False

    async def _next_batch(self) -> list[tuple[int, Report | None, str | None]]:
        """The next reports to send: (rowid, the report, or why it cannot be sent)."""
        cutoff = time.time() - self.config.max_age_hours * 3600
        self.pending, skipped, rows = await self.io.call(
            self.store.remote_write_batch, self.config.max_reports_per_request,
            self.config.max_backlog_reports, cutoff)
        if skipped:
            self.dropped["backlog"] += skipped
            log.warning("remote write: %d reports past max_backlog_reports dropped unsent",
                        skipped)
        out: list[tuple[int, Report | None, str | None]] = []
        for rowid, ward, host, report_id, body in rows:
            report = self.recent.pop((ward, host, report_id), None)
            if body is None:
                out.append((rowid, None, "too_old"))
            elif report is not None:
                out.append((rowid, report, None))
            else:
                try:
                    out.append((rowid, Report.model_validate_json(body), None))
                except ValueError as exc:  # a check this version no longer knows
                    log.warning("remote write: report %s of %s/%s unreadable: %s",
                                report_id, ward, host, str(exc)[:200])
                    out.append((rowid, None, "unreadable"))
        return out


class _Retry(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.retry_after = reason, retry_after


REMOTE_WRITER = web.AppKey("remote_writer", RemoteWriter)

