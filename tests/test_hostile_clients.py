"""Hostile and broken clients against a real server process (under the file limit its systemd
unit sets): each request gets its 4xx, never a 5xx with a traceback, and the other agents'
reports, sent meanwhile, are all stored (exact counts)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import json
import re
import resource
import socket
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from lab import REPO, fleet, stack
from tests.test_server import report
from wardready.core.api import SLOT_HEADER, SLOTS_PATH, UPLOAD_PATH
from wardready.core.inventory import load_inventory
from wardready.core.serial import SerialThread
from wardready.model.report import CLOCK_AHEAD_SECONDS, MAX_REPORT_AGE_SECONDS, Report
from wardready.server.app import create_app
from wardready.server.config import ServerConfig
from wardready.server.routes import ROUTES
from wardready.server.store import Store
from wardready.server.writer import ReportWriter

UNIT = REPO / "packaging" / "wardready-server.service"
BODY_TIMEOUT_SECONDS = 2.0
YEAR = 365 * 86400.0
SLOT_SECONDS = 4.0


def unit_file_limit() -> int:
    """The LimitNOFILE the shipped systemd unit gives the server, or the most this test
    process may give (a container without CAP_SYS_RESOURCE cannot raise its hard limit)."""
    found = re.search(r"^LimitNOFILE=(\d+)$", UNIT.read_text(), re.MULTILINE)
    assert found, f"{UNIT} sets no LimitNOFILE"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return min(int(found.group(1)), hard if hard != resource.RLIM_INFINITY else 1 << 20)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    port: int
    workdir: Path
    config: Path
    process: stack.Process
    tokens: dict[str, str]
    admin: str
    log_start: int = 0

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Answer(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def post_report(self, agent: str, body: dict[str, Any] | bytes,
                    headers: dict[str, str] | None = None) -> Answer:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", "/api/v1/reports", data, {
            "Authorization": f"Bearer {self.tokens[agent]}",
            "Content-Type": "application/json", **(headers or {})})

    def stored(self, ward: str, host: str) -> list[str]:
        with sqlite3.connect(self.workdir / "server.db") as db:
            return [r[0] for r in db.execute(
                "SELECT id FROM reports WHERE ward = ? AND host = ?", (ward, host))]

    def log(self) -> str:
        """What the server logged since the current test began."""
        return (self.workdir / "server.log").read_bytes()[self.log_start:].decode(
            errors="replace")


AGENTS = {"victim": ("sai-gon", "pc-1"), "bystander-1": ("nha-be", "pc-1"),
          "bystander-2": ("ben-thanh", "pc-1"), "other": ("sai-gon", "pc-2")}


def start(workdir: Path, **extra: Any) -> Server:
    port = stack.free_port()
    config = fleet.write_server_config(workdir, port, body_timeout_seconds=BODY_TIMEOUT_SECONDS,
                                       **extra)
    issued = fleet.issue_tokens(config, list(AGENTS.values()))
    with Store(workdir / "server.db") as store:
        admin = store.issue_admin_token("hostile-test")
    limit = unit_file_limit()
    process = stack.Process("wardready-server", [
        stack.executable("prlimit"), f"--nofile={limit}:{limit}", "--",
        stack.executable("wardready-server"), "serve", "--config", str(config)],
        workdir / "server.log")
    stack.wait_until("server", lambda: stack.http_get(f"http://127.0.0.1:{port}/healthz"),
                     20, process)
    return Server(port, workdir, config, process, dict(zip(AGENTS, issued, strict=True)),
                  admin)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start(tmp_path_factory.mktemp("hostile"), speedtest={"slot_seconds": SLOT_SECONDS})
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def server(module_server: Server) -> Iterator[Server]:
    """The shared server; after each test it must be alive, and have logged no traceback."""
    module_server.log_start = (module_server.workdir / "server.log").stat().st_size
    yield module_server
    assert module_server.process.alive(), module_server.process.tail()
    log = module_server.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


@dataclass
class Bystanders:
    """Other agents reporting while an attack runs: every report must be stored."""

    server: Server
    agents: tuple[str, ...] = ("bystander-1", "bystander-2")
    statuses: list[int] = field(default_factory=list)
    acked: dict[str, list[str]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, agent: str) -> None:
        ward, host = AGENTS[agent]
        self.acked[agent] = []
        for _ in range(500):  # bounded; the attack ends long before
            if self.stop.is_set() and self.acked[agent]:
                return
            body = report(ward, host)
            answer = self.server.post_report(agent, body)
            self.statuses.append(answer.status)
            if answer.status in (200, 201):
                self.acked[agent].append(body["id"])


@contextlib.contextmanager
def bystanders(server: Server) -> Iterator[Bystanders]:
    """Run other agents' reports alongside the block; then check each was answered 201 and
    is stored, no more and no less."""
    crowd = Bystanders(server)
    before = {a: set(server.stored(*AGENTS[a])) for a in crowd.agents}
    threads = [threading.Thread(target=crowd.run, args=(a,)) for a in crowd.agents]
    for t in threads:
        t.start()
    try:
        yield crowd
    finally:
        crowd.stop.set()
        for t in threads:
            t.join(60)
    assert set(crowd.statuses) == {201}, crowd.statuses
    for agent in crowd.agents:
        stored = set(server.stored(*AGENTS[agent])) - before[agent]
        assert stored == set(crowd.acked[agent]), agent
        assert len(crowd.acked[agent]) >= 1
    print(f"bystanders: {len(crowd.statuses)} reports, each 201 and stored once")


# -- 2: one agent's report must not fail others' ----------------------------------------------

def test_a_count_too_large_to_store_is_refused_alone(server: Server) -> None:
    with bystanders(server):
        for _ in range(200):
            answer = server.post_report("victim", report(*AGENTS["victim"],
                                                         dropped_reports_total=2**63))
            assert answer.status == 422, answer
            assert answer.json()["error"].startswith("dropped_reports_total: Input should be "
                                                     "less than or equal to 9223372036854775807")
    fine = report(*AGENTS["victim"], dropped_reports_total=2**63 - 1)
    assert server.post_report("victim", fine).status == 201
    assert fine["id"] in server.stored(*AGENTS["victim"])


async def test_a_report_the_store_cannot_take_fails_alone_in_its_group_commit(
        tmp_path: Path) -> None:
    """A report that got past validation (an older server let such counts in) and then
    overflows SQLite fails alone: the 20 reports sharing its transaction are stored."""
    store, io = Store(tmp_path / "w.db"), SerialThread("sqlite")
    writer = ReportWriter(store, io)
    good = [Report.model_validate(report("sai-gon", f"pc-{i}")) for i in range(20)]
    bad = Report.model_validate(report("sai-gon", "pc-x")).model_copy(
        update={"dropped_reports_total": 2**63})
    batch = [*good[:10], bad, *good[10:]]
    try:
        results = await asyncio.gather(*(writer.add(r, time.time(), {}) for r in batch),
                                       return_exceptions=True)
        assert isinstance(results.pop(10), OverflowError)
        assert results == [True] * 20
        stored = await io.call(lambda: {r[0] for r in store.db.execute(
            "SELECT id FROM reports")})
        assert stored == {str(r.id) for r in good}
    finally:
        await io.call(store.close)
        io.shutdown()


async def test_a_fault_of_the_server_is_503_with_retry_after(aiohttp_client: Any,
                                                             tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    config = ServerConfig(database=tmp_path / "w.db", inventory=REPO / "inventory.yml")
    app = create_app(config, load_inventory(config.inventory))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    resp = await client.get("/broken")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "30"
    assert await resp.json() == {"error": "internal error; retry later"}
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        "unexpected error serving GET /broken"]


# -- 3: times far ahead, or far behind, the server's clock ------------------------------------

@pytest.mark.parametrize(("where", "ahead", "expected"), [
    ("started_at", 1e300, "outcomes.0.started_at: 1e+300 s ahead of the server's clock"),
    ("generated_at", YEAR, "generated_at: 3.154e+07 s ahead of the server's clock"),
    ("started_at", 86400.0, "outcomes.0.started_at: 8.64e+04 s ahead of the server's clock"),
    ("generated_at", -(MAX_REPORT_AGE_SECONDS + 86400), "generated_at: 91 days before the "
                                                         "server's clock"),
])
def test_times_off_the_servers_clock_are_refused(server: Server, where: str, ahead: float,
                                                 expected: str) -> None:
    body = report(*AGENTS["victim"])
    target = body if where == "generated_at" else body["outcomes"][0]
    target[where] = time.time() + ahead
    with bystanders(server):
        answer = server.post_report("victim", body)
    assert answer.status == 422
    error = answer.json()["error"]
    assert error.startswith(expected), error
    if ahead > 0:
        assert error.endswith(f"(at most {CLOCK_AHEAD_SECONDS:g} s allowed): set this PC's "
                              "clock")
    assert body["id"] not in server.stored(*AGENTS["victim"])


def refused(server: Server, reason: str) -> float:
    values = fleet.metric_values(server.request("GET", "/metrics").body)
    return values[f'wardready_server_reports_refused_total{{reason="{reason}"}}']


def test_a_pc_with_its_clock_ahead_is_counted_and_named_once(server: Server) -> None:
    """Its reports are lost until the clock is set: the operators hear of it, once."""
    before = refused(server, "clock")
    for _ in range(3):
        body = report(*AGENTS["other"])
        body["generated_at"] = body["outcomes"][0]["started_at"] = time.time() + 86400
        assert server.post_report("other", body).status == 422
    assert refused(server, "clock") - before == 3
    named = [line for line in server.log().splitlines()
             if "refusing the reports of sai-gon/pc-2 until its clock is set" in line]
    assert len(named) == 1, named


def test_a_clock_a_little_ahead_is_accepted(server: Server) -> None:
    body = report(*AGENTS["victim"])
    body["generated_at"] = body["outcomes"][0]["started_at"] = time.time() + 120
    assert server.post_report("victim", body).status == 201


def test_a_result_dated_ahead_no_longer_freezes_the_newest(tmp_path: Path) -> None:
    """A database where an older version let a result dated a year ahead in: the server
    forgets it at start, the equipment list works, and the next current result shows."""
    ward, host = AGENTS["victim"]
    with Store(tmp_path / "server.db") as store:
        body = report(ward, host)
        body["generated_at"] = body["outcomes"][0]["started_at"] = 1e300
        body["outcomes"][0]["result"]["os_version"] = "from the future"
        store.add_report(Report.model_validate(body), time.time())
    server = start(tmp_path)
    try:
        assert re.search(r"forgot \d+ stored results dated in the future", server.log())
        admin = {"Authorization": f"Bearer {server.admin}"}
        for fmt in ("json", "csv", "markdown", "xlsx"):
            answer = server.request("GET", f"/api/v1/equipment-list?format={fmt}",
                                    headers=admin)
            assert answer.status == 200, (fmt, answer)
        current = report(ward, host)
        current["outcomes"][0]["result"]["os_version"] = "current"
        assert server.post_report("victim", current).status == 201
        metrics = server.request("GET", "/metrics").body.decode()
        host_info = [line for line in metrics.splitlines()
                     if line.startswith("wardready_host_info{") and f'host="{host}"' in line]
        assert len(host_info) == 1 and 'os_version="current"' in host_info[0], host_info
    finally:
        server.process.stop()


# -- 4: bytes that are not a token, bodies that do not inflate --------------------------------

TOKEN_ROUTES = [(r.method, r.path) for r in ROUTES
                if r.path not in ("/metrics", "/healthz", "/api/v1/metrics-targets",
                                  "/api/v1/enroll")]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_a_token_that_is_not_utf8_is_401_on_every_endpoint(server: Server) -> None:
    assert len(TOKEN_ROUTES) >= 15
    with bystanders(server):
        for method, path in TOKEN_ROUTES:
            # http.client sends header text as Latin-1: \xff\xfe is no UTF-8.
            for token in ("\xff\xfe", "wr_\xe9.\xff", "caf\xe9"):
                answer = server.request(method, concrete(path), b"{}",
                                        {"Authorization": f"Bearer {token}"})
                assert answer.status == 401, (method, path, token, answer)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/api/v1/reports", "/api/v1/enroll"])
def test_a_corrupt_compressed_body_is_400(server: Server, encoding: str, path: str) -> None:
    good = json.dumps(report(*AGENTS["victim"])).encode()
    packed = gzip.compress(good) if encoding == "gzip" else zlib.compress(good)
    corrupt = packed[:10] + bytes(b ^ 0x5A for b in packed[10:40]) + packed[40:]
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json",
               "Authorization": f"Bearer {server.tokens['victim']}"}
    before = len(server.log().splitlines())
    with bystanders(server):
        for body in (corrupt, b"not compressed at all", packed[: len(packed) // 2]):
            answer = server.request("POST", path, body, headers)
            assert answer.status == 400, (body[:20], answer)
            assert answer.json()["error"]
    assert len(server.log().splitlines()) - before <= 3  # no traceback, at most a line each


def test_a_valid_compressed_report_is_stored(server: Server) -> None:
    body = report(*AGENTS["victim"])
    answer = server.post_report("victim", gzip.compress(json.dumps(body).encode()),
                                {"Content-Encoding": "gzip"})
    assert answer.status == 201
    assert body["id"] in server.stored(*AGENTS["victim"])


def test_a_body_trickled_too_slowly_is_cut_off(server: Server) -> None:
    """A body that does not arrive within `body_timeout_seconds`, on the enrolment endpoint
    (no token needed): 408, and the connection is closed."""
    with bystanders(server), socket.create_connection(("127.0.0.1", server.port),
                                                      timeout=30) as sock:
        sock.sendall(b"POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"co")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes the connection
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert waited >= BODY_TIMEOUT_SECONDS - 0.1


# -- 6: a slot id that is not ASCII -----------------------------------------------------------

def test_a_slot_id_that_is_not_ascii_is_404(server: Server) -> None:
    agent = {"Authorization": f"Bearer {server.tokens['victim']}"}
    granted = server.request("POST", SLOTS_PATH + "?override=1", b"", agent)
    assert granted.status == 201, granted
    slot = granted.json()["slot"]
    try:
        with bystanders(server):
            for odd in ("%C3%A9" * 16, "%FF%FE", "%00", "%C4%91"):
                for method in ("GET", "DELETE"):
                    path = f"{SLOTS_PATH}/{odd}"
                    answer = server.request(method, path, b"", agent)
                    assert answer.status == 404, (method, odd, answer)
            answer = server.request("POST", UPLOAD_PATH, b"x" * 10,
                                    {**agent, SLOT_HEADER: "\xe9" * 32})
            assert answer.status == 409
        assert server.request("GET", f"{SLOTS_PATH}/{slot}", b"", agent).status == 200
    finally:
        server.request("DELETE", f"{SLOTS_PATH}/{slot}", b"", agent)


# -- 7: report ids are each agent's own -------------------------------------------------------

def test_another_agents_report_id_does_not_drop_this_agents_report(server: Server) -> None:
    first = report(*AGENTS["victim"])
    assert server.post_report("victim", first).status == 201
    same_id = report(*AGENTS["other"], id=first["id"])
    answer = server.post_report("other", same_id)
    assert (answer.status, answer.json()["stored"]) == (201, True)
    assert server.stored(*AGENTS["other"]).count(first["id"]) == 1
    assert server.stored(*AGENTS["victim"]).count(first["id"]) == 1
    replay = server.post_report("other", same_id)  # a true replay is still stored once
    assert (replay.status, replay.json()["stored"]) == (200, False)
    assert server.stored(*AGENTS["other"]).count(first["id"]) == 1


# -- 8: the smaller ones ----------------------------------------------------------------------

@pytest.mark.parametrize(("change", "error"), [
    ({"generated_at": "1700000000"}, "generated_at: Input should be a valid number"),
    ({"schema_version": True}, "unsupported schema_version True"),
    ({"dropped_reports_total": 1.5}, "dropped_reports_total: Input should be a valid integer"),
    ({"id": 12345}, "id: UUID input should be a string"),
])
def test_loose_types_are_refused(server: Server, change: dict[str, Any], error: str) -> None:
    body = report(*AGENTS["victim"], **change)
    answer = server.post_report("victim", body)
    assert answer.status == 422
    assert answer.json()["error"].startswith(error), answer.json()


def test_a_result_with_a_loose_type_is_refused(server: Server) -> None:
    body = report(*AGENTS["victim"])
    body["outcomes"][0]["ok"] = "yes"
    answer = server.post_report("victim", body)
    assert (answer.status, answer.json()["error"]) == (
        422, "outcomes[0].ok: Input should be a valid boolean")
    body = report(*AGENTS["victim"])
    body["outcomes"][0]["result"]["cpu_logical_cores"] = "4"
    answer = server.post_report("victim", body)
    assert answer.status == 422
    assert answer.json()["error"].startswith("outcomes[0].result.cpu_logical_cores: Input "
                                             "should be a valid integer"), answer.json()


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "1e999"])
def test_a_time_that_is_not_a_number_is_400(server: Server, value: str) -> None:
    admin = {"Authorization": f"Bearer {server.admin}"}
    for name in ("since", "until"):
        answer = server.request("GET", f"/api/v1/assets/changes?{name}={value}", b"", admin)
        assert answer.status == 400, answer
        assert answer.json()["error"].startswith(f"{name}: expected seconds since the epoch")


def test_metrics_targets_never_echo_the_host_header(server: Server) -> None:
    answer = server.request("GET", "/api/v1/metrics-targets", b"",
                            {"Host": "evil.example:666"})
    assert answer.status == 200
    assert answer.json() == [{"targets": [f"127.0.0.1:{server.port}"], "labels": {}}]
    assert b"evil" not in answer.body


def test_a_stalled_speed_test_upload_ends_with_its_slot(server: Server) -> None:
    agent = {"Authorization": f"Bearer {server.tokens['bystander-2']}"}
    granted = server.request("POST", SLOTS_PATH + "?override=1", b"", agent)
    assert granted.status == 201, granted
    slot = granted.json()["slot"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST {UPLOAD_PATH} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {server.tokens['bystander-2']}\r\n"
                     f"{SLOT_HEADER}: {slot}\r\nContent-Length: 10000000\r\n\r\n".encode()
                     + bytes(1000))
        answer = b""
        while chunk := sock.recv(4096):  # the server answers and closes when the slot ends
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.endswith(b'{"bytes": 1000}')


def test_a_compressed_speed_test_upload_is_refused_and_not_counted(server: Server) -> None:
    agent = {"Authorization": f"Bearer {server.tokens['bystander-1']}"}
    granted = server.request("POST", SLOTS_PATH + "?override=1", b"", agent)
    assert granted.status == 201, granted
    slot = granted.json()["slot"]

    def uploaded() -> float:
        values = fleet.metric_values(server.request("GET", "/metrics").body)
        return values.get('wardready_server_speedtest_bytes_total{direction="upload"}', 0.0)

    before = uploaded()
    bomb = gzip.compress(bytes(10 << 20))  # 10 KiB on the wire, 10 MiB unpacked
    answer = server.request("POST", UPLOAD_PATH, bomb, {
        **agent, SLOT_HEADER: slot, "Content-Encoding": "gzip"})
    assert answer.status == 415
    assert answer.headers.get("Accept-Encoding") == "identity"
    plain = server.request("POST", UPLOAD_PATH, bytes(100_000), {**agent, SLOT_HEADER: slot})
    assert plain.status == 200 and plain.json() == {"bytes": 100_000}
    assert uploaded() - before == 100_000
    server.request("DELETE", f"{SLOTS_PATH}/{slot}", b"", agent)


def test_scrape_authentication(tmp_path: Path) -> None:
    """With `scrape_token_file`, /metrics and the shard list need that token."""
    token = uuid.uuid4().hex
    (tmp_path / "scrape.token").write_text(token + "\n")
    server = start(tmp_path, scrape_token_file="scrape.token")
    try:
        for path in ("/metrics", "/api/v1/metrics-targets"):
            assert server.request("GET", path).status == 401
            assert server.request("GET", path, b"", {"Authorization": "Bearer wrong"}
                                  ).status == 401
            assert server.request("GET", path, b"", {"Authorization": "Bearer \xff"}
                                  ).status == 401
            assert server.request("GET", path, b"", {"Authorization": f"Bearer {token}"}
                                  ).status == 200
        # Prometheus as docs/configuration.md sets it up: with the token file it scrapes,
        # without it the target is down.
        (tmp_path / "prom.token").write_text(token)
        target = f"127.0.0.1:{server.port}"
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "with-token", "static_configs": [{"targets": [target]}],
                 "authorization": {"credentials_file": str(tmp_path / "prom.token")}},
                {"job_name": "without", "static_configs": [{"targets": [target]}]}]}))
        prom_port = stack.free_port()
        prometheus = stack.start_prometheus(tmp_path, prom_port, prom_config)
        try:
            def up() -> dict[str, str] | None:
                found = {r["metric"]["job"]: r["value"][1]
                         for r in stack.prometheus_query(prom_port, "up")}
                return found if len(found) == 2 else None
            assert stack.wait_until("both targets scraped", up, 30, prometheus) == {
                "with-token": "1", "without": "0"}
        finally:
            prometheus.stop()
        assert token not in server.log()
    finally:
        server.process.stop()


STRICT_REFUSES = {"tuple", "set", "frozenset", "enum", "uuid", "datetime", "date", "time",
                  "timedelta", "decimal", "url", "is-instance", "dataclass"}
"""Types that strict validation takes only as Python objects, never from JSON values."""


def test_every_result_model_takes_its_own_json_strictly() -> None:
    """A report is validated strictly all the way down (`model.report.parse_report`); a field
    of one of these types would refuse what the agent itself sends."""
    from wardready.checks import REGISTRY

    def types(schema: Any) -> Iterator[str]:
        if isinstance(schema, dict):
            yield str(schema.get("type"))
            for value in schema.values():
                yield from types(value)
        elif isinstance(schema, list):
            for value in schema:
                yield from types(value)

    assert len(REGISTRY) >= 9
    for name, spec in REGISTRY.items():
        found = set(types(spec.result_model.__pydantic_core_schema__)) & STRICT_REFUSES
        assert not found, f"{name}'s result has {found}: use lists and plain values"
