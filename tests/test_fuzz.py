"""Thousands of malformed requests against a real server process: no 5xx, and it keeps serving.

Bodies first (mutated reports, arbitrary JSON, raw bytes), through http.client; then whole
requests as raw bytes over a socket, since http.client refuses to send most of what a hostile
or broken client can: every route with odd paths and query numbers, Authorization headers with
invalid UTF-8 and control characters, corrupt or valid compressed bodies, lying
Content-Lengths, strange Hosts, with a token of each role. Each reply must be under 500, must
not echo the token sent, and must be strict JSON when it says it is JSON.
"""

from __future__ import annotations

import copy
import gzip
import http.client
import json
import re
import socket
import time
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import fleet, stack
from tests.conftest import TOKEN_SECRET
from tests.test_server import report
from wardready.core.api import SLOT_HEADER
from wardready.server.routes import ROUTES
from wardready.server.store import Store

# Finite JSON values, nested a little: what a confused or hostile client could send.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=20)

BASE_REPORT = report("sai-gon", "pc-1")


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path inside a JSON value, so a mutation can reach any field."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


REPORT_PATHS = [p for p in paths(BASE_REPORT) if p]


@st.composite
def mutated_reports(draw: st.DrawFn) -> dict[str, Any]:
    """A valid report with one to three fields replaced by arbitrary JSON or removed."""
    body = copy.deepcopy(BASE_REPORT)
    body["id"] = str(draw(st.uuids()))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(REPORT_PATHS))
        parent: Any = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()):
                parent[path[-1]] = draw(JSON)
            elif isinstance(parent, dict):
                parent.pop(path[-1], None)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return body



@dataclass
class Reply:
    """One HTTP response as it came off the wire."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_replies(data: bytes, head: bool) -> list[Reply]:
    """The responses in `data`, one after another (a request with trailing bytes may get a
    second one); `head`: the request was HEAD, so no reply carries a body."""
    replies = []
    while data:
        top, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a reply cut short in its headers: {data[:300]!r}"
        status_line, *lines = top.split(b"\r\n")
        version, _, rest_of_line = status_line.partition(b" ")
        assert version in (b"HTTP/1.0", b"HTTP/1.1"), f"not a status line: {status_line!r}"
        status = int(rest_of_line[:3])
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if (head and rest[:7] in (b"", b"HTTP/1.")) or status in (204, 304) \
                or 100 <= status < 200:
            body, data = b"", rest  # (an error found while parsing a HEAD has a body)
        elif b"content-length" in headers:
            size = int(headers[b"content-length"])
            body, data = rest[:size], rest[size:]
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body, data = _dechunk(rest)
        else:
            body, data = rest, b""
        replies.append(Reply(status, headers, body))
    return replies


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    """A chunked body and what follows it."""
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "a chunked reply cut short"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _, _, data = data.partition(b"\r\n")  # no trailers from aiohttp
            return body, data
        body, data = body + data[:size], data[size + 2:]


class RawClient:
    """Sends a request's exact bytes on a fresh connection and reads every reply until the
    server closes it (requests say `Connection: close`).

    Each connection comes from another loopback address (127.1.0.1, 127.1.0.2, ...): the
    server locks an address out after ten wrong enrollment codes, and a locked-out address
    gets 429 before its body is read, which would hide what the body does."""

    def __init__(self, port: int, statuses: Counter[int], timeout: float = 10.0) -> None:
        self.port, self.statuses, self.timeout = port, statuses, timeout
        self.connections = 0

    def exchange(self, request: bytes, head: bool = False,
                 half_close: bool = False) -> list[Reply]:
        n = self.connections
        self.connections += 1
        source = f"127.{1 + n // 62500 % 200}.{n // 250 % 250}.{n % 250 + 1}"
        chunks = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout,
                                      source_address=(source, 0)) as sock:
            try:
                sock.sendall(request)
                if half_close:  # the client stops sending, as one cut off mid-body would
                    sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (413, 400) and closed: read its answer
            while True:
                try:
                    chunk = sock.recv(1 << 16)
                except ConnectionResetError:
                    break
                except TimeoutError:
                    raise AssertionError(f"no reply within {self.timeout:g} s") from None
                if not chunk:
                    break
                chunks.append(chunk)
        replies = parse_replies(b"".join(chunks), head)
        for reply in replies:
            self.statuses[reply.status] += 1
        if not replies:
            self.statuses[0] += 1  # no reply: only a client that half-closed may get none
        return replies


def strict_json(body: bytes) -> Any:
    """A JSON body, refusing NaN and Infinity (not JSON: most clients cannot read them)."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in a JSON reply: {body[:300]!r}")
    return json.loads(body, parse_constant=refuse)


HOST_PORT = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                       r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
"""What a Prometheus target may be: a host name or address, and a port."""


class Fuzzer:
    """The fuzzed server: its tokens, a keep-alive connection for bodies, raw connections for
    whole requests, and every status it gave back."""

    def __init__(self, port: int, workdir: Path, tokens: dict[str, str]) -> None:
        self.port, self.workdir, self.tokens = port, workdir, tokens
        self.token, self.admin_token = tokens["agent"], tokens["admin"]
        self.statuses: Counter[int] = Counter()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.raw = RawClient(port, self.statuses)
        self.slot = ""
        self.log_read = 0
        self.problems_logged: Counter[str] = Counter()

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # The server may close a connection after an error reply; that is not a failure.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt:
                    raise
        self.statuses[resp.status] += 1
        assert resp.status < 500, f"{method} {path} {body[:200]!r} -> {resp.status}"
        return resp.status

    def report(self, body: bytes, token: str | None = None) -> int:
        return self.send("POST", "/api/v1/reports", body, {
            "Authorization": f"Bearer {token or self.token}",
            "Content-Type": "application/json"})

    def secrets(self) -> list[bytes]:
        """The secret half of every real token: no reply may carry one."""
        return [t.partition(".")[2].encode() for t in self.tokens.values()]

    def new_log(self) -> str:
        """What the server logged since the last call."""
        with (self.workdir / "server.log").open("rb") as f:
            f.seek(self.log_read)
            data = f.read()
        self.log_read += len(data)
        text = data.decode(errors="replace")
        for line in text.splitlines():
            for problem in ("unexpected error", "Unhandled exception", "Error handling request"):
                if problem in line:
                    self.problems_logged[problem] += 1
        return text

    def acquire_slot(self) -> str:
        """A live throughput-test slot for the agent token (the plan overridden)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/speedtest/slots?override=1", method="POST",
            headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            self.slot = json.loads(resp.read())["slot"]
        return self.slot


BUGS_LOGGED = ("unexpected error", "Unhandled exception")
"""What the server logs when a request reached a bug (an exception no handler expected)."""


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Fuzzer]:
    workdir = tmp_path_factory.mktemp("fuzz")
    port = stack.free_port()
    config = fleet.write_server_config(
        workdir, port, max_report_bytes=256 * 1024,
        # one small, long slot: a fuzzed download with it moves at most 1 MiB
        speedtest={"max_bytes_per_slot": 1 << 20, "slot_seconds": 600})
    token, victim = fleet.issue_tokens(config, [("sai-gon", "pc-1"), ("sai-gon", "pc-2")])
    store = Store(workdir / "server.db")
    admin_token = store.issue_admin_token("fuzz")
    store.close()
    server = stack.start_server(config, workdir)
    failed_before = request.session.testsfailed
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        client = Fuzzer(port, workdir, {"agent": token, "admin": admin_token,
                                        "victim": victim})
        client.acquire_slot()
        yield client
        assert server.alive(), f"the server died under fuzzing:\n{server.tail()}"
        client.new_log()
        assert stack.http_get(f"http://127.0.0.1:{port}/healthz") == b'{"status": "ok"}'
        valid = report("sai-gon", "pc-1")
        assert client.report(json.dumps(valid).encode()) == 201, "still ingests after the fuzz"
        assert valid["id"] in fleet.stored_ids(workdir / "server.db")
        client.conn.close()
        print(f"fuzz statuses: {dict(client.statuses)}; logged: {dict(client.problems_logged)}")
        log = (workdir / "server.log").read_text(errors="replace")
        for bug in BUGS_LOGGED:
            logged = log.count(bug)
            assert not logged, f"the server logged {logged} x {bug!r}: {last_exception(log)}"
        if request.session.testsfailed == failed_before:  # else the failures say why
            assert sum(client.statuses.values()) > 6500, client.statuses  # the fuzz really ran
    finally:
        server.stop()


FUZZ = settings(max_examples=1500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=mutated_reports())
def test_mutated_reports_never_cause_5xx(fuzzer: Fuzzer, body: dict[str, Any]) -> None:
    status = fuzzer.report(json.dumps(body).encode())
    assert status in (200, 201, 400, 403, 413, 422), status


@settings(FUZZ, max_examples=800)
@given(body=JSON)
def test_arbitrary_json_never_causes_5xx(fuzzer: Fuzzer, body: Any) -> None:
    assert fuzzer.report(json.dumps(body).encode()) in (400, 422)


@settings(FUZZ, max_examples=500)
@given(body=st.binary(max_size=2048), deep=st.integers(0, 200_000))
def test_raw_bytes_and_deep_nesting_never_cause_5xx(fuzzer: Fuzzer, body: bytes,
                                                     deep: int) -> None:
    assert fuzzer.report(body) in (400, 422)
    if deep > 150_000:  # now and then, JSON nested far past the parser's recursion limit
        depth = 2_000 + deep - 150_000  # deeper than Python's recursion limit
        assert fuzzer.report(b"[" * depth + b"]" * depth) in (400, 413)


@settings(FUZZ, max_examples=300)
@given(token=st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
       body=JSON)
def test_garbage_tokens_and_admin_bodies_never_cause_5xx(fuzzer: Fuzzer, token: str,
                                                         body: Any) -> None:
    garbage = {"Authorization": f"Bearer {token}"}
    # 400 when the header itself is not valid HTTP (control characters), else 401.
    assert fuzzer.send("POST", "/api/v1/reports", b"{}", garbage) in (400, 401)
    assert fuzzer.send("POST", "/admin/v1/tokens", json.dumps(body).encode(),
                       garbage) in (400, 401)
    admin = {"Authorization": f"Bearer {fuzzer.admin_token}"}
    assert fuzzer.send("POST", "/admin/v1/tokens", json.dumps(body).encode(), admin) in (400, 422)
    assert fuzzer.send("DELETE", f"/admin/v1/tokens/{token[:20].encode().hex()}x", b"",
                       admin) in (400, 404)


# Whole requests as raw bytes. Tokens appear in a case as markers, put in when it is sent,
# so what Hypothesis prints never holds one.

AGENT, ADMIN, VICTIM, SLOT = b"<<agent>>", b"<<admin>>", b"<<victim>>", b"<<slot>>"
VICTIM_ID = b"<<victim-id>>"
HOST = b"<<host>>"
"""The server's own address, as a client that means well sends it."""


@dataclass(frozen=True)
class Case:
    """One request, as bytes with markers; `length` says how its Content-Length tells the
    truth: exact, missing, short (fewer than sent), long (more than sent: the client then
    stops sending), invalid, chunked, chunked-broken (a bad chunk size), chunked-cut (a
    chunk cut short: the client then stops sending)."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    length: str = "exact"
    forged: bytes = b""
    """The secret of a forged token in the headers: no more to be echoed than a real one's."""

    def wire(self, fuzzer: Fuzzer) -> bytes:
        """The request's bytes, markers replaced; `Connection: close` first, so that
        whatever the headers do later, the server ends the connection after its answer."""
        lines = [self.method + b" " + self.target + b" HTTP/1.1", b"Connection: close"]
        lines += [name + b": " + value for name, value in self.headers]
        body = self.body
        if self.length == "exact":
            lines.append(b"Content-Length: %d" % len(body))
        elif self.length == "short":
            lines.append(b"Content-Length: %d" % (len(body) // 2))
        elif self.length == "long":
            lines.append(b"Content-Length: %d" % (len(body) + 1 + len(body) // 2))
        elif self.length.startswith("invalid:"):
            lines.append(b"Content-Length: " + self.length[8:].encode())
        elif self.length == "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        elif self.length == "chunked-broken":
            lines.append(b"Transfer-Encoding: chunked")
            body = b"%xz\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        elif self.length == "chunked-cut":
            lines.append(b"Transfer-Encoding: chunked")
            body = b"%x\r\n%s" % (len(body) + 7, body)
        wire = b"\r\n".join(lines) + b"\r\n\r\n" + body
        for marker, value in ((AGENT, fuzzer.token), (ADMIN, fuzzer.admin_token),
                              (VICTIM, fuzzer.tokens["victim"]), (SLOT, fuzzer.slot),
                              (VICTIM_ID, fuzzer.tokens["victim"].split(".")[0][4:]),
                              (HOST, f"127.0.0.1:{fuzzer.port}")):
            wire = wire.replace(marker, value.encode())
        return wire

    @property
    def head(self) -> bool:
        return self.method == b"HEAD"


def shown(wire: bytes, fuzzer: Fuzzer, forged: bytes = b"", limit: int = 700) -> str:
    """A request for a failure message: every token's secret blanked out."""
    for role, token in fuzzer.tokens.items():
        wire = wire.replace(token.partition(".")[2].encode(), f"<{role} secret>".encode())
    if forged:
        wire = wire.replace(forged, b"<forged secret>")
    return repr(wire[:limit]) + (f"... ({len(wire)} bytes)" if len(wire) > limit else "")


def send_and_check(fuzzer: Fuzzer, case: Case, ok: frozenset[int] | None = None) -> list[Reply]:
    """Send `case` and hold its replies to what every reply owes: a status under 500 (in `ok`
    when given), no token secret echoed, strict JSON, Prometheus targets that are only a host
    and port; and nothing the server logged meanwhile may be a bug."""
    fuzzer.new_log()
    wire = case.wire(fuzzer)
    request = shown(wire, fuzzer, case.forged)
    half_close = case.length in ("long", "chunked-cut")
    replies = fuzzer.raw.exchange(wire, case.head, half_close)
    raw = b"".join(r.body + b"".join(r.headers.values()) for r in replies)
    assert replies or half_close, f"no reply to {request}"
    for reply in replies:
        assert reply.status < 500, f"{request} -> {reply.status} {reply.body[:300]!r}"
    if ok is not None:
        assert replies and replies[0].status in ok, \
            f"{request} -> {replies[0].status if replies else 'no reply'}, not one of " \
            f"{sorted(ok)}: {replies[0].body[:300] if replies else b''!r}"
    for secret in [*fuzzer.secrets(), *([case.forged] if case.forged else [])]:
        echoed = secret in raw  # not in the assert: its explanation would print the secret
        assert not echoed, f"the reply to {request} echoes the token's secret: " \
                           f"{raw.replace(secret, b'<secret>')[:400]!r}"
    for reply in replies:
        if reply.headers.get(b"content-type", b"").startswith(b"application/json") \
                and reply.body:
            strict_json(reply.body)
    if b"/api/v1/metrics-targets" in case.target:
        for reply in replies:
            if reply.status == 200 and reply.body:  # (none for HEAD)
                targets = [t for group in json.loads(reply.body) for t in group["targets"]]
                bad = [t for t in targets if not HOST_PORT.fullmatch(t)]
                assert not bad, f"{request}: targets that are not a host and port: {bad!r}"
    if half_close:  # the server has seen the hang-up once it answers another request
        stack.http_get(f"http://127.0.0.1:{fuzzer.port}/healthz")
    log = fuzzer.new_log()
    for bug in BUGS_LOGGED:
        logged = log.count(bug)  # (not `in`: the assert's explanation would print the log)
        assert not logged, f"{request}: the server logged {bug!r}: {last_exception(log)}"
    return replies


def last_exception(log: str) -> str:
    """The last exception line of the tracebacks in a stretch of log."""
    found = re.findall(r"^[\w.]+(?:Error|Exception|Lost)\b.*$", log, re.MULTILINE)
    return TOKEN_SECRET.sub(r"wrt_\1.<secret>", found[-1]) if found else "(no exception line)"


# The requests the issue names, one by one: each must get the status given.

REPORT_JSON = json.dumps(report("sai-gon", "pc-1")).encode()
CORRUPT_GZIP = b"\x1f\x8b\x08\x00" + b"this is not deflate data" * 3
CORRUPT_DEFLATE = b"\x78\x9c" + b"neither is this" * 3
ENROLL_JSON = b'{"code": "wre-00000-00000-00000-00000-00000-00000", "host": "pc-1"}'


def bearer(token: bytes, before: bytes = b"", after: bytes = b"") -> tuple[bytes, bytes]:
    return b"Authorization", b"Bearer " + before + token + after


def encoded(coding: bytes, body: bytes, token: bytes = b"") -> tuple[tuple[bytes, bytes], ...]:
    auth = (bearer(token),) if token else ()
    return (*auth, (b"Host", HOST), (b"Content-Type", b"application/json"),
            (b"Content-Encoding", coding))


def get(target: bytes, token: bytes = b"", *headers: tuple[bytes, bytes],
        host: bytes = HOST) -> Case:
    auth = (bearer(token),) if token else ()
    return Case(b"GET", target, ((b"Host", host), *auth, *headers))


BAD_REQUEST, NOT_FOUND_OR_BAD, UNAUTHORIZED = frozenset({400}), frozenset({400, 404}), \
    frozenset({401})
SLOT_PATH = b"/api/v1/speedtest/slots/"
ISSUE_CASES: dict[str, tuple[Case, frozenset[int] | None]] = {
    # an invalid UTF-8 byte in Authorization: the token is wrong, not the server
    "authorization-invalid-utf8-agent": (
        Case(b"GET", b"/api/v1/whoami", ((b"Host", HOST), bearer(AGENT, b"\xff"))),
        UNAUTHORIZED),
    "authorization-invalid-utf8-after-agent-token": (
        Case(b"GET", b"/api/v1/whoami", ((b"Host", HOST), bearer(AGENT, after=b"\xff"))),
        UNAUTHORIZED),
    "authorization-invalid-utf8-admin": (
        Case(b"GET", b"/admin/v1/tokens", ((b"Host", HOST), bearer(ADMIN, after=b"\xc3\x28"))),
        UNAUTHORIZED),
    "authorization-invalid-utf8-report": (
        Case(b"POST", b"/api/v1/reports", ((b"Host", HOST), bearer(b"\xfe\xff"),
                                           (b"Content-Type", b"application/json")),
             REPORT_JSON), UNAUTHORIZED),
    # headers ending in NUL, vertical tab, bare CR, or longer than 8,190 bytes: 400, and the
    # token is not in the reply
    **{f"authorization-ending-in-{name}": (
        Case(b"GET", b"/api/v1/whoami", ((b"Host", HOST), bearer(AGENT, after=end))),
        BAD_REQUEST)
       for name, end in (("nul", b"\x00"), ("vertical-tab", b"\x0b"), ("bare-cr", b"\r"),
                         ("form-feed", b"\x0c"))},
    "authorization-over-8190-bytes": (
        Case(b"GET", b"/api/v1/whoami", ((b"Host", HOST), bearer(AGENT, after=b"A" * 8200))),
        BAD_REQUEST),
    "admin-authorization-ending-in-nul": (
        Case(b"GET", b"/admin/v1/tokens", ((b"Host", HOST), bearer(ADMIN, after=b"\x00"))),
        BAD_REQUEST),
    "other-header-ending-in-nul-after-the-token": (
        get(b"/api/v1/whoami", AGENT, (b"X-Trace", b"abc\x00")), BAD_REQUEST),
    "other-header-over-8190-bytes-after-the-token": (
        get(b"/api/v1/whoami", AGENT, (b"X-Trace", b"b" * 8200)), BAD_REQUEST),
    # corrupt compressed bodies: 400 on every route that reads one, enrollment included
    **{f"{coding}-corrupt-{name}": (
        Case(b"POST", target, encoded(coding.encode(), body, token), body), BAD_REQUEST)
       for name, target, token in (("report", b"/api/v1/reports", AGENT),
                                   ("enrol", b"/api/v1/enroll", b""),
                                   ("token-issue", b"/admin/v1/tokens", ADMIN),
                                   ("enrolment-issue", b"/admin/v1/enrollments", ADMIN),
                                   ("busy", b"/api/v1/busy", AGENT),
                                   ("udp-session", b"/api/v1/udp-sessions", AGENT))
       for coding, body in (("gzip", CORRUPT_GZIP), ("deflate", CORRUPT_DEFLATE))},
    "gzip-truncated-report": (
        Case(b"POST", b"/api/v1/reports", encoded(b"gzip", b"", AGENT),
             gzip.compress(REPORT_JSON)[:60]), BAD_REQUEST),
    "gzip-truncated-enrol": (
        Case(b"POST", b"/api/v1/enroll", encoded(b"gzip", b""),
             gzip.compress(ENROLL_JSON)[:30]), BAD_REQUEST),
    "gzip-valid-enrol": (
        Case(b"POST", b"/api/v1/enroll", encoded(b"gzip", b""), gzip.compress(ENROLL_JSON)),
        None),
    # a non-ASCII slot id: no such slot (404) or not a valid request (400)
    **{f"slot-{label}-{method.decode()}": (
        Case(method, SLOT_PATH + slot_id, ((b"Host", HOST), bearer(AGENT))), NOT_FOUND_OR_BAD)
       for label, slot_id in (("utf8", "ś".encode()), ("percent-utf8", b"%C5%9B"),
                              ("percent-invalid-utf8", b"%FF%FE"), ("raw-invalid-utf8", b"\xff"),
                              ("percent-nul", b"%00"), ("vietnamese", "phường".encode()))
       for method in (b"GET", b"DELETE")},
    # non-finite numbers in the admin API's queries: 400, never NaN in JSON
    **{f"changes-{query.decode()}": (
        get(b"/api/v1/assets/changes?" + query, ADMIN), BAD_REQUEST)
       for query in (b"since=nan", b"since=NaN", b"until=nan", b"since=inf", b"until=Infinity",
                     b"since=-inf", b"since=-1e999", b"until=1e999", b"since=nan&until=nan",
                     b"ward=sai-gon&since=-nan")},
    # the Host header is the client's word: never served back as a scrape target unless it is
    # a host and a port
    **{f"metrics-targets-host-{label}": (get(b"/api/v1/metrics-targets", host=host), None)
       for label, host in (("path-and-quote", b'evil.example/x?"<a>'),
                           ("invalid-utf8", b"evil\xff.example"), ("space", b"a b"),
                           ("at", b"user@evil.example:80"), ("empty", b""),
                           ("over-8190-bytes", b"h" * 8200))},
    # found by the fuzz below
    # An expectation other than 100-continue is ignored, as RFC 9110 allows.
    "expect-invalid-utf8": (get(b"/healthz", b"", (b"Expect", b"\xde")), frozenset({200})),
    "gzip-corrupt-body-on-a-get-that-reads-none": (
        Case(b"GET", b"/admin/v1/tokens", encoded(b"gzip", b"", ADMIN), CORRUPT_GZIP), None),
}


@pytest.mark.parametrize("name", list(ISSUE_CASES))
def test_the_hostile_requests_of_the_issue(fuzzer: Fuzzer, name: str) -> None:
    case, ok = ISSUE_CASES[name]
    send_and_check(fuzzer, case, ok)


@pytest.mark.parametrize(("coding", "body"), [
    pytest.param(b"gzip", gzip.compress(b"x" * 50_000), id="gzip-valid"),
    pytest.param(b"deflate", zlib.compress(b"x" * 50_000), id="deflate-valid"),
    pytest.param(b"gzip", CORRUPT_GZIP, id="gzip-corrupt"),
    pytest.param(b"deflate", CORRUPT_DEFLATE, id="deflate-corrupt"),
    pytest.param(b"gzip", gzip.compress(b"y" * 50_000)[:40], id="gzip-truncated"),
])
def test_compressed_uploads_to_the_speed_test(fuzzer: Fuzzer, coding: bytes,
                                              body: bytes) -> None:
    """An upload within a live slot whose body says it is compressed: refused (400 for a
    corrupt stream, or 415), or taken as the bytes on the wire. Counting what it inflates
    to would let 50 kB of x's travel as 100 bytes and pass for a fast uplink."""
    fuzzer.acquire_slot()
    replies = send_and_check(fuzzer, Case(b"POST", b"/api/v1/speedtest/upload", (
        (b"Host", HOST), bearer(AGENT), (SLOT_HEADER.encode(), SLOT),
        (b"Content-Encoding", coding), (b"Content-Type", b"application/octet-stream")), body))
    status = replies[0].status
    assert status < 300 or status in (400, 415), (status, replies[0].body[:300])
    state = send_and_check(fuzzer, get(SLOT_PATH + SLOT, AGENT))[0]  # the slot's own count
    assert state.status == 200, state.body[:300]
    uploaded = strict_json(state.body)["uploaded"]
    assert uploaded <= len(body), f"{len(body)} bytes sent with Content-Encoding: " \
                                  f"{coding.decode()}, {uploaded} counted as uploaded"


@pytest.mark.parametrize("target", [b"/api/v1/reports", b"/api/v1/enroll",
                                    b"/admin/v1/tokens", b"/api/v1/speedtest/upload"])
def test_a_client_that_hangs_up_mid_body_is_not_a_bug(fuzzer: Fuzzer, target: bytes) -> None:
    """Content-Length promises more than the client sends before it stops: the server has
    nobody to answer, and nothing went wrong on its side (no "unexpected error")."""
    token = ADMIN if target.startswith(b"/admin") else b"" if b"enroll" in target else AGENT
    if b"upload" in target:
        fuzzer.acquire_slot()
    headers = ((b"Host", HOST), *((bearer(token),) if token else ()),
               (SLOT_HEADER.encode(), SLOT), (b"Content-Type", b"application/json"))
    send_and_check(fuzzer, Case(b"POST", target, headers, REPORT_JSON, length="long"))


# The fuzz: every route, any method now and then, odd paths and queries, hostile headers.

ROUTE_TABLE = sorted({(r.method, r.path) for r in ROUTES})
ODD_NUMBERS = ["nan", "NaN", "-nan", "+nan", "inf", "-inf", "Infinity", "-Infinity", "1e999",
               "-1e999", "1e308", "-1e308", "4.9e-324", "1e-400", "-0", "0", "1", "-1", "+1",
               "0x10", "1_000", "1__0", " 5 ", "", ".", "1.5", "1e3", "9" * 5000,
               "\u0661\u0662", "\uff11\uff12", "\U0001d7d9",  # digits float() takes
               "-" + "9" * 400, "0" * 300 + "1", "1" * 20, "nanx", "infinity"]
QUERY_NAMES = ["since", "until", "ward", "host", "kind", "removed", "format", "working_group",
               "shard", "shards", "override", "deferred", "bytes", "purpose"]
SEGMENTS = [VICTIM_ID, SLOT, b"x", b"0", b"..", b"%2e%2e", b"%00", b"%ff", b"%C5%9B", b"%",
            b"%zz", "ś".encode(), b"\xff\xfe", "phường-bến-thành".encode(), b"a" * 3000]


def _no_line_breaks(raw: bytes) -> bytes:
    """Bytes for the request line: CR and LF would end it and cut the request in two."""
    return raw.replace(b"\r", b"%0D").replace(b"\n", b"%0A")


def _quoted(text: str) -> bytes:
    return urllib.parse.quote(text, safe="", errors="surrogatepass").encode()


path_segments = st.one_of(
    st.sampled_from(SEGMENTS),
    st.text(max_size=30).map(_quoted),
    st.binary(max_size=30).map(lambda b: urllib.parse.quote_from_bytes(b, safe="").encode()),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=20))

polite_segments = st.one_of(
    st.sampled_from([VICTIM_ID, SLOT, b"x", b"%00", b"%ff", b"%C5%9B", b"a" * 3000]),
    st.text(max_size=30).map(_quoted),
    st.binary(max_size=30).map(lambda b: urllib.parse.quote_from_bytes(b, safe="").encode()))
"""Path parameters as a careful client sends them: every byte that needs it percent-encoded."""

polite_values = st.one_of(
    st.sampled_from(ODD_NUMBERS).map(_quoted),
    st.floats().map(repr).map(str.encode),
    st.integers().map(str).map(str.encode),
    st.text(max_size=30).map(_quoted))

query_values = st.one_of(
    st.sampled_from(ODD_NUMBERS).map(str.encode),
    st.sampled_from(ODD_NUMBERS).map(_quoted),
    st.floats().map(repr).map(str.encode),
    st.integers().map(str).map(str.encode),
    st.sampled_from(["sai-gon", "pc-1", "json", "csv", "xlsx", "markdown", "probe", "media",
                     "1", "quiet_window", "budget"]).map(str.encode),
    st.text(max_size=30).map(_quoted),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=20))


@st.composite
def queries(draw: st.DrawFn, polite: bool) -> bytes:
    pairs = draw(st.lists(st.tuples(
        st.sampled_from(QUERY_NAMES).map(str.encode) | st.text(max_size=8).map(_quoted),
        polite_values if polite else query_values), max_size=4))
    return b"&".join(name + b"=" + value for name, value in pairs)


@st.composite
def targets(draw: st.DrawFn, path: str, polite: bool) -> bytes:
    raw = path.encode()
    for name in re.findall(r"\{(\w+)\}", path):
        raw = raw.replace(b"{%s}" % name.encode(),
                          draw(polite_segments if polite else path_segments))
    if not polite:
        raw += draw(st.sampled_from([b""] * 12 + [b"/", b"//x", b"/..", b"%2f", b";x=1",
                                                  b"#f", b"/%00", b"/./"]))
        if draw(st.integers(0, 20)) == 0:
            raw = draw(st.sampled_from([b"http://evil.example", b"//evil.example", b"*",
                                        b""])) + raw
    query = draw(queries(polite))
    return _no_line_breaks(raw + (b"?" + query if query else b""))


@st.composite
def authorizations(draw: st.DrawFn,
                   polite: bool) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """An Authorization header (or none) and the forged token secret it carries, if any;
    `polite`: a well-formed header, whatever its token."""
    role = draw(st.sampled_from(["agent", "agent", "admin", "admin", "victim", "none",
                                 "forged", *([] if polite else ["garbage"])]))
    if role == "none":
        return (), b""
    forged = b""
    if role == "garbage":
        token = draw(st.binary(max_size=60) | st.text(max_size=60).map(
            lambda t: t.encode("utf-8", "surrogatepass")))
    elif role == "forged":  # the shape of a token, someone else's secret
        forged = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                              min_size=24, max_size=43)).encode()
        token = b"wrt_" + draw(st.binary(min_size=6, max_size=6)).hex().encode() + b"." + forged
    else:
        token = {"agent": AGENT, "admin": ADMIN, "victim": VICTIM}[role]
    if polite:
        return ((b"Authorization", b"Bearer " + token),), forged
    scheme = draw(st.sampled_from([b"Bearer", b"Bearer", b"Bearer", b"bearer", b"BEARER",
                                   b"Basic", b"", b"Bearer\xff"]))
    sep = draw(st.sampled_from([b" ", b" ", b" ", b"  ", b"\t", b""]))
    before = draw(st.sampled_from([b""] * 8 + [b"\xff", b"\xc3\x28", b"\x00", b"\x0b",
                                               b"\xe2\x82", b" "]))
    after = draw(st.one_of(
        st.just(b""), st.just(b""), st.just(b""),
        st.sampled_from([b"\x00", b"\x0b", b"\x0c", b"\r", b"\x7f", b"\x01", b"\x1b", b"\xff",
                         b"\xc3\x28", b"\xed\xa0\x80", b"\t", b" ", b"\r\r", b"\n\x0b"]),
        st.binary(max_size=6),
        st.integers(8191, 10_000).map(lambda n: b"A" * n)))
    return ((b"Authorization", scheme + sep + before + token + after),), forged


def plausible_json(path: str) -> Any:
    """A body the route would take, or nearly."""
    return {
        "/api/v1/reports": report("sai-gon", "pc-1"),
        "/admin/v1/tokens": {"ward": "sai-gon", "host": "pc-9"},
        "/admin/v1/enrollments": {"ward": "sai-gon", "hours": 1},
        "/api/v1/enroll": json.loads(ENROLL_JSON),
        "/api/v1/busy": {"seconds": 2, "bits_per_second": 1000},
    }.get(path, {})


@st.composite
def bodies(draw: st.DrawFn, path: str) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """Content-Type and Content-Encoding headers and a body: JSON, plausible or not, or
    bytes; compressed as labelled, or labelled and corrupt, or not compressed at all."""
    kind = draw(st.sampled_from(["plausible", "plausible", "json", "bytes", "empty",
                                 "non-finite"]))
    if kind == "plausible":
        value = plausible_json(path)
        if path == "/api/v1/reports":  # a new report, the same length each time it is drawn
            value["id"] = str(draw(st.uuids()))
            value["generated_at"] = value["outcomes"][0]["started_at"] = float(int(time.time()))
        plain = json.dumps(value).encode()
    elif kind == "json":
        plain = json.dumps(draw(JSON)).encode()
    elif kind == "bytes":
        plain = draw(st.binary(max_size=512))
    elif kind == "non-finite":
        plain = draw(st.sampled_from([b'{"seconds": NaN, "bits_per_second": 1}',
                                      b'{"ward": "sai-gon", "hours": Infinity}',
                                      b'{"seconds": 1e999, "bits_per_second": -1e999}']))
    else:
        plain = b""
    label = draw(st.one_of(
        st.none(), st.none(),
        st.sampled_from([b"identity", b"gzip", b"gzip", b"x-gzip", b"deflate", b"deflate",
                         b"br", b"zstd", b"compress", b"gzip, deflate", b"deflate, gzip",
                         b"GZIP", b"gzip, gzip", b"chunked", b"*", b"gzip;q=nan"]),
        st.binary(max_size=12)))
    codec = draw(st.sampled_from(["as-labelled", "as-labelled", "plain", "gzip", "deflate",
                                  "raw-deflate", "truncated", "flipped", "garbage"]))
    if codec == "as-labelled":
        codec = {b"gzip": "gzip", b"x-gzip": "gzip", b"GZIP": "gzip",
                 b"deflate": "deflate"}.get(label or b"", "plain")
    if codec == "gzip":
        body = gzip.compress(plain)
    elif codec == "deflate":
        body = zlib.compress(plain)
    elif codec == "raw-deflate":
        squeeze = zlib.compressobj(wbits=-15)
        body = squeeze.compress(plain) + squeeze.flush()
    elif codec == "truncated":
        whole = gzip.compress(plain) if draw(st.booleans()) else zlib.compress(plain)
        body = whole[:draw(st.integers(0, max(0, len(whole) - 1)))]
    elif codec == "flipped":
        whole = bytearray(gzip.compress(plain) if draw(st.booleans()) else zlib.compress(plain))
        at = draw(st.integers(0, len(whole) - 1))
        whole[at] ^= draw(st.integers(1, 255))
        body = bytes(whole)
    elif codec == "garbage":
        body = draw(st.sampled_from([b"\x1f\x8b\x08\x00", b"\x78\x9c", b""])) + \
            draw(st.binary(max_size=64))
    else:
        body = plain
    content_type = draw(st.one_of(
        st.just(b"application/json"), st.none(),
        st.sampled_from([b"application/json; charset=utf-8", b"application/json; charset=latin-1",
                         b"application/json; charset=nope", b"text/plain",
                         b"application/octet-stream", b"multipart/form-data; boundary=x",
                         b"application/x-www-form-urlencoded", b"*/*", b""]),
        st.binary(max_size=30)))
    headers = []
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    if label is not None:
        headers.append((b"Content-Encoding", label))
    return tuple(headers), body


hosts = st.one_of(
    st.just(HOST), st.just(HOST), st.just(HOST), st.none(),
    st.sampled_from([b"", b"evil.example", b"evil.example:80", b"[::1]:8470", b"[::1", b"a b",
                     b"x/y?z", "ś.vn".encode(), b"\xff", b"127.0.0.1:99999", b"h:", b":80",
                     b'"><script>', b"h" * 9000, b"localhost\x00"]),
    st.binary(max_size=30))

extra_headers = st.lists(st.tuples(
    st.sampled_from([b"X-Wardready-Slot", b"Accept-Encoding", b"Accept", b"Expect", b"Cookie",
                     b"X-Forwarded-For", b"Forwarded", b"Range", b"If-None-Match", b"Upgrade",
                     b"Transfer-Encoding", b"Content-Length", b"X-Trace"])
    | st.binary(min_size=1, max_size=20),
    st.sampled_from([SLOT, b"gzip", b"gzip;q=nan", b"gzip;q=1e999", b"*;q=0", b"100-continue",
                     b"bytes=0-1", b"websocket", b"chunked", b"-1", b"\x00", b"\xff\xfe"])
    | st.binary(max_size=40)
    | st.integers(8191, 9000).map(lambda n: b"v" * n)), max_size=3)


@st.composite
def requests(draw: st.DrawFn) -> Case:
    """A request to one of the routes. Half are polite: well-formed HTTP with the route's
    method, the server's Host, a well-formed Authorization, percent-encoded parameters and
    a true Content-Length, so that they reach the handlers with odd values and bodies; the
    others are hostile anywhere."""
    method, path = draw(st.sampled_from(ROUTE_TABLE))
    method_bytes = method.encode()
    polite = draw(st.booleans())
    if polite:
        pass
    elif method == "GET" and draw(st.integers(0, 8)) == 0:
        method_bytes = b"HEAD"
    elif draw(st.integers(0, 8)) == 0:
        method_bytes = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH",
                                             b"OPTIONS", b"TRACE", b"get", b"G\x00T", b"PRI",
                                             b"BREW"]))
    headers: list[tuple[bytes, bytes]] = []
    host = HOST if polite else draw(hosts)
    if host is not None:
        headers.append((b"Host", host))
    auth, forged = draw(authorizations(polite))
    headers += auth
    body_headers, body = draw(bodies(path)) if method_bytes != b"GET" or \
        draw(st.integers(0, 5)) == 0 else ((), b"")
    headers += body_headers
    if "speedtest" in path and draw(st.booleans()):
        headers.append((SLOT_HEADER.encode(), SLOT))
    if polite:
        return Case(method_bytes, draw(targets(path, polite)), tuple(headers), body,
                    "exact", forged)
    headers += draw(extra_headers)
    order = draw(st.permutations(range(len(headers))))
    length = draw(st.sampled_from(
        ["exact"] * 10 + ["missing", "short", "long", "chunked", "chunked-broken", "chunked-cut",
                          "invalid:abc", "invalid:-1", "invalid:1, 1", "invalid:+5",
                          "invalid:99999999999999999999", "invalid:0x10"]))
    return Case(method_bytes, draw(targets(path, polite)), tuple(headers[i] for i in order),
                body, length, forged)


@settings(FUZZ, max_examples=3000)
@given(case=requests())
def test_hostile_requests_to_every_route_never_cause_5xx(fuzzer: Fuzzer, case: Case) -> None:
    uses_slot = SLOT in case.target or any(SLOT in value for _, value in case.headers)
    if uses_slot and b"/api/v1/speedtest/" in case.target:
        fuzzer.acquire_slot()  # a live slot with its whole budget, so the body is read
    send_and_check(fuzzer, case)
