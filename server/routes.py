"""Every HTTP route of the server, in one table: method, path, handler."""

from __future__ import annotations

from aiohttp import HttpVersion11, web

from wardready.core.api import (
    BUSY_PATH,
    CURRENT_PATH,
    DOWNLOAD_PATH,
    ENROLL_PATH,
    PLAN_PATH,
    PROFILE_PATH,
    REPORTS_PATH,
    SESSIONS_PATH,
    SLOTS_PATH,
    UPLOAD_PATH,
    WHOAMI_PATH,
)
from wardready.server import admin, enroll, handlers, plan, speedtest, udp_echo
from wardready.server.auth import fail


async def expect_continue(request: web.Request) -> None:
    """aiohttp's handling of `Expect`, without echoing the header in the error (a value it
    cannot encode made aiohttp's own fail with 500)."""
    if request.version != HttpVersion11:
        return
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the body has not begun: as aiohttp does
        return
    raise fail(web.HTTPExpectationFailed, "the only Expect understood is 100-continue")


ROUTES: tuple[web.RouteDef, ...] = tuple(web.RouteDef(r.method, r.path, r.handler, {
    **r.kwargs, "expect_handler": expect_continue}) for r in (
    # agents (and Prometheus)
    web.post(REPORTS_PATH, handlers.ingest_report),
    web.get(PROFILE_PATH, handlers.ward_profile),
    web.get("/metrics", handlers.metrics),
    web.get("/api/v1/metrics-targets", handlers.metrics_targets),
    web.get("/healthz", handlers.health),
    # administrators
    web.get("/admin/v1/tokens", admin.list_tokens),
    web.post("/admin/v1/tokens", admin.issue_token),
    web.delete("/admin/v1/tokens/{token_id}", admin.revoke_token),
    web.get("/api/v1/assets", admin.list_assets),
    web.get("/api/v1/assets/changes", admin.list_changes),
    web.get("/api/v1/readiness", admin.ward_readiness),
    web.get("/api/v1/equipment-list", admin.equipment_list),
    # the measurement plan (agent.plan)
    web.get(PLAN_PATH, plan.get_plan),
    web.post(BUSY_PATH, plan.mark_busy),
    # throughput tests (checks.bandwidth)
    web.post(SLOTS_PATH, speedtest.acquire_slot),
    web.get(SLOTS_PATH + "/{slot_id}", speedtest.slot_state),
    web.delete(SLOTS_PATH + "/{slot_id}", speedtest.release_slot),
    web.get(DOWNLOAD_PATH, speedtest.download),
    web.post(UPLOAD_PATH, speedtest.upload),
    # UDP echo sessions (checks.media)
    web.post(SESSIONS_PATH, udp_echo.create_session),
    web.get(CURRENT_PATH, udp_echo.current_session),
    # enrollment (`wardready-agent enroll`)
    web.post("/admin/v1/enrollments", enroll.issue_enrollment),
    web.post(ENROLL_PATH, enroll.redeem),
    web.get(WHOAMI_PATH, enroll.whoami),
))
"""In the order the router tries them; a GET route answers HEAD too."""
