"""What a working group receives: one ward's alerts in one mail, in Vietnamese, rendered by
a real Alertmanager (prometheus-alertmanager) from the shipped alertmanager.yml and
templates/wardready.tmpl, and delivered to an SMTP server this test serves on loopback.

Why a real Alertmanager and not `amtool template render`: the Debian amtool (0.25) has the
command, but it renders only its fixed example data (two alerts with labels like
`label1="value1"` and status "alertstatus"), so it cannot show our alerts' `summary_vi`."""

from __future__ import annotations

import email
import email.policy
import json
import queue
import socket
import socketserver
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_binary

ALERTMANAGER = REPO / "prometheus" / "alertmanager.yml"
MAX_LINES = 10_000  # an SMTP session of this test is a few dozen lines


class _Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.mails: queue.Queue[tuple[list[str], bytes]] = queue.Queue()


class _Session(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for Go's net/smtp client: no STARTTLS, no AUTH."""

    server: _Sink

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._say("220 sink ESMTP")
        rcpt: list[str] = []
        for _ in range(MAX_LINES):
            line = self.rfile.readline()
            if not line:
                return
            verb = line.decode().strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                self._say("250-sink")
                self._say("250 8BITMIME")
            elif verb.startswith("RCPT TO:"):
                rcpt.append(line.decode().strip()[8:].strip(" <>"))
                self._say("250 OK")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                data = []
                for _ in range(MAX_LINES):
                    chunk = self.rfile.readline()
                    if chunk in (b".\r\n", b""):
                        break
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                self.server.mails.put((rcpt, b"".join(data)))
                rcpt = []
                self._say("250 OK")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:  # MAIL FROM, RSET, NOOP
                self._say("250 OK")


@pytest.fixture()
def smtp() -> Iterator[_Sink]:
    sink = _Sink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    yield sink
    sink.shutdown()
    sink.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except OSError:
        return 0


@pytest.fixture()
def alertmanager(tmp_path: Path, smtp: _Sink) -> Iterator[str]:
    """The shipped config with the mail server pointed at the sink (plain SMTP) and a short
    group_wait; its routes, receivers and templates as they ship."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER.read_text())
    config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp.server_address[1]}"
    config["global"]["smtp_require_tls"] = False
    config["route"]["group_wait"] = "1s"
    config["templates"] = [str(ALERTMANAGER.parent / t) for t in config["templates"]]
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config, allow_unicode=True))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [require_binary("prometheus-alertmanager"),
         f"--config.file={tmp_path / 'alertmanager.yml'}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # ready in well under a second here; give it up to 30 s
            if _get(f"{url}/-/ready") == 200 or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert _get(f"{url}/-/ready") == 200, (tmp_path / "alertmanager.log").read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200


def _mail(sink: _Sink) -> tuple[list[str], EmailMessage]:
    rcpt, data = sink.mails.get(timeout=60)  # group_wait 1 s; a mail within the minute
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return rcpt, message


def _text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


WARD = {"ward": "sai-gon", "name": "Phường Sài Gòn", "working_group": "wg-01"}
# The annotations as Prometheus renders them for these labels (prometheus/rules; the same
# texts as tests/rules/wardready.test.yml's), in both languages.
WEBCAM = {
    "labels": {**WARD, "alertname": "WardEquipmentMissing", "severity": "warning",
               "item": "webcam"},
    "annotations": {
        "summary": "Phường Sài Gòn: 1 webcam missing",
        "description": "Ward Phường Sài Gòn (wg-01) has 1 webcam fewer than its profile "
                       "requires (PCs: those meeting the profile's cores and memory; webcam, "
                       "microphone, speaker: on the PC that holds the video calls).",
        "summary_vi": "Phường Sài Gòn: thiếu 1 webcam",
        "description_vi": "Phường Sài Gòn (wg-01) còn thiếu 1 webcam so với hồ sơ yêu cầu "
                          "(máy tính: loại đạt số nhân CPU và bộ nhớ theo hồ sơ; webcam, "
                          "micrô, loa: trên máy tính dùng để họp trực tuyến)."},
    "startsAt": "2026-12-06T01:30:00Z"}
VIDEO = {
    "labels": {**WARD, "alertname": "WardVideoNotReady", "severity": "critical",
               "criterion": "video"},
    "annotations": {
        "summary": "Phường Sài Gòn: not ready for the city's video meetings",
        "description": "Ward Phường Sài Gòn (wg-01) fails: camera  (wardready-server "
                       "readiness --ward sai-gon gives the figures and fixes).",
        "summary_vi": "Phường Sài Gòn: CHƯA SẴN SÀNG họp trực tuyến của Thành phố",
        "description_vi": "Phường Sài Gòn (wg-01) không đạt: webcam  (lệnh wardready-server "
                          "readiness --ward sai-gon cho biết số liệu đo được và cách khắc "
                          "phục)."},
    "startsAt": "2026-12-06T01:45:00Z"}
VI_HEADING = "Phường Sài Gòn (Tổ công tác wg-01): {n} cảnh báo đang phát sinh.\n"
VI_BLOCKS = {
    "video": "\nNGHIÊM TRỌNG: Phường Sài Gòn: CHƯA SẴN SÀNG họp trực tuyến của Thành phố\n"
             "Phường Sài Gòn (wg-01) không đạt: webcam  (lệnh wardready-server readiness "
             "--ward sai-gon cho biết số liệu đo được và cách khắc phục).\n"
             "Từ 01:45 06/12/2026 (giờ UTC).\n",
}
ENGLISH = ("missing", "not ready", "fails", "firing", "Since", "working group", "WARNING",
           "CRITICAL")


def test_a_working_group_reads_its_wards_alerts_in_vietnamese_in_one_mail(
        alertmanager: str, smtp: _Sink) -> None:
    # Another alert of the same ward (its description shortened).
    segment = {
        "labels": {**WARD, "alertname": "WardSegmentAtFault", "severity": "warning",
                   "segment": "lan", "reason": "lan-loss"},
        "annotations": {
            "summary": "Phường Sài Gòn: lan at fault (lan-loss)",
            "description": "Ward Phường Sài Gòn (wg-01): the lan segment of its path is at "
                           "fault (lan-loss, 1 finding(s)); ...",
            "summary_vi": "Phường Sài Gòn: đoạn mạng LAN bị lỗi (mất gói trong mạng LAN)",
            "description_vi": "Phường Sài Gòn (wg-01): đoạn mạng LAN trên đường truyền bị lỗi "
                              "(mất gói trong mạng LAN, 1 lần phát hiện)."},
        "startsAt": "2026-12-06T02:00:00Z"}
    # Both start a few minutes ahead: an alert already older than group_wait makes
    # Alertmanager send its group at once, before the other alert of the request is in.
    ahead = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=10)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    ends = (ahead + timedelta(days=1)).strftime(stamp)  # after the start, as it must be
    video = {**VIDEO, "startsAt": ahead.strftime(stamp), "endsAt": ends}
    segment |= {"startsAt": (ahead + timedelta(minutes=15)).strftime(stamp), "endsAt": ends}
    _post(alertmanager, [video, segment])
    rcpt, message = _mail(smtp)
    assert rcpt == ["wg-01@hcmc.example"]
    assert message["Subject"] == "[wardready] Phường Sài Gòn: 2 cảnh báo"
    blocks = [VI_BLOCKS["video"].replace("Từ 01:45 06/12/2026",
                                         f"Từ {ahead:%H:%M %d/%m/%Y}"),
              "\nCẢNH BÁO: Phường Sài Gòn: đoạn mạng LAN bị lỗi (mất gói trong mạng LAN)\n"
              "Phường Sài Gòn (wg-01): đoạn mạng LAN trên đường truyền bị lỗi (mất gói trong "
              f"mạng LAN, 1 lần phát hiện).\nTừ {ahead + timedelta(minutes=15):%H:%M %d/%m/%Y} "
              "(giờ UTC).\n"]
    text = _text(message)
    types = [part.get_content_type() for part in message.walk()]
    assert "text/html" not in types, types  # Alertmanager's default HTML part is English
    # One mail for the ward's two alerts, in the order Alertmanager lists them.
    assert text in {VI_HEADING.format(n=2) + blocks[0] + blocks[1],
                    VI_HEADING.format(n=2) + blocks[1] + blocks[0]}, text
    assert not [w for w in ENGLISH if w in text], text


def test_the_city_operators_read_english(alertmanager: str, smtp: _Sink) -> None:
    """Alerts without a working group go to the operators, in the English words (with
    Alertmanager's default HTML part beside them)."""
    labels = {k: v for k, v in WEBCAM["labels"].items() if k != "working_group"}
    _post(alertmanager, [{**WEBCAM, "labels": labels}])
    rcpt, message = _mail(smtp)
    assert rcpt == ["operators@hcmc.example"]
    assert message["Subject"] == "[wardready] Phường Sài Gòn: 1 alert(s)"
    assert _text(message) == (
        "Phường Sài Gòn: 1 alert(s) firing.\n"
        "\nWARNING: Phường Sài Gòn: 1 webcam missing\nWard Phường Sài Gòn (wg-01) has 1 "
        "webcam fewer than its profile requires (PCs: those meeting the profile's cores and "
        "memory; webcam, microphone, speaker: on the PC that holds the video calls).\n"
        "Since 2026-12-06 01:30 (UTC).\n")
