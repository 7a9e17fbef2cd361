"""The agent: runs checks on schedule, keeps their results as metrics, delivers each round.

The throughput test is the exception: it follows the city measurement plan the agent fetches
from the server (`agent.plan`), unless the config says `follow_plan: false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import math
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

import wardready
from wardready.agent.child import ChildError, run_isolated
from wardready.agent.config import AgentConfig
from wardready.agent.delivery import FAILURE_REASONS, Delivery
from wardready.agent.endpoint import MetricsEndpoint
from wardready.agent.plan import LinkUse, ThroughputSchedule, fetch_plan, mark_busy
from wardready.agent.scheduler import Scheduler
from wardready.agent.spool import Spool
from wardready.checks import REGISTRY, bandwidth
from wardready.checks.base import CheckConfig, CheckSpec, Context, ServerLink
from wardready.core.metrics import (
    AGENT_INFO,
    AGENT_LABELS,
    CLOCK_OFFSET,
    DROPPED_REPORTS,
    OUTCOME_METRICS,
    MetricSpec,
    Sample,
    families,
    outcome_samples,
)
from wardready.core.serial import SerialThread
from wardready.model.report import MAX_ERROR_CHARS, Outcome, Report

log = logging.getLogger(__name__)
CLOCK_JUMP_SECONDS = 5.0
CONTINUOUS_BACKOFF_SECONDS = 5.0
CONTINUOUS_BACKOFF_MAX_SECONDS = 300.0
"""A continuous check that keeps failing (the server away) reports at most this often."""

GENERATED = MetricSpec("wardready_agent_reports_generated_total",
                       "Reports this agent process produced.", kind="counter")
DELIVERED = MetricSpec("wardready_agent_reports_delivered_total",
                       "Reports the server acknowledged.", kind="counter")
DELIVERY_FAILURES = MetricSpec("wardready_agent_report_delivery_failures_total",
                               "Delivery attempts that failed and will be retried, by reason.",
                               ("reason",), kind="counter")
REJECTED = MetricSpec("wardready_agent_reports_rejected_total",
                      "Reports the server refused for good (malformed or too large).",
                      kind="counter")
PENDING = MetricSpec("wardready_agent_reports_pending", "Reports waiting to be delivered.")
SPOOL_BYTES = MetricSpec("wardready_agent_spool_bytes", "Size of the reports in the spool.")
SPOOL_OLDEST = MetricSpec("wardready_agent_spool_oldest_report_timestamp_seconds",
                          "When the oldest undelivered report was spooled.")
SPOOL_ERRORS = MetricSpec("wardready_agent_spool_write_errors_total",
                          "Reports that could not be written to the spool (kept in memory).",
                          kind="counter")
CLOCK_JUMPS = MetricSpec("wardready_agent_clock_jumps_total",
                         "Times the wall clock moved against the monotonic clock by over "
                         f"{CLOCK_JUMP_SECONDS:g} s.", kind="counter")
TESTER = MetricSpec("wardready_agent_plan_tester",
                    "1 if the plan makes this PC one of its ward's throughput testers.")
NEXT_TEST = MetricSpec("wardready_agent_next_throughput_test_timestamp_seconds",
                       "When this PC's next scheduled throughput test falls due.")
PLAN_FETCHED = MetricSpec("wardready_agent_plan_fetched_timestamp_seconds",
                          "When the agent last fetched its measurement plan.")
DEFERRALS = MetricSpec("wardready_agent_throughput_deferrals_total",
                       "Scheduled throughput tests that did not run when due, by reason.",
                       ("reason",), kind="counter")
PLAN_INTERVAL = MetricSpec("wardready_agent_plan_mean_interval_seconds",
                           "The plan's mean time between this ward's throughput tests.")
PLAN_BUDGET = MetricSpec("wardready_agent_plan_daily_budget_bytes",
                         "The plan's daily byte budget for this ward's throughput tests.")
NEXT_QUIET = MetricSpec("wardready_agent_next_quiet_window_start_timestamp_seconds",
                        "When the next quiet window of this PC's ward begins (none: absent).")
BUSY_MARKS = MetricSpec("wardready_agent_busy_marks_total",
                        "Times this PC told the server it carries traffic (its ward's tests "
                        "wait).", kind="counter")
AGENT_METRICS = (GENERATED, DELIVERED, DELIVERY_FAILURES, REJECTED, PENDING,
                 SPOOL_BYTES, SPOOL_OLDEST, DROPPED_REPORTS, SPOOL_ERRORS, CLOCK_JUMPS,
                 CLOCK_OFFSET, TESTER, NEXT_TEST, PLAN_FETCHED, PLAN_INTERVAL, PLAN_BUDGET,
                 NEXT_QUIET, DEFERRALS, BUSY_MARKS)
PLAN_RETRY_SECONDS = 60.0
"""After a failed plan fetch; the last plan fetched stays in force meanwhile."""
LINK_SAMPLE_SECONDS = 5.0
"""How often the agent reads its own interface counters to tell the server it is busy."""


async def run_check(spec: CheckSpec, config: CheckConfig, context: Context | None = None,
                    isolate: bool = False) -> Outcome:
    """Run one check within its timeout; a failure is an outcome, never an exception. With
    `isolate`, a check that asks for it runs in a child process (`agent.child`)."""
    started_at, t0 = time.time(), time.perf_counter()
    context = context or Context()
    work = (run_isolated(spec, config, context) if isolate and spec.isolated
            else spec.run(config, context))
    try:
        result = await asyncio.wait_for(work, config.timeout_seconds)
        error = None
    except TimeoutError:
        result, error = None, f"timed out after {config.timeout_seconds:g} s"
    except ChildError as exc:  # the child logged the details
        log.warning("check %s failed: %s", spec.name, exc)
        result, error = None, str(exc)[:MAX_ERROR_CHARS]
    except Exception as exc:  # a broken probe must not stop the others
        log.exception("check %s failed", spec.name)
        result, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return Outcome(check=spec.name, started_at=started_at,
                   duration_seconds=time.perf_counter() - t0, ok=result is not None,
                   error=error, result=result)


def continuous_backoff(failures: int) -> float:
    """Seconds a continuous check waits after its `failures`th failed run in a row: doubling
    from CONTINUOUS_BACKOFF_SECONDS up to CONTINUOUS_BACKOFF_MAX_SECONDS, times a random
    0.5-1 so that agents failing together (the server away) do not retry together."""
    bound = CONTINUOUS_BACKOFF_SECONDS * 2 ** min(failures - 1, 30)
    return random.uniform(0.5, 1.0) * min(bound, CONTINUOUS_BACKOFF_MAX_SECONDS)


class Agent(Collector):
    """One ward machine's agent; also the collector behind its /metrics."""

    def __init__(self, config: AgentConfig, token: str) -> None:
        self.config = config
        self.checks = config.check_configs()
        self.spool = Spool(config.spool_path, config.spool_max_bytes,
                           config.spool_max_age_seconds)
        self.io = SerialThread("spool")
        self.delivery = Delivery(str(config.server_url), token, config.delivery_timeout_seconds,
                                 self.spool, self.io, config.ca_file,
                                 config.delivery_backoff_max_seconds)
        self.server = ServerLink(str(config.server_url).rstrip("/"), token, config.ca_file)
        self.context = config.context(self.server)
        self.planned = config.follow_plan
        """The throughput test follows the server's plan, not an interval, and the server
        hears when this PC carries a call (even where it never tests)."""
        self.schedule = ThroughputSchedule()
        if config.start_jitter_seconds is not None:
            self.schedule.first_spread = config.start_jitter_seconds
        self.plan_fetched_at: float | None = None
        self.testing = False
        self.tests_run = 0
        self.busy_marks = 0
        self.latest: dict[str, Outcome] = {}
        self.generated = 0
        self.clock_jumps = 0
        self._clocks = (time.time(), time.monotonic())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def run_round(self, names: list[str]) -> Report:
        """Run the named checks concurrently and queue their report for delivery."""
        outcomes = await asyncio.gather(*(run_check(REGISTRY[n], self.checks[n], self.context,
                                                    isolate=True) for n in names))
        return await self._deliver(list(outcomes))

    async def _deliver(self, outcomes: list[Outcome]) -> Report:
        """Keep the outcomes as the latest and queue their report for delivery."""
        for outcome in outcomes:
            self.latest[outcome.check] = outcome
        self._watch_clock()
        report = Report(ward=self.config.ward, host=self.config.host, role=self.config.role,
                        agent_version=wardready.__version__, generated_at=time.time(),
                        dropped_reports_total=self.delivery.dropped_total,
                        outcomes=outcomes)
        await self.delivery.submit(str(report.id), report.model_dump_json().encode())
        self.generated += 1
        log.info("report %s spooled: %s", report.id,
                 ", ".join(f"{o.check}={'ok' if o.ok else 'failed'}" for o in outcomes))
        return report

    def _watch_clock(self) -> None:
        """Count and log wall-clock jumps (NTP steps, a dead CMOS battery, a manual change)."""
        wall, mono = time.time(), time.monotonic()
        skew = (wall - self._clocks[0]) - (mono - self._clocks[1])
        self._clocks = (wall, mono)
        if abs(skew) > CLOCK_JUMP_SECONDS:
            self.clock_jumps += 1
            log.warning("wall clock jumped %+.1f s; report times before and after differ", skew)

    def close(self) -> None:
        self.delivery.close()
        self.io.shutdown()
        self.spool.close()

    def health(self) -> dict[str, Any]:
        """What /healthz answers."""
        return {"status": "ok", "pending": self.delivery.pending, "generated": self.generated}

    async def run(self) -> None:
        """Serve /metrics, deliver reports and run rounds until cancelled."""
        endpoint = MetricsEndpoint(self.registry, self.health, self.config.listen_host,
                                   self.config.listen_port)
        log.info("metrics on http://%s:%d/metrics, reporting to %s as %s/%s",
                 self.config.listen_host, self.config.listen_port, self.config.server_url,
                 self.config.ward, self.config.host)
        scheduler = Scheduler({n: c.interval_seconds for n, c in self.checks.items()
                               if not REGISTRY[n].continuous
                               and not (self.planned and n == "bandwidth")},
                              jitter=self.config.start_jitter_seconds)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.delivery.run(), name="delivery"),
                 *(asyncio.create_task(self._run_continuous(n), name=n)
                   for n in self.checks if REGISTRY[n].continuous)]
        if self.planned:
            tasks += [asyncio.create_task(self._follow_plan(stop), name="plan"),
                      asyncio.create_task(self._watch_link(stop), name="link-use")]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                # A stop request ends the wait, never a round: what was made gets spooled.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), scheduler.seconds_until_next())
                names = [] if stop.is_set() else scheduler.due()
                if names:
                    await self.run_round(names)
            log.info("stopping; %d reports wait in the spool", self.delivery.pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            endpoint.close()
            self.close()

    async def _follow_plan(self, stop: asyncio.Event) -> None:
        """Fetch the plan every `pull_seconds`; run the throughput test when it falls due."""
        next_pull = 0.0
        while not stop.is_set():
            now = time.time()
            if now >= next_pull:
                try:
                    plan = await asyncio.to_thread(fetch_plan, self.server)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    log.warning("cannot fetch the measurement plan (the last one stays): %s",
                                exc)
                    next_pull = now + PLAN_RETRY_SECONDS
                else:
                    if plan.get("version") != (self.schedule.plan or {}).get("version"):
                        log.info("measurement plan %s: %s", plan.get("version"),
                                 "this PC tests its ward's uplink"
                                 if plan["throughput"]["tester"] else "no throughput tests here")
                    self.schedule.update(plan, now)
                    self.plan_fetched_at = now
                    next_pull = now + float(plan.get("pull_seconds", PLAN_RETRY_SECONDS))
            due = self.schedule.next_at if "bandwidth" in self.checks else None
            if due is not None and due <= now:
                await self._throughput_test()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(next_pull, due or math.inf) - now)

    async def _throughput_test(self) -> None:
        """Run the test as the plan asks; a deferred one is tried again later, unreported."""
        name = "bandwidth"
        config = self.checks[name].model_copy(update={"wait_for_holds": False})
        self.testing = True
        try:
            outcome = await run_check(REGISTRY[name], config, self.context, isolate=True)
        finally:
            self.testing = False
            self.tests_run += 1
        deferred = getattr(outcome.result, "deferred", None)
        if deferred is not None:
            log.info("throughput test deferred (%s): %s", deferred.reason, deferred.detail)
            self.schedule.deferred(deferred.reason, deferred.retry_after_seconds, time.time())
            return
        self.schedule.ran(time.time())
        await self._deliver([outcome])

    async def _watch_link(self, stop: asyncio.Event) -> None:
        """Tell the server while this PC moves traffic of its own (a call): its ward's
        throughput tests wait. Its own test is not such traffic."""
        config = self.checks.get("bandwidth") or bandwidth.Config()
        assert isinstance(config, bandwidth.Config)
        use, marked_at, tests = LinkUse(), -math.inf, self.tests_run
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LINK_SAMPLE_SECONDS)
            rate = use.rate()
            if self.testing or self.tests_run != tests:  # the sample holds the test's bytes
                tests = self.tests_run
                continue
            if rate is None or rate <= config.busy_own_bits_per_second:
                continue
            if time.monotonic() - marked_at >= LINK_SAMPLE_SECONDS * 2:
                try:
                    await asyncio.to_thread(mark_busy, self.server, rate)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    log.warning("cannot tell the server this PC is busy: %s", exc)
                else:
                    marked_at = time.monotonic()
                    self.busy_marks += 1

    # -- continuous checks (CheckSpec.continuous): not in rounds, one task each --

    async def _run_continuous(self, name: str) -> None:
        """Run a continuous check interval after interval, back to back, each outcome a
        report of its own on the rounds' way (spooled, then delivered); after a failed run
        the next waits `continuous_backoff`."""
        spec, config = REGISTRY[name], self.checks[name]
        jitter = self.config.start_jitter_seconds
        await asyncio.sleep(random.uniform(0, config.interval_seconds if jitter is None
                                           else min(jitter, config.interval_seconds)))
        failures = 0
        while True:
            outcome = await run_check(spec, config, self.context, isolate=True)
            await self._deliver([outcome])
            failures = 0 if outcome.ok else failures + 1
            if failures:
                await asyncio.sleep(continuous_backoff(failures))

    def collect(self) -> Iterator[Metric]:
        d = self.delivery
        yield from families((AGENT_INFO,), [((self.config.ward, self.config.host),
                                             Sample(AGENT_INFO, (wardready.__version__,), 1))],
                            AGENT_LABELS)
        own = [Sample(GENERATED, (), self.generated), Sample(DELIVERED, (), d.delivered),
               *(Sample(DELIVERY_FAILURES, (r,), d.failures[r]) for r in FAILURE_REASONS),
               Sample(REJECTED, (), d.rejected), Sample(PENDING, (), d.pending),
               Sample(SPOOL_BYTES, (), d.stats.bytes),
               Sample(DROPPED_REPORTS, (), d.dropped_total),
               Sample(SPOOL_ERRORS, (), d.spool_errors), Sample(CLOCK_JUMPS, (), self.clock_jumps)]
        if d.stats.oldest_created_at is not None:
            own.append(Sample(SPOOL_OLDEST, (), d.stats.oldest_created_at))
        if d.clock_offset is not None:
            own.append(Sample(CLOCK_OFFSET, (), d.clock_offset))
        if self.planned:
            tests = self.schedule.next_at is not None and "bandwidth" in self.checks
            own += [Sample(TESTER, (), 1 if tests else 0),
                    Sample(BUSY_MARKS, (), self.busy_marks),
                    *(Sample(DEFERRALS, (r,), n) for r, n in self.schedule.deferrals.items())]
            if tests and self.schedule.next_at is not None:
                own.append(Sample(NEXT_TEST, (), self.schedule.next_at))
            if self.plan_fetched_at is not None:
                own.append(Sample(PLAN_FETCHED, (), self.plan_fetched_at))
            plan = self.schedule.plan or {}
            if plan:
                own += [Sample(PLAN_INTERVAL, (), plan["throughput"]["mean_interval_seconds"]),
                        Sample(PLAN_BUDGET, (), plan["throughput"]["daily_budget_bytes"])]
                ahead = [w["start"] for w in plan["quiet_windows"] if w["end"] > time.time()]
                if ahead:
                    own.append(Sample(NEXT_QUIET, (), min(ahead)))
        yield from families(AGENT_METRICS, (((), s) for s in own))
        latest = list(self.latest.values())  # scrapes run on the endpoint's threads
        runs = [s for o in latest
                for s in outcome_samples(o.check, o.ok, o.duration_seconds, o.started_at)]
        yield from families(OUTCOME_METRICS, (((), s) for s in runs))
        for name in self.checks:
            spec, outcome = REGISTRY[name], self.latest.get(name)
            results = spec.samples(outcome.result) if outcome and outcome.result else ()
            yield from families(spec.metrics, (((), s) for s in results))
