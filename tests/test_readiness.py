"""The readiness verdict: measured against the profile, with the reason and the fix."""

from __future__ import annotations

from typing import Any

from lab.results import kit, link, results, udp
from tests.conftest import DATA, REPO
from wardready.checks import host
from wardready.core.inventory import load_inventory
from wardready.model.readiness import HostResults, evaluate, rollup

PROFILE = load_inventory(DATA / "inventory-small.yml").profiles["ward-standard"]
# link: >= 50 down, >= 20 up, RTT <= 100 ms, jitter <= 30 ms, loss <= 1 %; 2 cores, 4 GiB;
# one camera, microphone and speaker on each PC in role conference-room; one such PC ready.


def verdicts(readiness: Any) -> dict[str, str]:
    return {c.id: c.verdict for c in readiness.criteria}


def test_a_clean_fast_link_with_the_kit_is_ready() -> None:
    r = evaluate(PROFILE, results())
    assert r.state == "ready", r.as_dict()
    assert set(verdicts(r).values()) == {"pass"}
    assert all(c.fix == "" for c in r.criteria)


def test_a_thin_link_fails_bandwidth_and_says_what_to_ask_for() -> None:
    r = evaluate(PROFILE, results(bandwidth=link(2, 1)))
    v = verdicts(r)
    assert (r.state, v["download"], v["upload"]) == ("not-ready", "fail", "fail")
    down = next(c for c in r.criteria if c.id == "download")
    assert down.measured is not None and round(down.measured, 6) == 2.0
    assert "at least 50 Mbit/s download" in down.fix


def test_little_headroom_is_a_warning_not_a_failure() -> None:
    r = evaluate(PROFILE, results(bandwidth=link(55, 40)))
    assert verdicts(r)["download"] == "warn" and r.state == "ready-with-warnings"


def test_five_percent_loss_fails_the_media_path_and_lowers_the_predicted_mos() -> None:
    clean = evaluate(PROFILE, results())
    r = evaluate(PROFILE, results(media=udp(loss=0.05)))
    assert verdicts(r)["loss"] == "fail" and r.state == "not-ready"
    loss = next(c for c in r.criteria if c.id == "loss")
    assert loss.measured == 5.0 and "cabling" in loss.fix

    def mos(readiness: Any) -> float:
        return next(c.measured for c in readiness.criteria if c.id == "mos")
    # G.711 with concealment: 5 % random loss costs about 16 R (Ie,eff = 95*5/(5+25.1)).
    assert mos(clean) - mos(r) > 0.4


def test_blocked_udp_fails_and_falls_back_to_icmp_saying_so() -> None:
    r = evaluate(PROFILE, results(media=udp(reachable=False)))
    v = verdicts(r)
    assert v["udp"] == "fail" and r.state == "not-ready"
    rtt = next(c for c in r.criteria if c.id == "rtt")
    assert rtt.measured == 30.0 and rtt.verdict == "pass"
    assert "icmp-raw" in rtt.note and "UDP blocked" in rtt.note
    assert "UDP" in next(c for c in r.criteria if c.id == "udp").fix


def test_bufferbloat_fails_rtt_under_load() -> None:
    r = evaluate(PROFILE, results(bandwidth=link(95, 40, loaded_rtt_ms=450)))
    assert verdicts(r)["rtt_under_load"] == "fail"


def test_no_camera_fails_and_an_unreadable_count_is_unknown_not_zero() -> None:
    assert verdicts(evaluate(PROFILE, results(peripherals=kit(0))))["camera"] == "fail"
    r = evaluate(PROFILE, results(peripherals=kit(None)))
    assert verdicts(r)["camera"] == "unknown" and r.state == "unknown"


def test_a_check_that_failed_leaves_its_criteria_unknown_with_the_reason() -> None:
    r = evaluate(PROFILE, results(bandwidth=None), {"bandwidth": "timed out after 60 s"})
    down = next(c for c in r.criteria if c.id == "download")
    assert down.verdict == "unknown" and "timed out after 60 s" in down.note



def test_a_profile_call_judges_the_link_per_pc_by_the_platform_figures() -> None:
    inventory = load_inventory(REPO / "inventory.yml")
    profile = inventory.profiles["commune-standard"]
    call = inventory.call_of(profile)
    assert call is not None and (call.min_download_mbps, call.min_upload_mbps) == (4.2, 2.6)
    # An emulated 20 Mbit/s link measures about 19.1: short of the commune's 20 Mbit/s uplink
    # figure, but plenty for one PC in a city-bridge HD meeting.
    twenty = results(bandwidth=link(19.1, 19.1))
    assert verdicts(evaluate(profile, twenty))["download"] == "fail"
    on_call = evaluate(profile, twenty, call=call)
    link_ids = ("download", "upload", "udp", "rtt", "jitter", "loss", "rtt_under_load", "mos")
    assert {verdicts(on_call)[i] for i in link_ids} == {"pass"}
    thin = evaluate(profile, results(bandwidth=link(2, 1)), call=call)
    down = next(c for c in thin.criteria if c.id == "download")
    assert down.verdict == "fail" and "at least 4.2 Mbit/s download" in down.fix


def test_a_counter_pc_is_not_asked_for_a_camera_but_a_conference_pc_is() -> None:
    bare = results(peripherals=kit(0))
    counter = evaluate(PROFILE, bare, role="counter")
    assert "camera" not in verdicts(counter) and counter.state == "ready"
    assert verdicts(evaluate(PROFILE, bare, role="conference-room"))["camera"] == "fail"
    # No role set: the PC might be the conference PC, so it is judged as one.
    assert verdicts(evaluate(PROFILE, bare))["camera"] == "fail"


def pc(role: str | None, **changes: Any) -> HostResults:
    return HostResults(role, results(**changes))


def test_one_good_conference_pc_makes_the_ward_video_ready_whatever_the_counters_lack(
        ) -> None:
    ward = rollup(PROFILE, {"counter-01": pc("counter", peripherals=kit(0)),
                            "counter-02": pc("counter", peripherals=kit(0), media=udp(loss=0.05)),
                            "room-pc": pc("conference-room")})
    assert ward.state == "ready", ward.as_dict()
    assert ward.video_host == "room-pc"
    assert {c.host for c in ward.criteria if c.id not in ("hosts", "video_hosts")} == {"room-pc"}
    by_id = {c.id: c for c in ward.criteria}
    assert (by_id["hosts"].measured, by_id["hosts"].required) == (3.0, 2.0)
    assert (by_id["video_hosts"].measured, by_id["video_hosts"].required) == (1.0, 1.0)
    # Each PC keeps its own verdict: the lossy counter PC is not ready for its own use.
    assert ward.hosts["counter-02"].state == "not-ready"


def test_a_counter_pc_with_a_webcam_does_not_stand_in_for_the_conference_room() -> None:
    ward = rollup(PROFILE, {"counter-01": pc("counter"),
                            "room-pc": pc("conference-room", peripherals=kit(0))})
    assert ward.state == "not-ready" and ward.video_host == "room-pc"
    by_id = {c.id: c for c in ward.criteria}
    assert (by_id["camera"].verdict, by_id["camera"].host) == ("fail", "room-pc")
    assert by_id["camera"].fix == "connect a USB webcam"
    assert by_id["video_hosts"].verdict == "fail"


def test_the_best_of_two_conference_pcs_speaks_for_the_ward() -> None:
    ward = rollup(PROFILE, {"room-a": pc("conference-room", peripherals=kit(0)),
                            "room-b": pc("conference-room")})
    assert (ward.state, ward.video_host) == ("ready", "room-b")


def test_a_ward_whose_conference_pc_does_not_report_is_unknown_not_ready_or_short() -> None:
    ward = rollup(PROFILE, {"counter-01": pc("counter"), "counter-02": pc("counter")})
    assert ward.state == "unknown"
    by_id = {c.id: c for c in ward.criteria}
    assert by_id["hosts"].verdict == "pass"
    video = by_id["video_hosts"]
    assert video.verdict == "unknown"
    assert "no PC in role conference-room reports" in video.note
    assert {by_id[i].verdict for i in ("camera", "download", "mos")} == {"unknown"}


def test_a_ward_with_no_agent_is_unknown_and_says_so() -> None:
    ward = rollup(PROFILE, {})
    assert ward.state == "unknown" and not ward.hosts
    assert {c.verdict for c in ward.criteria} == {"unknown"}
    assert next(c for c in ward.criteria if c.id == "hosts").note == (
        "no agent reports from this ward")


def test_too_few_working_pcs_fail_the_ward() -> None:
    weak = host.collect().model_copy(update={"cpu_logical_cores": 1})
    ward = rollup(PROFILE, {"room-pc": pc("conference-room"), "old-pc": pc("counter", host=weak)})
    hosts = next(c for c in ward.criteria if c.id == "hosts")
    assert (hosts.measured, hosts.required, hosts.verdict) == (1.0, 2.0, "fail")
    assert ward.state == "not-ready" and "2 cores" in hosts.fix


def test_two_required_conference_pcs_count_ready_pending_and_failing_apart() -> None:
    two = PROFILE.model_copy(update={"video": PROFILE.video.model_copy(
        update={"min_ready_hosts": 2})})

    def video_hosts(**pcs: HostResults) -> str:
        ward = rollup(two, pcs)
        return next(c.verdict for c in ward.criteria if c.id == "video_hosts")
    ready, failing = pc("conference-room"), pc("conference-room", peripherals=kit(0))
    pending = pc("conference-room", peripherals=kit(None))  # camera count unreadable
    assert video_hosts(a=ready, b=ready) == "pass"
    assert video_hosts(a=ready, b=pending) == "unknown"
    assert video_hosts(a=ready, b=failing) == "fail"


def test_pcs_not_yet_measured_leave_the_count_unknown_until_they_could_not_matter() -> None:
    unmeasured = pc("counter", host=None)
    hosts_of = {"room-pc": pc("conference-room"), "counter-01": unmeasured}
    ward = rollup(PROFILE, hosts_of)  # needs 2 working PCs: 1 known, 1 not yet measured
    hosts = next(c for c in ward.criteria if c.id == "hosts")
    assert (hosts.measured, hosts.verdict) == (1.0, "unknown")
    assert hosts.note == "2 PCs reporting, 1 not yet measured"
    one = PROFILE.model_copy(update={"hosts": PROFILE.hosts.model_copy(update={"min_count": 1})})
    assert next(c for c in rollup(one, hosts_of).criteria if c.id == "hosts").verdict == "pass"
