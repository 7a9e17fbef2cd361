"""Thousands of malformed requests against a real server process: no 5xx, and it keeps serving."""

from __future__ import annotations

import copy
import http.client
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import fleet, stack
from tests.test_server import report
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


class Fuzzer:
    """One keep-alive connection to the server; records every status it gets back."""

    def __init__(self, port: int, token: str, admin_token: str) -> None:
        self.port, self.token, self.admin_token = port, token, admin_token
        self.statuses: Counter[int] = Counter()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

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


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    workdir = tmp_path_factory.mktemp("fuzz")
    port = stack.free_port()
    config = fleet.write_server_config(workdir, port, max_report_bytes=256 * 1024)
    (token,) = fleet.issue_tokens(config, [("sai-gon", "pc-1")])
    store = Store(workdir / "server.db")
    admin_token = store.issue_admin_token("fuzz")
    store.close()
    server = stack.start_server(config, workdir)
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        client = Fuzzer(port, token, admin_token)
        yield client
        assert server.alive(), f"the server died under fuzzing:\n{server.tail()}"
        assert "unexpected error" not in (workdir / "server.log").read_text()
        assert stack.http_get(f"http://127.0.0.1:{port}/healthz") == b'{"status": "ok"}'
        valid = report("sai-gon", "pc-1")
        assert client.report(json.dumps(valid).encode()) == 201, "still ingests after the fuzz"
        assert valid["id"] in fleet.stored_ids(workdir / "server.db")
        client.conn.close()
        assert sum(client.statuses.values()) > 3500, client.statuses  # the fuzz really ran
        print(f"fuzz statuses: {dict(client.statuses)}")
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
