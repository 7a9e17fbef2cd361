"""The agent: runs checks on schedule, keeps their results as metrics, delivers each round."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

import wardready
from agent.config import AgentConfig
from agent.delivery import Delivery
from agent.scheduler import Scheduler
from checks import REGISTRY
from checks.base import CheckConfig, CheckSpec
from wardready.metrics import OUTCOME_METRICS, MetricSpec, Sample, families, outcome_samples
from wardready.report import MAX_ERROR_CHARS, Outcome, Report

log = logging.getLogger(__name__)

AGENT_INFO = MetricSpec("wardready_agent_info", "This agent: version, ward and host.",
                        ("version", "ward", "host"))
DELIVERED = MetricSpec("wardready_agent_reports_delivered_total",
                       "Reports the server acknowledged.", kind="counter")
DELIVERY_FAILURES = MetricSpec("wardready_agent_report_delivery_failures_total",
                               "Delivery attempts that failed and will be retried.", kind="counter")
REJECTED = MetricSpec("wardready_agent_reports_rejected_total",
                      "Reports the server refused for good (malformed or too large).",
                      kind="counter")
DROPPED = MetricSpec("wardready_agent_reports_dropped_total",
                     "Reports dropped because too many were waiting.", kind="counter")
PENDING = MetricSpec("wardready_agent_reports_pending", "Reports waiting to be delivered.")
AGENT_METRICS = (AGENT_INFO, DELIVERED, DELIVERY_FAILURES, REJECTED, DROPPED, PENDING)


async def run_check(spec: CheckSpec, config: CheckConfig) -> Outcome:
    """Run one check within its timeout; a failure is an outcome, never an exception."""
    started_at, t0 = time.time(), time.perf_counter()
    try:
        result = await asyncio.wait_for(spec.run(config), config.timeout_seconds)
        error = None
    except TimeoutError:
        result, error = None, f"timed out after {config.timeout_seconds:g} s"
    except Exception as exc:  # a broken probe must not stop the others
        log.exception("check %s failed", spec.name)
        result, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return Outcome(check=spec.name, started_at=started_at,
                   duration_seconds=time.perf_counter() - t0, ok=result is not None,
                   error=error, result=result)


class Agent(Collector):
    """One ward machine's agent; also the collector behind its /metrics."""

    def __init__(self, config: AgentConfig, token: str) -> None:
        self.config = config
        self.checks = config.check_configs()
        self.delivery = Delivery(str(config.server_url), token, config.delivery_timeout_seconds)
        self.latest: dict[str, Outcome] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def run_round(self, names: list[str]) -> Report:
        """Run the named checks concurrently and queue their report for delivery."""
        outcomes = await asyncio.gather(*(run_check(REGISTRY[n], self.checks[n]) for n in names))
        for outcome in outcomes:
            self.latest[outcome.check] = outcome
        report = Report(ward=self.config.ward, host=self.config.host,
                        agent_version=wardready.__version__, generated_at=time.time(),
                        outcomes=list(outcomes))
        self.delivery.submit(report)
        log.info("round %s: %s", report.id,
                 ", ".join(f"{o.check}={'ok' if o.ok else 'failed'}" for o in outcomes))
        return report

    async def run(self) -> None:
        """Serve /metrics, deliver reports and run rounds until cancelled."""
        runner = web.AppRunner(self.web_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.listen_host, self.config.listen_port)
        await site.start()
        log.info("metrics on http://%s:%d/metrics, reporting to %s as %s/%s",
                 self.config.listen_host, self.config.listen_port, self.config.server_url,
                 self.config.ward, self.config.host)
        scheduler = Scheduler({n: c.interval_seconds for n, c in self.checks.items()},
                              jitter=self.config.start_jitter_seconds)
        delivery = asyncio.create_task(self.delivery.run(), name="delivery")
        try:
            async for names in scheduler.rounds():
                await self.run_round(names)
        finally:
            delivery.cancel()
            await runner.cleanup()

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pending": self.delivery.pending})

    def collect(self) -> Iterator[Metric]:
        d = self.delivery
        own = [Sample(AGENT_INFO, (wardready.__version__, self.config.ward, self.config.host), 1),
               Sample(DELIVERED, (), d.delivered), Sample(DELIVERY_FAILURES, (), d.failures),
               Sample(REJECTED, (), d.rejected), Sample(DROPPED, (), d.dropped),
               Sample(PENDING, (), d.pending)]
        yield from families(AGENT_METRICS, (((), s) for s in own))
        runs = [s for o in self.latest.values()
                for s in outcome_samples(o.check, o.ok, o.duration_seconds, o.started_at)]
        yield from families(OUTCOME_METRICS, (((), s) for s in runs))
        for name in self.checks:
            spec, outcome = REGISTRY[name], self.latest.get(name)
            results = spec.samples(outcome.result) if outcome and outcome.result else ()
            yield from families(spec.metrics, (((), s) for s in results))
