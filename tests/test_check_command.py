"""`wardready-agent check` as a technician runs it: real checks against a real server on
loopback, the verdict as JSON and as a table, and the exit code."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lab import fleet, stack
from tests.conftest import DATA, require_binary

pytestmark = pytest.mark.integration
WARD, HOST = "sai-gon", "conference-pc"
# The recorded office PC (a webcam, microphones, speakers) and a bare one; the link is
# loopback: fast, clean, UDP open.
MACHINES = DATA / "peripherals"


def agent_config(tmp_path: Path, port: int, token: str, machine: str, **extra: Any) -> Path:
    root = MACHINES / machine
    return fleet.write_agent_config(
        tmp_path / "agent", f"http://127.0.0.1:{port}", WARD, HOST, token, **extra,
        inventory=str(DATA / "inventory-small.yml"), checks={
            "latency": {"count": 5, "probe_interval_seconds": 0.05},
            "media": {"duration_seconds": 2.0},
            # The test machine's own traffic (other jobs) must not defer the speed test.
            "bandwidth": {"max_seconds": 3.0, "busy_own_bits_per_second": 1e9},
            "peripherals": {"os": "linux", "sys_root": str(root / "sys"),
                            "proc_root": str(root / "proc"),
                            "lpstat_recorded": str(root / "lpstat-v.txt")}})


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([stack.executable("wardready-agent"), "check", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=120)


def in_terminal(argv: list[str], tmp_path: Path, columns: int = 100) -> tuple[list[str], int]:
    """Run `argv` in a real terminal (a detached tmux pane `columns` wide), as a technician
    would; the screen's lines and the exit code."""
    # -u: the terminal speaks UTF-8 (Vietnamese); the socket is this run's own.
    tmux = [require_binary("tmux"), "-u", "-L", f"wardready-{os.getpid()}-{tmp_path.name}",
            "-f", "/dev/null"]
    command = " ".join(shlex.quote(a) for a in argv) + '; echo "exit=$?"; sleep 60'
    subprocess.run([*tmux, "new-session", "-d", "-x", str(columns), "-y", "60", command],
                   check=True, timeout=10)
    try:
        def screen() -> list[str] | None:
            shown = subprocess.run([*tmux, "capture-pane", "-p", "-J"], capture_output=True,
                                   text=True, timeout=10).stdout.rstrip("\n").splitlines()
            return shown if any(line.startswith("exit=") for line in shown) else None
        lines = stack.wait_until("the check to finish in the terminal", screen, 120)
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=10, check=False)
    code = next(line for line in lines if line.startswith("exit="))
    return lines, int(code.removeprefix("exit="))


def test_check_judges_the_machine_and_names_the_fix(tmp_path: Path) -> None:
    port = stack.free_port()
    server_config = fleet.write_server_config(tmp_path, port,
                                              inventory=str(DATA / "inventory-small.yml"))
    token, other = fleet.issue_tokens(server_config, [(WARD, HOST), (WARD, "counter-02")])
    server = stack.start_server(server_config, tmp_path)
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        office = check(agent_config(tmp_path, port, token, "linux-office"), "--json")
        bare, bare_exit = in_terminal(
            [stack.executable("wardready-agent"), "check", "--config",
             str(agent_config(tmp_path / "bare", port, token, "linux-bare"))], tmp_path)
        # The same PC, as a technician who reads Vietnamese sees it.
        (tmp_path / "vi").mkdir()
        bare_vi, bare_vi_exit = in_terminal(
            [stack.executable("wardready-agent"), "check", "--lang", "vi", "--config",
             str(agent_config(tmp_path / "bare-vi", port, token, "linux-bare"))],
            tmp_path / "vi")
        # The same bare PC at a counter, while another PC of the ward runs its speed test.
        release = hold_test_slot(f"http://127.0.0.1:{port}", other, seconds=8.0)
        counter = check(agent_config(tmp_path / "counter", port, token, "linux-bare",
                                     role="counter"), "--json")
        release.join()
    finally:
        server.stop()
    assert office.returncode == 0, office.stdout + office.stderr
    verdict = json.loads(office.stdout)
    by_id = {c["id"]: c for c in verdict["criteria"]}
    assert verdict["profile_source"] == "from the server (ward-standard)"
    for criterion in ("download", "upload", "udp", "rtt", "jitter", "loss", "camera",
                      "microphone", "speaker"):
        assert by_id[criterion]["verdict"] == "pass", by_id[criterion]
    assert by_id["mos"]["measured"] > 4.3
    assert "[5/" in office.stderr and "(bandwidth): ok" in office.stderr  # progress lines
    # The bare machine has no camera: not ready, exit 1, and the table, as a 100-column
    # terminal shows it (progress lines first, no line wrapped), says what to do.
    assert bare_exit == 1, "\n".join(bare)
    assert max(len(line) for line in bare) <= 100
    assert "[5/5] throughput (bandwidth): ok" in "\n".join(bare)
    camera = next(i for i, line in enumerate(bare) if line.startswith("cameras"))
    assert bare[camera].endswith("FAIL") and "connect a USB webcam" in bare[camera + 1]
    assert bare[bare.index(next(x for x in bare if x.startswith("exit="))) - 1].startswith(
        "State: NOT-READY")
    assert_vietnamese_screen(bare_vi, bare_vi_exit, bare, tmp_path)

    # At a counter no camera is needed; the speed test waited its turn instead of colliding.
    assert counter.returncode == 0, counter.stdout + counter.stderr
    judged = {c["id"] for c in json.loads(counter.stdout)["criteria"]}
    assert json.loads(counter.stdout)["role"] == "counter"
    assert not judged & {"camera", "microphone", "speaker"} and "download" in judged
    waited = re.search(r"\(bandwidth\): ok \(.*\), after waiting (\d+) s for the ward's test slot",
                       counter.stderr)
    assert waited and int(waited.group(1)) >= 2, counter.stderr

    # The server gone: the profile comes from the local inventory, and the table says so.
    alone = check(agent_config(tmp_path / "alone", port, token, "linux-office"), "--json")
    assert "server unreachable" in json.loads(alone.stdout)["profile_source"]
    assert json.loads(alone.stdout)["criteria"][0]["verdict"] == "unknown"  # no speed test


VERDICTS = ("PASS", "FAIL", "WARN", "UNKNOWN")
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"


def assert_vietnamese_screen(screen: list[str], code: int, english: list[str],
                             tmp_path: Path) -> None:
    """The Vietnamese table as a 100-column terminal shows it: diacritics intact, nothing
    wider than the screen or wrapped by it (the capture joins wrapped lines), the glossary's
    words, and none of the criterion names of the English screen (`english`). The capture
    is kept as a test artefact (tests/artefacts/check-vi-100-columns.txt) and printed
    (`pytest -s`)."""
    text = "\n".join(screen)
    ARTEFACTS.mkdir(exist_ok=True)
    (ARTEFACTS / "check-vi-100-columns.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    assert code == 1, text
    assert max(len(line) for line in screen) <= 100, text
    assert "[5/5] băng thông (bandwidth): xong (" in text
    header = next(line for line in screen if line.startswith("Tiêu chí"))
    assert header.split()[-2:] == ["Kết", "luận"] and "Đo được" in header, header
    webcam = next(i for i, line in enumerate(screen) if line.startswith("webcam "))
    assert screen[webcam].endswith("KHÔNG ĐẠT")
    assert screen[webcam + 1] == "    khắc phục: lắp một webcam USB"
    end = screen.index(next(x for x in screen if x.startswith("exit=")))
    assert screen[end - 1].startswith("Mức sẵn sàng: CHƯA SẴN SÀNG ("), text
    names = [line[:22].strip() for line in english if line.endswith(VERDICTS)]
    assert len(names) >= 12 and "cameras" in names and "round-trip time" in names
    rows = [line for line in screen if line.endswith(("ĐẠT", "CẢNH BÁO", "CHƯA RÕ"))]
    assert len(rows) == len(names)
    for name in names:
        assert not any(row.startswith(name + " ") for row in rows), name
    for word in (*VERDICTS, "criterion", "measured", "State:", "fix:", "note:"):
        assert word not in text, word


def hold_test_slot(server: str, token: str, seconds: float) -> threading.Thread:
    """Take the ward's speed-test slot as another PC would, and give it back after
    `seconds` (join the returned thread)."""
    auth = {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(f"{server}/api/v1/speedtest/slots", method="POST",
                                     headers=auth)
    with urllib.request.urlopen(request, timeout=5) as resp:
        slot = json.loads(resp.read())["slot"]

    def release() -> None:
        threading.Event().wait(seconds)
        done = urllib.request.Request(f"{server}/api/v1/speedtest/slots/{slot}",
                                      method="DELETE", headers=auth)
        urllib.request.urlopen(done, timeout=5).close()
    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_check_says_why_the_speed_test_waits_and_now_overrides_it(tmp_path: Path) -> None:
    """Inside a quiet window of the plan the technician's test does not run: the progress
    line says why and for how long; `--now` runs it, with a warning."""
    # Today and tomorrow: a run near midnight in Ho Chi Minh City stays inside the window.
    today = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    inventory = tmp_path / "inventory.yml"
    inventory.write_text((DATA / "inventory-small.yml").read_text()
                         + f'    - {{name: Ward meeting, ward: {WARD}, dates: [{today}, '
                           f'{today + timedelta(days=1)}], start: "00:00", end: "24:00"}}\n')
    port = stack.free_port()
    server_config = fleet.write_server_config(tmp_path, port, inventory=str(inventory))
    [token] = fleet.issue_tokens(server_config, [(WARD, HOST)])
    server = stack.start_server(server_config, tmp_path)
    try:
        stack.wait_until("server", lambda: stack.http_get(
            f"http://127.0.0.1:{port}/healthz"), 20, server)
        config = agent_config(tmp_path, port, token, "linux-office")
        held = check(config, "--json")
        line = next(x for x in held.stderr.splitlines() if "(bandwidth):" in x)
        assert "not run: no slot: quiet window 'Ward meeting'" in line, held.stderr
        assert re.search(r"it may run in \d+ (min|h \d\d min) \(--now runs it anyway\)", line)
        # In Vietnamese, the server's reason too (the agent asks with Accept-Language).
        held_vi = check(config, "--json", "--lang", "vi")
        line = next(x for x in held_vi.stderr.splitlines() if "(bandwidth):" in x)
        assert "chưa được cấp lượt đo: khung giờ hạn chế đo 'Ward meeting'" in line, line
        assert json.loads(held.stdout)["criteria"][0]["verdict"] == "unknown"  # no figure
        forced = check(config, "--json", "--now")
        assert "--now: the throughput test runs whatever the plan" in forced.stderr
        assert re.search(r"\(bandwidth\): ok \(", forced.stderr), forced.stderr
        assert json.loads(forced.stdout)["criteria"][0]["verdict"] == "pass"
    finally:
        server.stop()
