"""The agent in Vietnamese: `--lang`, then the config's `language:`, then the locale; its
configuration errors in Vietnamese with file and line; `check`'s table with no English left
and still inside 100 columns. The English output is the one the other tests pin down."""

from __future__ import annotations

import os
import shutil
import subprocess
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import fleet, stack
from lab.results import kit, link, results, udp
from tests.conftest import DATA
from tests.test_segments import hop, trace, wifi
from wardready.agent.check import WIDTH, ProfileSource, segment_lines, table
from wardready.agent.cli import main as agent_main
from wardready.core import i18n
from wardready.core.errors import ConfigError
from wardready.core.inventory import CallPreset, load_inventory
from wardready.model import segments
from wardready.model.readiness import Criterion, Readiness, evaluate

PROFILE = load_inventory(DATA / "inventory-small.yml").profiles["ward-standard"]
# A preset with every window criterion (figures as tests/test_media_windows.py's Teams one),
# so that the table holds its longest names.
CALL = CallPreset(description="Teams", source="docs/video-presets.md", min_download_mbps=4,
                  min_upload_mbps=2.5, max_rtt_ms=100, max_jitter_ms=30, max_loss_percent=1,
                  max_window_loss_percent=1, max_window_jitter_ms=30,
                  max_burst_loss_percent=10, max_reorder_percent=0.05)
# The words of the glossary (docs: issue 25) the Vietnamese table must show.
VI_HEADINGS = ("Tiêu chí", "Đo được", "Yêu cầu", "Kết luận")


def agent_dir(tmp_path: Path, extra: str = "") -> Path:
    """A copy of the small valid agent config (tests/data), with `extra` lines appended."""
    for name in ("agent-small.yml", "agent.token", "inventory-small.yml"):
        shutil.copy(DATA / name, tmp_path / name)
    config = tmp_path / "agent-small.yml"
    config.write_text(config.read_text() + extra)
    return config


def check_config(config: Path, *args: str, lang_env: str = "C.UTF-8"
                 ) -> subprocess.CompletedProcess[str]:
    """`wardready-agent check-config` as a process, in a locale of `lang_env`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    env["LANG"] = lang_env
    return subprocess.run([stack.executable("wardready-agent"), "check-config", "--config",
                           str(config), *args], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.mark.parametrize(("args", "configured", "locale", "expected"), [
    (("--lang", "vi"), "en", "en_US.UTF-8", "vi"),  # the flag over the config and locale
    (("--lang", "en"), "vi", "vi_VN.UTF-8", "en"),
    ((), "vi", "en_US.UTF-8", "vi"),                # the config over the locale
    ((), "en", "vi_VN.UTF-8", "en"),
    ((), None, "vi_VN.UTF-8", "vi"),                # the locale when nothing else says
    ((), None, "C.UTF-8", "en"),
], ids=["flag-vi", "flag-en", "config-vi", "config-en", "locale-vi", "locale-c"])
def test_the_language_is_the_flag_then_the_config_then_the_locale(
        tmp_path: Path, args: tuple[str, ...], configured: str | None, locale: str,
        expected: str) -> None:
    config = agent_dir(tmp_path, f"language: {configured}\n" if configured else "")
    out = check_config(config, *args, lang_env=locale)
    assert out.returncode == 0, out.stderr
    english = ": ward sai-gon, host counter-01, checks: host every 300 s"
    vietnamese = ": đơn vị sai-gon, máy tính counter-01, các kiểm tra: host mỗi 300 giây"
    assert (vietnamese if expected == "vi" else english) in out.stdout, out.stdout
    assert out.stdout.rstrip().endswith(": hợp lệ" if expected == "vi" else ": ok")


def test_a_bad_language_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    config = agent_dir(tmp_path)
    flag = check_config(config, "--lang", "fr")
    assert (flag.returncode, flag.stdout) == (2, "")
    assert flag.stderr == ("wardready-agent: --lang: unknown language 'fr'; expected one of "
                           "en, vi\n")
    in_vi = check_config(config, "--lang", "fr", lang_env="vi_VN.UTF-8")
    assert in_vi.stderr == ("wardready-agent: --lang: ngôn ngữ 'fr' không được hỗ trợ; chọn "
                            "một trong en, vi\n")
    config = agent_dir(tmp_path, "language: fr\n")
    line = len(config.read_text().splitlines())
    configured = check_config(config)
    assert configured.returncode == 2
    assert configured.stderr == (f"wardready-agent: {config}:{line}: language: Input should be "
                                 "'en' or 'vi', got 'fr'\n")


# (case, lines appended to the valid config or (old, new) replaced, the key's marker,
#  the message expected after "file:line: ")
CASES: list[tuple[str, str | tuple[str, str], str, str]] = [
    ("below the minimum", "listen_port: -5\n", "listen_port",
     "listen_port: Giá trị phải lớn hơn hoặc bằng 0, nhận được -5"),
    ("above the maximum", "listen_port: 70000\n", "listen_port",
     "listen_port: Giá trị phải nhỏ hơn hoặc bằng 65535, nhận được 70000"),
    ("unknown key", "colour: blue\n", "colour", "colour: khóa không hợp lệ"),
    ("missing key", ("host: counter-01\n", ""), "server_url",
     "host: thiếu khóa bắt buộc"),
    ("not a string", "listen_host: 12\n", "listen_host",
     "listen_host: Giá trị phải là một chuỗi ký tự, nhận được 12"),
    ("not a number", "delivery_timeout_seconds: soon\n", "delivery_timeout_seconds",
     "delivery_timeout_seconds: Giá trị phải là một số, nhận được 'soon'"),
    ("not positive", "delivery_timeout_seconds: 0\n", "delivery_timeout_seconds",
     "delivery_timeout_seconds: Giá trị phải lớn hơn 0, nhận được 0"),
    ("not a slug", ("host: counter-01", "host: Counter 01"), "host:",
     "host: Chuỗi phải khớp mẫu '^[a-z0-9][a-z0-9-]{0,62}$', nhận được 'Counter 01'"),
    ("duplicate key", "ward: nha-be\n", "ward: nha-be",
     "ward: khóa bị trùng (lần đầu ở dòng 3)"),
    ("unknown ward", ("ward: sai-gon", "ward: ben-thanh"), "ward:",
     "ward: đơn vị 'ben-thanh' không tồn tại (không có trong "),
    ("YAML syntax", "checks: [host\n", "checks: [host",
     "YAML không hợp lệ: expected ',' or ']', but got ':' (while parsing a flow sequence ở "
     "dòng "),
]


@pytest.mark.parametrize(("case", "change", "marker", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_config_errors_in_vietnamese_name_the_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
        change: str | tuple[str, str], marker: str, expected: str) -> None:
    config = agent_dir(tmp_path, "language: vi\n")
    text = config.read_text()
    if isinstance(change, tuple):
        assert change[0] in text
        text = text.replace(change[0], change[1], 1)
    else:
        # before `language:`, so that it is also read when the rest does not parse
        text = text.replace("language: vi\n", change + "language: vi\n")
    config.write_text(text)
    lines = text.splitlines()
    # A missing key is told at the document's first node, where its mapping starts.
    line = next(i for i, x in enumerate(lines, 1) if x.startswith(marker)) if case not in (
        "YAML syntax") else None
    assert agent_main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    place = f"wardready-agent: {config}:{line}: " if line else f"wardready-agent: {config}:"
    assert err.startswith(place), err
    assert expected in err, err
    assert i18n.language() == "en"  # the command gave its language back


def test_the_inventory_s_own_errors_in_vietnamese(tmp_path: Path) -> None:
    text = (DATA / "inventory-small.yml").read_text()
    cases = [(("  - id: nha-be", "  - id: sai-gon"), "  - id: sai-gon\n    name: Xã",
              "wards[1]: mã đơn vị 'sai-gon' bị trùng (đã có ở wards[0])"),
             (("working_group: wg-01", "working_group: wg-11"), "wg-11",
              "wards[1].working_group: Tổ công tác 'wg-11' không tồn tại (chọn một trong: "
              "wg-01, wg-02)"),
             (("kind: commune", "kind: district"), "kind: district",
              "wards[1].kind: Giá trị phải là 'ward', 'commune' hoặc 'special-zone', nhận "
              "được 'district'"),
             (('start: "08:00", end: "10:00"', 'start: "10:00", end: "08:00"'),
              "Past conference",
              "measurement_plan.quiet_windows[0].end: Giá trị không hợp lệ: khung giờ kết thúc "
              "(08:00) trước khi bắt đầu (10:00); khung giờ qua nửa đêm được ghi thành hai khung "
              "giờ, nhận được '08:00'"),
             (("working_group: wg-01, dates: [2020-01-07]", "working_group: wg-09, dates: "
               "[2020-01-07]"), "Past review",
              "measurement_plan.quiet_windows[1].working_group: Tổ công tác 'wg-09' không tồn "
              "tại (chọn một trong: wg-01, wg-02)")]
    for (old, new), marker, expected in cases:
        path = tmp_path / "inventory.yml"
        assert old in text
        path.write_text(text.replace(old, new, 1))
        changed = path.read_text()
        line = changed[:changed.index(marker)].count("\n") + 1
        with i18n.using("vi"), pytest.raises(ConfigError) as caught:
            load_inventory(path)
        assert str(caught.value) == f"{path}:{line}: {expected}"
        with pytest.raises(ConfigError) as english:  # and in English as it always was
            load_inventory(path)
        assert "mã đơn vị" not in str(english.value) and "Giá trị" not in str(english.value)


def _rows(text: str) -> list[str]:
    return text.splitlines()


def test_the_table_in_vietnamese_has_no_english_left_and_fits_100_columns() -> None:
    """Every criterion (the call's window ones too), notes, fixes, weak segments: the
    Vietnamese table shows none of the English names, headings or words, and no line is
    wider than the terminal."""
    # A PC that fails on every side: thin link, lossy media path, no camera, no memory
    # figure (host check failed), on weak Wi-Fi losing packets to its gateway.
    found_results: dict[str, Any] = {
        "lasthop": wifi(-80), "path": trace(gateway_lost=10, server_lost=12,
                                            hops=[hop(1, "10.0.0.1"), hop(2, "100.64.0.1")])}
    measured = results(bandwidth=link(2, 1), media=udp(loss=0.05), peripherals=kit(0),
                       host=None)
    config: Any = SimpleNamespace(ward="sai-gon", host="conference-pc", role="conference-room")
    texts = {}
    names = {}
    for lang in ("en", "vi"):
        with i18n.using(lang):
            readiness = evaluate(PROFILE, measured, {"host": "timed out after 60 s"}, CALL,
                                 "conference-room")
            found = segments.host_findings(PROFILE, found_results, "conference-pc",
                                           "conference-room", CALL)
            names[lang] = [c.name for c in readiness.criteria]
            source = ProfileSource(profile="ward-standard").text()
            texts[lang] = table(readiness, config, source, segment_lines(found),
                                "Phường Sài Gòn")
            notes = [c.note for c in readiness.criteria if c.note]
            fixes = [c.fix for c in readiness.criteria if c.fix]
            evidence = [f.evidence for f in found] + [f.fix for f in found]
    vi, en = texts["vi"], texts["en"]
    print(vi)
    assert len(names["en"]) == len(names["vi"]) == 17 and notes and fixes and len(evidence) == 4
    # Each criterion is shown by its Vietnamese name, none by its English one.
    for english, vietnamese in zip(names["en"], names["vi"], strict=True):
        assert english != vietnamese
        assert not any(row.startswith(english + " ") for row in _rows(vi)), english
        assert any(row.startswith(vietnamese.split()[0]) for row in _rows(vi)), vietnamese
    header = next(row for row in _rows(vi) if row.startswith(VI_HEADINGS[0]))
    assert header.split("  ")[0] == VI_HEADINGS[0] and header.endswith(VI_HEADINGS[3])
    for word in VI_HEADINGS[1:3]:
        assert word in header
    for english in ("criterion", "measured", "required", "verdict", "FAIL", "PASS",
                    "UNKNOWN", "WARN", "State:", "note:", "fix:", "Weak segments",
                    "NOT-READY", "Ward ", "host ", "did not run", "loses", "gateway ",
                    "could not", "check ", "connect ", "ask the provider", "worst",
                    "from the server", "profile"):
        assert english not in vi, english
    assert _rows(vi)[0].startswith("Phường Sài Gòn (sai-gon), máy tính conference-pc "
                                   "(conference-room): hồ sơ yêu cầu lấy từ máy chủ")
    for word in ("KHÔNG ĐẠT", "CHƯA RÕ", "ghi chú: ", "khắc phục: ", "Đoạn mạng yếu",
                 "Mức sẵn sàng: CHƯA SẴN SÀNG (", "máy tính: conference-pc (máy tính "
                 "conference-room) dùng Wi-Fi với tín hiệu -80 dBm"):
        assert word in vi, word
    assert vi == unicodedata.normalize("NFC", vi)
    assert max(len(row) for row in _rows(vi)) <= WIDTH
    assert max(len(row) for row in _rows(en)) <= WIDTH
    # The English table keeps the layout it always had: a 22-column name.
    assert _rows(en)[2] == f"{'criterion':<22}{'measured':>15}{'required':>15}  verdict"


def test_json_stays_english_whatever_the_language() -> None:
    """`--json` is machine output: the texts are made in English (check.main evaluates under
    i18n.using("en")); the ids and verdicts are English in both."""
    with i18n.using("vi"), i18n.using("en"):
        readiness = evaluate(PROFILE, results(peripherals=kit(0)))
    body = readiness.as_dict()
    assert body["state"] == "not-ready"
    camera = next(c for c in body["criteria"] if c["id"] == "camera")
    assert (camera["name"], camera["fix"], camera["verdict"]) == (
        "cameras", "connect a USB webcam", "fail")


@pytest.mark.integration
def test_the_plan_command_in_vietnamese(tmp_path: Path) -> None:
    """`wardready-agent plan` against a real server on loopback, in both languages."""
    port = stack.free_port()
    server_config = fleet.write_server_config(tmp_path, port,
                                              inventory=str(DATA / "inventory-small.yml"))
    [token] = fleet.issue_tokens(server_config, [("sai-gon", "conference-pc")])
    server = stack.start_server(server_config, tmp_path)
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        config = fleet.write_agent_config(tmp_path / "agent", f"http://127.0.0.1:{port}",
                                          "sai-gon", "conference-pc", token)
        shown = {lang: subprocess.run(
            [stack.executable("wardready-agent"), "plan", "--lang", lang, "--config",
             str(config)], capture_output=True, text=True, timeout=60) for lang in ("en", "vi")}
    finally:
        server.stop()
    en, vi = shown["en"], shown["vi"]
    assert en.returncode == vi.returncode == 0, en.stderr + vi.stderr
    print(vi.stdout)
    assert en.stdout.startswith("Measurement plan ")
    assert vi.stdout.startswith("Kế hoạch đo ") and "của đơn vị sai-gon, máy tính conference-pc" \
        in vi.stdout.splitlines()[0]
    for word in ("  đo băng thông: ", "  tần suất: trung bình ", "  hạn mức: hôm nay đã dùng ",
                 "  số đo đường truyền: ", "  khung giờ yên tĩnh, 7 ngày tới:"):
        assert word in vi.stdout, word
    for english in ("Measurement plan", "throughput tests", "how often", "budget:",
                    "uplink figure", "quiet windows", "never measured", "on average"):
        assert english in en.stdout and english not in vi.stdout, english


def test_the_flag_before_the_command_and_the_help_in_vietnamese(tmp_path: Path) -> None:
    config = agent_dir(tmp_path)
    before = subprocess.run([stack.executable("wardready-agent"), "--lang", "vi",
                             "check-config", "--config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert before.returncode == 0 and before.stdout.rstrip().endswith(": hợp lệ"), before
    shown = subprocess.run([stack.executable("wardready-agent"), "check", "--help", "--lang",
                            "vi"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    help_text = " ".join(shown.stdout.split())  # argparse wraps at the terminal's width
    assert "kết quả cho máy đọc (luôn bằng tiếng Anh)" in help_text
    assert "tệp cấu hình agent (mặc định /etc/wardready/agent.yml)" in help_text
    assert "machine-readable" not in help_text


def test_a_name_longer_than_its_column_wraps_under_itself() -> None:
    """A name too long for the column (a translation longer than any today) keeps the
    figures and the verdict in their columns and goes on on the next line."""
    long_name = ("tỉ lệ mất gói trong khoảng thời gian tệ nhất của cuộc họp trực tuyến toàn "
                 "thành phố")
    readiness = Readiness((Criterion("loss", long_name, 5.0, 1.0, "%", "fail"),))
    config: Any = SimpleNamespace(ward="sai-gon", host="pc-1", role="counter")
    with i18n.using("vi"):
        rows = _rows(table(readiness, config, "lấy từ máy chủ (ward-standard)"))
    print("\n".join(rows))
    assert max(map(len, rows)) <= WIDTH
    first = next(i for i, row in enumerate(rows) if row.startswith("tỉ lệ mất gói"))
    assert rows[first].endswith("5,00 %         1,00 %  KHÔNG ĐẠT")
    assert rows[first + 1].startswith("  ") and "thành phố" in rows[first + 1]
    shown = rows[first][:-len("5,00 %         1,00 %  KHÔNG ĐẠT")].strip() + " " + \
        rows[first + 1].strip()
    assert " ".join(shown.split()) == long_name
