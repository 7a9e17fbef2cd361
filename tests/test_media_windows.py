"""The media check's window statistics and the call presets' window criteria (Teams' network
targets to its edge: loss and jitter in any 15 s, loss in any 200 ms, reordering).

- The statistics on constructed streams, with answers computed by hand.
- Reordering on an emulated ward link (lab/netlab.py): the delayer holds the echoes back
  50 ms, and an nftables rule of this test lets a random 2 % of them past it; each of those
  overtakes the two echoes sent in the 40 ms before it, so the reordered count is twice the
  rule's own counter (the truth), and the check must report and judge it.
- A ten-minute call over a link clean but for a 20 s burst of 5 % loss: the whole run's loss
  passes the 1 % criterion, the worst 15 s window fails it, and `wardready-agent check`
  names the window the burst fell in. **This test takes ten minutes of CI** (it is the
  length of the windows' evidence: forty 15 s windows); it sends 50 small probes a second.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lab import fleet, netlab, stack
from wardready.agent.check import table
from wardready.checks import media
from wardready.checks.media import (
    Echo,
    WorstWindow,
    analyse,
    send_windows,
    window_jitters,
    worst_burst,
)
from wardready.core.inventory import CallPreset
from wardready.model.readiness import evaluate

MS = 1_000_000
WARD, HOST = "sai-gon", "bench-pc"

# -- the statistics, by hand ---------------------------------------------------------------


def every(ms: int, count: int) -> list[int]:
    """Send times of `count` probes every `ms` milliseconds, in ns."""
    return [i * ms * MS for i in range(count)]


def echoes_of(sent_ns: list[int], lost: set[int] = frozenset(),  # type: ignore[assignment]
              order: list[int] | None = None) -> list[Echo]:
    """Echoes of every probe not in `lost`, 1 ms each way, arriving in `order` (by seq)."""
    seqs = [s for s in (order or range(len(sent_ns))) if s not in lost]
    return [Echo(s, sent_ns[s] + MS, i, sent_ns[s] + 2 * MS) for i, s in enumerate(seqs)]


def test_windows_are_cut_by_send_time_and_a_short_tail_joins_the_last() -> None:
    # 10 probes a second: 60 probes span 6 s. With 2 s windows: [0,20) [20,40) [40,60).
    assert send_windows(every(100, 60), 2.0) == [(0, 20), (20, 40), (40, 60)]
    # 65 probes span 6.5 s: the 0.5 s tail is under half a window and joins the last one.
    assert send_windows(every(100, 65), 2.0) == [(0, 20), (20, 40), (40, 65)]
    # 70 probes span 7 s: a 1 s tail is half a window, judged on its own.
    assert send_windows(every(100, 70), 2.0) == [(0, 20), (20, 40), (40, 60), (60, 70)]
    # Shorter than one window: one window, the whole stream.
    assert send_windows(every(100, 5), 2.0) == [(0, 5)]
    assert send_windows([], 2.0) == []


def test_the_worst_window_and_the_worst_burst_of_a_stream_with_one_burst_of_loss() -> None:
    # 50 probes a second for 60 s (3,000), 15 s windows of 750 probes. Probes 1,000-1,009
    # (sent 20.00-20.18 s) are lost: all in the window starting at 15 s, 10/750 = 1.33 %;
    # the 200 ms bursts holding 10 probes, the one starting at 20.00 s loses all of them.
    sent = every(20, 3000)
    stats = analyse(sent, echoes_of(sent, set(range(1000, 1010))), 3000, 15.0, 0.2)
    assert stats.windows == 4
    assert stats.window_loss == WorstWindow(start_seconds=15.0, length_seconds=15.0,
                                            value=10 / 750)
    assert stats.burst_loss == WorstWindow(start_seconds=20.0, length_seconds=0.2, value=1.0)
    assert stats.loss_ratio == pytest.approx(10 / 3000)
    # Clean and in order: no jitter, no reordering.
    assert stats.window_jitter is not None and stats.window_jitter.value == 0.0
    assert stats.reorder_ratio == 0.0


def test_burst_loss_takes_the_worst_200_ms_not_a_fixed_grid() -> None:
    # 50 a second: probes 9 and 10 (180 and 200 ms) lost. A fixed 200 ms grid would split
    # them (10 % in each); sliding windows hold both from the one starting at 20 ms
    # (probes 1-10) to the one starting at 180 ms (9-18): 2/10, the earliest reported.
    sent = every(20, 100)
    burst = worst_burst(sent, set(range(100)) - {9, 10}, 0.2)
    assert burst == WorstWindow(start_seconds=0.02, length_seconds=0.2, value=0.2)
    # Windows must end within the stream: the last one starts at 1.8 s (probes 90-99).
    assert worst_burst(sent, set(range(99)), 0.2) == WorstWindow(
        start_seconds=1.8, length_seconds=0.2, value=0.1)
    # A stream shorter than a burst is one window.
    assert worst_burst(every(20, 5), {0, 1, 2}, 0.2) == WorstWindow(
        start_seconds=0.0, length_seconds=0.1, value=0.4)


def test_window_jitter_is_the_mean_of_rfc_3550_j_over_the_window() -> None:
    # Four probes 10 ms apart, one window of 1 s. Transit times 0, 16, 0, 16 ms: every
    # |D| is 16 ms, so J = 16/16 = 1, then 1 + (16-1)/16 = 1.9375, then
    # 1.9375 + (16-1.9375)/16 = 2.81640625 (ms); the window's figure is their mean.
    sent = every(10, 4)
    arrivals = [(0, 0), (1, 16 * MS), (2, 0), (3, 16 * MS)]
    [window] = window_jitters(sent, [arrivals], 1.0)
    assert window is not None
    assert window.value == pytest.approx((1 + 1.9375 + 2.81640625) / 3 / 1e3)
    # Per window: J keeps running across the boundary (no restart at zero); with 20 ms
    # windows the second window (probes 2, 3) averages the last two values.
    first, second = window_jitters(sent, [arrivals], 0.02)
    assert first is not None and second is not None
    assert first.value == pytest.approx(1 / 1e3)
    assert second.value == pytest.approx((1.9375 + 2.81640625) / 2 / 1e3)
    # The worse direction counts: a second, quiet direction does not lower it.
    quiet = [(s, 5 * MS) for s in range(4)]
    assert window_jitters(sent, [quiet, arrivals], 1.0) == [window]


def test_reorder_ratio_follows_rfc_4737_over_the_received() -> None:
    # Arrival order 0 2 3 1 4 6 5 7 8 9 (each way, the server's count follows arrival): 1
    # and 5 arrive after a higher number: 2 reordered of 10 received = 20 %.
    sent = every(20, 10)
    order = [0, 2, 3, 1, 4, 6, 5, 7, 8, 9]
    stats = analyse(sent, echoes_of(sent, order=order), 10)
    assert (stats.forward_reordered_packets, stats.return_reordered_packets) == (2, 0)
    assert stats.reorder_ratio == 0.2
    # Of the received only: with probe 9 lost, 2 of 9.
    stats = analyse(sent, echoes_of(sent, {9}, order=order), 9)
    assert stats.reorder_ratio == pytest.approx(2 / 9)
    assert analyse(sent, [], 0).reorder_ratio is None


TEAMS = CallPreset(description="Teams", source="docs/video-presets.md", min_download_mbps=4,
                   min_upload_mbps=2.5, max_rtt_ms=100, max_jitter_ms=30, max_loss_percent=1,
                   max_window_loss_percent=1, max_window_jitter_ms=30,
                   max_burst_loss_percent=10, max_reorder_percent=0.05)


def result_of(stats: media.Stats) -> media.Result:
    return media.Result(udp_reachable=True, udp_port=1, packet_rate=50, packet_bytes=200,
                        server_dropped_packets=0, send_rate_packets_per_second=50,
                        send_late_max_seconds=0, socket_errors=0, socket_error=None,
                        **vars(stats))


def test_the_verdict_names_the_failing_window_and_why() -> None:
    from tests.conftest import REPO
    from wardready.core.inventory import load_inventory

    profile = load_inventory(REPO / "inventory.yml").profiles["ward-standard"]
    # 60 s at 50 a second; probes 1,000-1,074 (20.0-21.5 s) lost: 75/750 = 10 % in the
    # window from 15 s, the whole run 2.5 %; every 200 ms in the gap loses all.
    sent = every(20, 3000)
    stats = analyse(sent, echoes_of(sent, set(range(1000, 1075))), 3000)
    lines = {c.id: c for c in evaluate(profile, {"media": result_of(stats)}, call=TEAMS)
             .criteria}
    assert lines["window_loss"].verdict == "fail"
    assert lines["window_loss"].measured == pytest.approx(10.0)
    assert lines["window_loss"].note == (
        "15 s window starting 15 s into the test: 10.0 % loss > 1 %")
    assert lines["burst_loss"].verdict == "fail"
    assert lines["burst_loss"].note == (
        "200 ms window starting 20 s into the test: 100.0 % loss > 10 %")
    assert lines["window_jitter"].verdict == "pass"
    assert lines["reorder"].verdict == "pass"
    assert lines["reorder"].measured == 0.0
    # `wardready-agent check` prints the same lines, the window's note under its figure.
    text = table(evaluate(profile, {"media": result_of(stats)}, call=TEAMS),
                 SimpleNamespace(ward=WARD, host=HOST, role=None),  # type: ignore[arg-type]
                 "from the server (ward-standard)").splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("loss, worst 15 s"))
    assert text[at].split() == ["loss,", "worst", "15", "s", "10.00", "%", "1.00", "%", "FAIL"]
    assert text[at + 1] == "    note: 15 s window starting 15 s into the test: 10.0 % loss > 1 %"
    # A preset without window criteria adds no such lines; the MOS line stays.
    plain = TEAMS.model_copy(update={"max_window_loss_percent": None,
                                     "max_window_jitter_ms": None,
                                     "max_burst_loss_percent": None,
                                     "max_reorder_percent": None})
    ids = [c.id for c in evaluate(profile, {"media": result_of(stats)}, call=plain).criteria]
    assert "window_loss" not in ids and "mos" in ids
    # Windows of another length than the preset's are not judged, and the note says why.
    other = analyse(sent, echoes_of(sent), 3000, window_seconds=10.0)
    line = {c.id: c for c in evaluate(profile, {"media": result_of(other)}, call=TEAMS)
            .criteria}["window_loss"]
    assert line.verdict == "unknown"
    assert "set the media check's window_seconds to 15" in line.note
    # A default 10 s run is one window, and the note says so.
    short = analyse(every(20, 500), echoes_of(every(20, 500)), 500)
    line = {c.id: c for c in evaluate(profile, {"media": result_of(short)}, call=TEAMS)
            .criteria}["window_loss"]
    assert line.verdict == "pass"
    assert line.note == "worst: the whole 10 s run (shorter than one window), 0.0 % loss"


# -- on an emulated link ---------------------------------------------------------------------

ECHO_PORT = 8471


@dataclass
class Lab:
    link: netlab.WardLink
    token: Path
    workdir: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    problem = netlab.require_netlab()
    if problem:
        pytest.skip(problem)
    workdir = tmp_path_factory.mktemp("media-windows")
    with netlab.WardLink() as link:
        # Sessions long and large enough for a ten-minute stream at 50 probes a second.
        token = netlab.start_city_server(link, workdir, echo_port=ECHO_PORT,
                                         echo={"max_packets": 40_000, "session_seconds": 700})
        yield Lab(link, token, workdir)


def nft(link: netlab.WardLink, script: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", link.router_ns, "nft", *script.split()],
                         capture_output=True, text=True, timeout=10, check=True)
    return out.stdout


def counter(link: netlab.WardLink, name: str) -> int:
    """Packets counted by this test's named nft counter in the router."""
    out = nft(link, f"list counter inet wrtest {name}")
    return int(re.search(r"packets (\d+)", out).group(1))  # type: ignore[union-attr]


def test_reordering_on_an_emulated_link_is_reported_and_judged(lab: Lab) -> None:
    link = lab.link
    # The delayer holds every echo (city -> ward) 50 ms and keeps their order; 2 % of the
    # echoes are marked before it (priority -20, ahead of the link's own chain) and an
    # iptables rule ahead of its queue lets them straight through. Probes go every 20 ms,
    # so a marked echo arrives 50 ms early, ahead of the two sent 20 and 40 ms before it.
    link.reconfigure(netlab.LinkSpec(delay_ms=50))
    subprocess.run(["ip", "netns", "exec", link.router_ns, "nft", "-f", "-"], check=True,
                   timeout=10, input=(
                       "table inet wrtest {\n  counter bypass {}\n"
                       "  chain forward {\n    type filter hook forward priority -20;\n"
                       f'    oifname "{netlab.TOWARD_WARD}" udp sport {ECHO_PORT} '
                       'numgen random mod 100 < 2 counter name "bypass" meta mark set 1\n'
                       "  }\n}\n"), text=True)
    bypass = ["FORWARD", "-o", netlab.TOWARD_WARD, "-m", "mark", "--mark", "1", "-j", "ACCEPT"]
    subprocess.run(["ip", "netns", "exec", link.router_ns, "iptables", "-I", *bypass],
                   check=True, timeout=10)
    try:
        result = netlab.run_check(link, "media", {
            "duration_seconds": 20.0, "packet_rate": 50.0, "packet_bytes": 200,
            "window_seconds": 15.0}, lab.token, timeout=90)
        marked = counter(link, "bypass")
        stats = link.delayer_stats()
    finally:
        subprocess.run(["ip", "netns", "exec", link.router_ns, "iptables", "-D", *bypass],
                       timeout=10)
        nft(link, "delete table inet wrtest")
        link.reconfigure(netlab.LinkSpec())
    r = media.Result.model_validate(result)
    print(f"\nmarked {marked}, delayer {stats}, result {r.model_dump_json()}")
    assert r.packets_sent == 1000 and r.packets_received == 1000
    # The truth: every echo the rule marked skipped the delayer, which saw all the others
    # (and the few TCP packets of the session's HTTP requests); each marked echo overtook
    # the two before it, unless that one was marked too (or the stream had only just
    # begun): at most 2 per mark, within a few of it.
    assert 0 <= stats["released"] - (r.packets_received - marked) <= 30
    assert 10 <= marked <= 40  # 2 % of 1,000, well within binomial bounds
    assert 2 * marked - 8 <= r.return_reordered_packets <= 2 * marked
    assert r.forward_reordered_packets == 0
    assert r.reorder_ratio == pytest.approx(r.return_reordered_packets / 1000)
    # Judged against Teams' 0.05 %: 2 % reordered fails, and the note counts them.
    lines = {c.id: c for c in evaluate(_profile(), {"media": r}, call=TEAMS).criteria}
    assert lines["reorder"].verdict == "fail"
    assert lines["reorder"].measured == pytest.approx(r.reorder_ratio * 100)
    assert lines["reorder"].note.startswith(f"{r.return_reordered_packets} of 1000 packets")


def _profile() -> Any:
    from tests.conftest import REPO
    from wardready.core.inventory import load_inventory
    return load_inventory(REPO / "inventory.yml").profiles["ward-standard"]


def test_a_20_s_burst_of_loss_in_a_10_minute_call_fails_the_15_s_window_only(
        lab: Lab) -> None:
    link = lab.link
    duration, burst_at, burst_for, loss = 600.0, 300.0, 20.0, 5.0
    config = fleet.write_agent_config(
        lab.workdir / "ten-minutes", f"http://{link.city_ip}:8470", WARD, HOST,
        lab.token.read_text(), checks={"media": {
            "duration_seconds": duration, "packet_rate": 50.0, "packet_bytes": 200,
            "timeout_seconds": duration + 60}})
    # When the stream starts: this test's counter of probes toward the echo port.
    subprocess.run(["ip", "netns", "exec", link.router_ns, "nft", "-f", "-"], check=True,
                   timeout=10, text=True, input=(
                       "table inet wrtest {\n  counter probes {}\n"
                       "  chain forward {\n    type filter hook forward priority -20;\n"
                       f'    oifname "{netlab.TOWARD_CITY}" udp dport {ECHO_PORT} '
                       'counter name "probes"\n  }\n}\n'))
    proc = link.popen(link.ward_ns, [stack.executable("wardready-agent"), "check", "--json",
                                     "--config", str(config)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while counter(link, "probes") == 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        started = time.monotonic()  # within 50 ms of the first probe
        time.sleep(max(0.0, started + burst_at - time.monotonic()))
        link.reconfigure(netlab.LinkSpec(loss_percent=loss))
        on = time.monotonic() - started
        time.sleep(max(0.0, started + burst_at + burst_for - time.monotonic()))
        drops = link.loss_drops()  # read before the rules (and their counters) go
        link.reconfigure(netlab.LinkSpec())
        off = time.monotonic() - started
        out, err = proc.communicate(timeout=duration + 120)
        sent = counter(link, "probes")
    finally:
        if proc.poll() is None:
            proc.kill()
        nft(link, "delete table inet wrtest")
    body = json.loads(out)
    lines = {c["id"]: c for c in body["criteria"]}
    print(f"\nburst {on:.2f}-{off:.2f} s, drops {drops}, sent {sent}\n"
          + "\n".join(json.dumps(c) for c in body["criteria"]) + "\n" + err[-2000:])
    assert body["errors"] == {}, err
    assert sent == 30_000
    # The kernel's counters are the truth: every probe or echo the burst's rules dropped,
    # and nothing else, is what the run lost (HTTP runs only before and after the stream).
    lost = drops["upload"] + drops["download"]
    expected = netlab.round_trip_loss(loss) * burst_for * 50  # ~97.5 of ~1,000 in the burst
    assert 0.5 * expected < lost < 1.5 * expected
    # The whole run: ~0.16 % each way, far below 1 %: the loss line (the 6 h p75's figure
    # per run) passes.
    assert lines["loss"]["verdict"] == "pass"
    # (the worse direction's, as the line takes it: forward over the probes sent, return
    # over those that reached the server)
    assert lines["loss"]["measured"] == pytest.approx(100 * max(
        drops["upload"] / sent, drops["download"] / (sent - drops["upload"])))
    assert lines["loss"]["measured"] < 0.5
    # The worst 15 s window holds the burst: a window fully inside it loses ~9.75 %
    # round trip (5 % each way); it starts where the test turned the loss on, within one
    # window, and the note says so.
    window = lines["window_loss"]
    assert window["verdict"] == "fail", window
    assert window["measured"] > 1.0
    start = float(re.match(r"15 s window starting ([\d.]+) s into the test: ", window["note"])
                  .group(1))  # type: ignore[union-attr]
    assert on - 15 <= start <= off, (on, off, window)
    assert window["note"].endswith("% loss > 1 %")
    # 200 ms of it at 5 % each way: 10 probes, losing one is already 10 %: burst fails too.
    assert lines["burst_loss"]["verdict"] == "fail"
    assert lines["window_jitter"]["verdict"] == "pass"
    assert lines["reorder"]["verdict"] == "pass"


def test_the_server_exposes_the_call_presets_window_targets_per_ward() -> None:
    from tests.conftest import REPO
    from wardready.core.inventory import load_inventory
    from wardready.server.catalogue import ward_samples

    inventory = load_inventory(REPO / "inventory.yml")
    ward = inventory.ward(WARD)
    assert ward is not None
    values = {s.spec.name: s.value for s in ward_samples(inventory, ward)}
    # city-bridge-hd (ward-standard's call): Teams' 1 %, 30 ms, 10 % in 200 ms, 0.05 %.
    assert {k: v for k, v in values.items() if "window" in k or "burst" in k
            or "reorder" in k} == pytest.approx({
                "wardready_requirement_window_loss_ratio": 0.01,
                "wardready_requirement_window_jitter_seconds": 0.03,
                "wardready_requirement_window_seconds": 15.0,
                "wardready_requirement_burst_loss_ratio": 0.1,
                "wardready_requirement_burst_seconds": 0.2,
                "wardready_requirement_reorder_ratio": 0.0005})


def test_no_window_figures_without_echoes_or_from_an_older_agent() -> None:
    sent = every(20, 500)
    blocked = result_of(analyse(sent, [], 0)).model_copy(update={"udp_reachable": False})
    names = {s.spec.name for s in media.samples(blocked)}
    assert not names & {"wardready_media_window_loss_ratio", "wardready_media_burst_loss_ratio",
                        "wardready_media_window_seconds", "wardready_media_reorder_ratio"}
    lines = {c.id: c for c in evaluate(_profile(), {"media": blocked}, call=TEAMS).criteria}
    assert lines["window_loss"].verdict == "unknown"
    assert lines["window_loss"].note == "UDP blocked: no media stream to judge"
    # A result without window statistics (an agent from before them) is unknown, and says so.
    old = result_of(analyse(sent, echoes_of(sent), 500)).model_copy(update={
        "window_seconds": None, "window_loss": None, "window_jitter": None,
        "burst_seconds": None, "burst_loss": None, "reorder_ratio": None, "windows": 0})
    lines = {c.id: c for c in evaluate(_profile(), {"media": old}, call=TEAMS).criteria}
    assert {lines[i].verdict for i in ("window_loss", "window_jitter", "burst_loss",
                                       "reorder")} == {"unknown"}
    assert lines["reorder"].note == (
        "the agent's media check predates window statistics: update the agent")
