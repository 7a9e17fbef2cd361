"""Every HTTP route of the server, in one table: method, path, handler."""

from __future__ import annotations

from aiohttp import web

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

ROUTES: tuple[web.RouteDef, ...] = (
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
)
"""In the order the router tries them; a GET route answers HEAD too."""
