"""Enrollment: one-time codes issued by an operator, redeemed once by `wardready-agent enroll`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import sqlite3
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme
import yaml
from aiohttp.test_utils import TestServer

from lab import fleet, stack
from tests.test_server import Client, MakeClient, auth
from wardready.agent.cli import main as agent_main
from wardready.agent.config import load_agent_config
from wardready.agent.enroll import host_slug
from wardready.checks import REGISTRY
from wardready.core.errors import EnrollmentRefused
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.config import ServerConfig
from wardready.server.enroll import MAX_FAILURES
from wardready.server.store import Store


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: ServerConfig) -> Client:
    return await aiohttp_client(create_app(config, load_inventory(config.inventory)))


def issue_code(config: ServerConfig, ward: str = "sai-gon", host: str | None = None) -> str:
    store = Store(config.database)
    try:
        return store.issue_enrollment(ward, host, 24)[0]
    finally:
        store.close()


def admin_token(config: ServerConfig) -> str:
    store = Store(config.database)
    try:
        return store.issue_admin_token("ops")
    finally:
        store.close()


async def enroll(client: Client, workdir: Path, code: str, *extra: str) -> int:
    """The real `wardready-agent enroll` against the test server, on a thread because the
    server answers on this test's event loop."""
    url = str(client.make_url("/")).rstrip("/")
    return await asyncio.to_thread(agent_main, [
        "enroll", "--server", url, "--ward", "sai-gon", "--code", code,
        "--config", str(workdir / "agent.yml"), *extra])


async def test_admin_issues_a_code_that_redeems_once(client: Client,
                                                     config: ServerConfig) -> None:
    admin = admin_token(config)
    resp = await client.post("/admin/v1/enrollments", json={"ward": "nha-be", "hours": 2},
                             headers=auth(admin))
    assert resp.status == 201
    issued = await resp.json()
    assert issued["code"].startswith("wre-") and len(issued["code"]) == 4 + 6 * 6 - 1
    assert issued["expires_at"] == pytest.approx(time.time() + 7200, abs=60)
    # A code read off paper: upper case, spaces, O for 0.
    typed = issued["code"].upper().replace("-", " ").replace("0", "O")
    first = await client.post("/api/v1/enroll", json={"code": typed, "host": "pc-7"})
    assert first.status == 200
    enrolled = await first.json()
    assert (enrolled["ward"], enrolled["host"]) == ("nha-be", "pc-7")
    who = await client.get("/api/v1/whoami", headers=auth(enrolled["token"]))
    assert (await who.json())["ward"] == "nha-be"
    again = await client.post("/api/v1/enroll", json={"code": issued["code"], "host": "pc-7"})
    assert again.status == 410
    assert (await again.json())["error"].startswith("enrollment code already used")
    listed = await (await client.get("/admin/v1/tokens", headers=auth(admin))).json()
    assert [(r["ward"], r["host"]) for r in listed if r["role"] == "agent"] == [("nha-be", "pc-7")]
    # Admin only, and only for wards in the inventory.
    assert (await client.post("/admin/v1/enrollments", json={"ward": "nha-be"},
                              headers=auth(enrolled["token"]))).status == 403
    bad = await client.post("/admin/v1/enrollments", json={"ward": "atlantis"},
                            headers=auth(admin))
    assert (bad.status, (await bad.json())["error"]) == (422, "ward: unknown ward 'atlantis'")
    assert (await client.post("/admin/v1/enrollments", json={"ward": "nha-be", "hours": 1000},
                              headers=auth(admin))).status == 422


async def test_expired_code_is_refused(client: Client, config: ServerConfig) -> None:
    code = issue_code(config)
    with sqlite3.connect(config.database) as db:
        db.execute("UPDATE enrollments SET expires_at = ?", (time.time() - 1,))
    resp = await client.post("/api/v1/enroll", json={"code": code, "host": "pc-1"})
    assert resp.status == 410
    assert (await resp.json())["error"].startswith("enrollment code expired")


async def test_code_for_a_ward_gone_from_the_inventory_is_refused_and_kept(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = issue_code(config, ward="atlantis")  # issued, then the ward left the inventory
    assert await enroll(client, tmp_path / "pc", code, "--host", "pc-1") == 1
    err = capsys.readouterr().err
    assert "refused the enrollment (409): ward 'atlantis' is no longer in the inventory" in err
    assert not (tmp_path / "pc" / "agent.yml").exists()
    assert not (tmp_path / "pc" / "agent.token").exists()
    assert os.listdir(tmp_path / "pc") == []  # no temporary file left behind
    with sqlite3.connect(config.database) as db:
        assert db.execute("SELECT used_at FROM enrollments").fetchone() == (None,)


async def test_code_bound_to_a_host_and_ward(client: Client, config: ServerConfig) -> None:
    code = issue_code(config, host="counter-01")
    other = await client.post("/api/v1/enroll", json={"code": code, "host": "pc-2"})
    assert (other.status, (await other.json())["error"]) == (
        409, "this code is for host 'counter-01', not 'pc-2'")
    ward = await client.post("/api/v1/enroll",
                             json={"code": code, "host": "counter-01", "ward": "nha-be"})
    assert (await ward.json())["error"] == "this code is for ward 'sai-gon', not 'nha-be'"
    ok = await client.post("/api/v1/enroll", json={"code": code, "host": "counter-01"})
    assert ok.status == 200


async def test_concurrent_redeems_issue_exactly_one_token(client: Client,
                                                          config: ServerConfig) -> None:
    code = issue_code(config)
    answers = await asyncio.gather(*(
        client.post("/api/v1/enroll", json={"code": code, "host": f"pc-{i}"}) for i in range(2)))
    assert sorted(a.status for a in answers) == [200, 410]
    # Two processes' connections racing on the database itself, not only the server's thread.
    code = issue_code(config)
    stores = [Store(config.database) for _ in range(4)]
    start, won, lost = threading.Barrier(len(stores)), [], []

    def redeem(store: Store) -> None:
        start.wait()
        try:
            won.append(store.redeem_enrollment(code, "pc-9", None, lambda _: True))
        except EnrollmentRefused as exc:
            lost.append(exc.reason)
    threads = [threading.Thread(target=redeem, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert (len(won), lost) == (1, ["used"] * 3)
    with sqlite3.connect(config.database) as db:
        assert db.execute("SELECT count(*) FROM tokens").fetchone() == (2,)


OLD_TABLE = ("CREATE TABLE enrolments (id TEXT PRIMARY KEY, ward TEXT NOT NULL, host TEXT,"
             " secret_sha256 TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,"
             " used_at REAL, used_host TEXT, token_id TEXT)")
"""The codes' table as servers before the one spelling (enroll) made it."""


def old_code(db: sqlite3.Connection, code_id: str, secret: str) -> str:
    """A code as an older server issued it, into its table; returns the code as typed."""
    db.execute("INSERT INTO enrolments (id, ward, host, secret_sha256, created_at, expires_at)"
               " VALUES (?,?,?,?,?,?)", (code_id, "sai-gon", None,
                                         hashlib.sha256(secret.encode()).hexdigest(),
                                         time.time(), time.time() + 3600))
    db.commit()
    return "-".join(["wre", code_id, *(secret[i:i + 5] for i in range(0, 25, 5))])


def test_a_database_from_before_the_one_spelling_keeps_its_codes(tmp_path: Path) -> None:
    """Its table `enrolments` becomes `enrollments` when the store opens it, and a code issued
    before the upgrade redeems, once."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(OLD_TABLE)
        code = old_code(db, "abcde", "0123456789abcdefghjkmnpqr")
    with Store(path) as store:
        enrolled = store.redeem_enrollment(code, "pc-1", "sai-gon", lambda _: True)
        with pytest.raises(EnrollmentRefused, match="already used"):
            store.redeem_enrollment(code, "pc-2", None, lambda _: True)
        assert store.authenticate(enrolled.token) is not None
    assert (enrolled.ward, enrolled.host) == ("sai-gon", "pc-1")
    # An older server run again on the upgraded database makes its table anew: the codes it
    # issues there move too, next to those already moved.
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'enrolments'"
                          ).fetchall() == []
        db.execute(OLD_TABLE)
        again = old_code(db, "fghjk", "rqpnmkjhgfedcba9876543210")
    with Store(path) as store:
        assert store.redeem_enrollment(again, "pc-3", None, lambda _: True).host == "pc-3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT id, used_host FROM enrollments ORDER BY id").fetchall() == [
            ("abcde", "pc-1"), ("fghjk", "pc-3")]
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'enrolments'"
                          ).fetchall() == []


async def test_repeated_wrong_codes_lock_the_address_out(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = issue_code(config)
    used = issue_code(config)
    assert (await client.post("/api/v1/enroll", json={"code": used, "host": "a"})).status == 200
    for _ in range(3):  # a used code is not a guess: it does not count
        assert (await client.post("/api/v1/enroll", json={"code": used, "host": "a"})).status == 410
    wrong = code[:-5] + ("00000" if not code.endswith("00000") else "11111")
    for _ in range(MAX_FAILURES):
        resp = await client.post("/api/v1/enroll", json={"code": wrong, "host": "pc-1"})
        assert (resp.status, (await resp.json())["error"]) == (401, "unknown enrollment code")
    # Locked out now, even with the right code; the code is not spent.
    assert await enroll(client, tmp_path / "pc", code, "--host", "pc-1") == 1
    assert "refused the enrollment (429): too many failed enrollment attempts; retry in 900 s" \
        in capsys.readouterr().err
    resp = await client.post("/api/v1/enroll", json={"code": code, "host": "pc-1"})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    with sqlite3.connect(config.database) as db:
        assert db.execute("SELECT count(*) FROM enrollments WHERE used_at IS NULL"
                          ).fetchone() == (1,)


async def test_enroll_writes_token_600_and_config_and_verifies(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = issue_code(config)
    old_umask = os.umask(0)  # the modes must not depend on the umask
    try:
        assert await enroll(client, tmp_path / "etc", code, "--host", "counter-01") == 0
    finally:
        os.umask(old_umask)
    token_file, config_file = tmp_path / "etc" / "agent.token", tmp_path / "etc" / "agent.yml"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path / "etc")) == ["agent.token", "agent.yml"]
    agent = load_agent_config(config_file)
    assert (agent.ward, agent.host, agent.token_file) == ("sai-gon", "counter-01", token_file)
    out = capsys.readouterr()
    assert "verified:" in out.out and "knows this agent's token as ward sai-gon host counter-01" \
        in out.out
    assert "wardready-agent check-config" in out.out and "systemctl enable --now" in out.out
    token = token_file.read_text().strip()
    assert token not in out.out + out.err and code not in out.out + out.err
    assert agent_main(["check-config", "--config", str(config_file)]) == 0


async def test_the_pc_role_is_checked_before_the_code_is_spent(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = issue_code(config)
    assert await enroll(client, tmp_path / "pc", code, "--host", "pc-1",
                        "--role", "kiosk") != 0
    err = capsys.readouterr().err.strip()
    assert err.endswith("refused the enrollment (400): unknown role 'kiosk' (the inventory's "
                        "roles: conference-room, counter)"), err
    assert not (tmp_path / "pc" / "agent.yml").exists()
    assert await enroll(client, tmp_path / "pc", code, "--host", "pc-1",
                        "--role", "conference-room") == 0  # the code was kept
    assert load_agent_config(tmp_path / "pc" / "agent.yml").role == "conference-room"


async def test_existing_config_is_kept_without_force(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "pc"
    workdir.mkdir()
    (workdir / "agent.yml").write_text("# the technician's earlier config\n")
    code = issue_code(config)
    assert await enroll(client, workdir, code, "--host", "pc-1") == 2
    assert capsys.readouterr().err.strip() == (
        f"wardready-agent: {workdir / 'agent.yml'}: already exists; give --force to replace it")
    assert (workdir / "agent.yml").read_text() == "# the technician's earlier config\n"
    assert await enroll(client, workdir, code, "--host", "pc-1", "--force") == 0  # not spent
    assert load_agent_config(workdir / "agent.yml").host == "pc-1"


async def test_enroll_usage_and_network_errors(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = issue_code(config)
    assert await enroll(client, tmp_path / "a", code, "--host", "Counter_01") == 2
    assert "--host: 'Counter_01' is not a valid host name" in capsys.readouterr().err
    assert await enroll(client, tmp_path / "a", "wre-12345") == 2
    assert "--code: not an enrollment code" in capsys.readouterr().err
    assert await enroll(client, tmp_path / "a", code, "--ca-file", str(tmp_path / "no.pem")) == 2
    assert "no.pem: --ca-file: no such file" in capsys.readouterr().err
    port = stack.free_port()
    assert agent_main(["enroll", "--server", f"http://127.0.0.1:{port}", "--ward", "sai-gon",
                       "--code", code, "--config", str(tmp_path / "b" / "agent.yml")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"wardready-agent: cannot reach http://127.0.0.1:{port}: connection refused "
        "(is the server running, and the port right?)")
    assert await enroll(client, tmp_path / "a", code) == 0  # nothing above spent the code
    assert load_agent_config(tmp_path / "a" / "agent.yml").host == host_slug(
        socket.gethostname())


def test_host_slug() -> None:
    assert host_slug("DESKTOP-4F2K_1.city.local") == "desktop-4f2k-1"
    assert host_slug("--Phòng Một--") == "ph-ng-m-t"
    assert host_slug("x" * 80) == "x" * 63


async def test_enroll_over_tls_needs_the_city_ca(
        aiohttp_server: Callable[..., Awaitable[TestServer]], config: ServerConfig,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = await aiohttp_server(create_app(config, load_inventory(config.inventory)),
                                  ssl=context)
    url = f"https://127.0.0.1:{server.port}"
    code = issue_code(config)
    argv = ["enroll", "--server", url, "--ward", "sai-gon", "--code", code, "--host", "pc-1",
            "--config", str(tmp_path / "pc" / "agent.yml")]
    assert await asyncio.to_thread(agent_main, argv) == 1
    err = capsys.readouterr().err
    assert f"cannot reach {url}: TLS: the server's certificate cannot be verified" in err
    assert "give the city's CA bundle with --ca-file" in err
    assert await asyncio.to_thread(agent_main, [*argv, "--ca-file",
                                                str(tmp_path / "ca.pem")]) == 0
    assert load_agent_config(tmp_path / "pc" / "agent.yml").ca_file == tmp_path / "ca.pem"


@pytest.mark.integration
def test_enrolled_agent_delivers_and_no_secret_is_logged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real processes: the operator's CLI issues a code, the agent enrolls and reports."""
    port = stack.free_port()
    server_config = fleet.write_server_config(tmp_path, port)
    issued = subprocess.run(
        [stack.executable("wardready-server"), "tokens", "enroll", "--config",
         str(server_config), "--ward", "sai-gon", "--host", "counter-01"],
        capture_output=True, text=True, check=True)
    code = issued.stdout.strip()
    assert "--host counter-01 --code CODE" in issued.stderr and code not in issued.stderr
    server = stack.start_server(server_config, tmp_path)
    agent = None
    try:
        url = f"http://127.0.0.1:{port}"
        stack.wait_until("server", lambda: stack.http_get(f"{url}/healthz"), 20, server)
        workdir = tmp_path / "pc"
        argv = ["enroll", "--server", url, "--ward", "sai-gon", "--code", code, "--host",
                "counter-01", "--config", str(workdir / "agent.yml")]
        assert agent_main(argv) == 0
        assert agent_main([*argv, "--force"]) == 1
        assert "enrollment code already used" in capsys.readouterr().err
        wrong = code[:-5] + ("00000" if not code.endswith("00000") else "11111")
        assert agent_main(["enroll", "--server", url, "--ward", "sai-gon", "--code", wrong,
                           "--config", str(tmp_path / "other" / "agent.yml")]) == 1
        assert "(401): unknown enrollment code" in capsys.readouterr().err
        # Only the host check, on a free port, at once: the enrolled identity is what counts.
        config_file = workdir / "agent.yml"
        written = yaml.safe_load(config_file.read_text())
        written.update(listen_port=stack.free_port(), start_jitter_seconds=0,
                       checks={**{n: {"enabled": False} for n in REGISTRY if n != "host"},
                               "host": {"interval_seconds": 0.5}})
        config_file.write_text(yaml.safe_dump(written))
        agent = stack.start_agent(config_file, workdir)
        stack.wait_until("the enrolled agent's report", lambda: fleet.stored_ids(
            tmp_path / "server.db"), 20, agent)
        with sqlite3.connect(tmp_path / "server.db") as db:
            assert db.execute("SELECT DISTINCT ward, host FROM reports").fetchall() == [
                ("sai-gon", "counter-01")]
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
    token = (workdir / "agent.token").read_text().strip()
    logs = (tmp_path / "server.log").read_text() + (workdir / "agent.log").read_text()
    assert "enrollment" in logs and "redeemed" in logs  # the enrollment was logged...
    secret, code_secret = token.split(".", 1)[1], "".join(code.split("-")[2:])
    for needle in (token, secret[:12], code, code_secret[:10], wrong, wrong[-15:]):
        assert needle not in logs  # ...without any part of a secret


async def test_enroll_speaks_the_chosen_language(
        client: Client, config: ServerConfig, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--lang vi`: its usage errors, a server it cannot reach and the enrollment's report in
    Vietnamese; nothing of the English sentences left."""
    code = issue_code(config)
    assert await enroll(client, tmp_path / "a", code, "--host", "Counter_01", "--lang",
                        "vi") == 2
    assert capsys.readouterr().err.strip() == (
        "wardready-agent: dòng lệnh: --host: 'Counter_01' không phải tên máy hợp lệ (a-z, 0-9 "
        "và '-')")
    port = stack.free_port()
    assert agent_main(["enroll", "--lang", "vi", "--server", f"http://127.0.0.1:{port}",
                       "--ward", "sai-gon", "--code", code, "--config",
                       str(tmp_path / "b" / "agent.yml")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"wardready-agent: không kết nối được http://127.0.0.1:{port}: kết nối bị từ chối (máy "
        "chủ có đang chạy và cổng có đúng không?)")
    assert await enroll(client, tmp_path / "pc", code, "--host", "counter-01", "--lang",
                        "vi") == 0
    out = capsys.readouterr().out
    url = str(client.make_url("/")).rstrip("/")
    lines = out.splitlines()
    assert lines[0] == f"đã đăng ký đơn vị sai-gon, máy tính counter-01 với {url}"
    assert lines[1].startswith(f"đã ghi {tmp_path / 'pc' / 'agent.token'} (quyền 600")
    assert (f"đã kiểm tra: {url}/healthz hoạt động, và máy chủ ghi nhận mã truy cập (token) "
            "của agent này là đơn vị sai-gon, máy tính counter-01") in lines
    assert "các bước tiếp theo:" in lines
    for english in ("enrolled", "wrote", "verified", "next steps", "the verdict for this PC"):
        assert english not in out, english
