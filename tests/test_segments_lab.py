"""The weak segment named end to end, on a real path: a ward PC, the ward's router, the
provider's first hop and the city (lab/segmentlab.py), with one segment impaired at a time.

A real agent in the PC's namespace runs the `path` and `lasthop` checks once and delivers
its report to a real server in the city namespace; the server's verdict
(`wardready-server readiness --json`) and its equipment request list (`equipment-list
--format json`) must name the segment the test impaired, and only that one. The expected
segment comes from where the test put the impairment, never from the code's output:

- loss on the LAN only (pc -- router)        -> lan, a cable;
- loss past the provider's first hop only    -> uplink, loss beginning at the city hop;
- the PC's NIC forced to 10 Mbit/s half duplex (a real TAP whose speed the kernel reports,
  lab/slownic.py) -> pc, a network adapter;
- the router rewriting DSCP to 0             -> router, a setting;
- a clean path                               -> nothing.

Ward sai-gon (ward-standard: loss at most 1 %, a 50 Mbit/s link), host bench-pc.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import fleet, netlab, stack
from lab.segmentlab import SegmentLab, SegmentSpec, require_segmentlab
from lab.slownic import SlowNic
from tests.conftest import REPO
from wardready.server.store import Store

pytestmark = pytest.mark.integration
WARD, HOST = "sai-gon", "bench-pc"
LOSS_PERCENT = 20.0  # each direction: a third of the probes' round trips fail
PATH = {"count": 60, "probe_interval_seconds": 0.05, "probes_per_hop": 12, "max_hops": 6}
"""Enough probes to tell 20 % loss from none for sure: 60 to the gateway and the server,
12 at each hop (paced at a second per hop, under the routers' ICMP rate limit)."""


@dataclass
class Lab:
    segments: SegmentLab
    workdir: Path
    token: str


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    problem = require_segmentlab()
    if problem:
        pytest.skip(problem)
    workdir = tmp_path_factory.mktemp("segments")
    with SegmentLab() as segments:
        token = netlab.start_city_server(segments, workdir)
        yield Lab(segments, workdir, token.read_text())


def deliver_one_round(lab: Lab, name: str) -> None:
    """Run the agent in the PC's namespace until the server has stored its path and lasthop
    results (one round: every check runs once at start)."""
    seg = lab.segments
    workdir = lab.workdir / name
    config = fleet.write_agent_config(
        workdir, f"http://{seg.city_ip}:8470", WARD, HOST, lab.token, role="conference-room",
        checks={"host": {"enabled": False}, "lasthop": {"interval_seconds": 3600},
                "path": {**PATH, "interval_seconds": 3600, "timeout_seconds": 120}})
    before = time.time()
    log = (workdir / "agent.log").open("wb")
    agent = seg.popen(seg.pc_ns, [stack.executable("wardready-agent"), "run", "--config",
                                  str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        def stored() -> bool:
            with Store(lab.workdir / "city.db") as store:
                state = store.agent_states().get((WARD, HOST))
            return state is not None and all(
                c in state.outcomes and state.outcomes[c].started_at >= before
                for c in ("path", "lasthop"))
        deadline = time.monotonic() + 90
        while not stored():
            assert agent.poll() is None, (workdir / "agent.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (workdir / "agent.log").read_text()[-2000:]
            time.sleep(0.5)
    finally:
        agent.terminate()
        agent.wait(timeout=20)
        log.close()


def server_cli(lab: Lab, *argv: str) -> Any:
    out = subprocess.run([stack.executable("wardready-server"), *argv, "--config",
                          str(lab.workdir / "server.yml")], capture_output=True, text=True,
                         timeout=60, cwd=lab.workdir, check=True)
    return json.loads(out.stdout)


@dataclass
class Judged:
    segments: list[dict[str, Any]]
    lines: list[dict[str, Any]]

    @property
    def named(self) -> set[tuple[str, str]]:
        return {(f["segment"], f["reason"]) for f in self.segments}

    @property
    def segment_lines(self) -> list[dict[str, Any]]:
        return [x for x in self.lines if x["segment"]]

    def text(self) -> str:
        return json.dumps({"segments": self.segments, "lines": self.segment_lines}, indent=1)


def judge(lab: Lab, name: str) -> Judged:
    deliver_one_round(lab, name)
    verdict = server_cli(lab, "readiness", "--ward", WARD, "--json")[WARD]
    listed = server_cli(lab, "equipment-list", "--format", "json")
    lines = [x for x in listed["lines"] if x["ward"] == WARD]
    judged = Judged(verdict["segments"], lines)
    print(f"\n{name}: {judged.text()}")  # the evidence, for `pytest -s`
    return judged


def test_a_clean_path_names_no_segment(lab: Lab) -> None:
    lab.segments.reconfigure(SegmentSpec())
    judged = judge(lab, "clean")
    assert judged.segments == [] and judged.segment_lines == [], judged.text()


def test_loss_on_the_lan_only_is_the_lan_and_asks_for_a_cable(lab: Lab) -> None:
    lab.segments.reconfigure(SegmentSpec(lan_loss_percent=LOSS_PERCENT))
    try:
        judged = judge(lab, "lan-loss")
    finally:
        lab.segments.reconfigure(SegmentSpec())
    assert judged.named == {("lan", "lan-loss")}, judged.text()
    line, = judged.segment_lines
    assert line["segment"] == "lan" and line["item"] == "lan-drop", judged.text()
    assert "segment:lan-loss" in line["flags"] and lab.segments.gateway_ip in line["reason"]


def test_loss_past_the_providers_first_hop_is_the_uplink(lab: Lab) -> None:
    seg = lab.segments
    seg.reconfigure(SegmentSpec(core_loss_percent=LOSS_PERCENT))
    try:
        judged = judge(lab, "core-loss")
    finally:
        seg.reconfigure(SegmentSpec())
    assert judged.named == {("uplink", "core-loss")}, judged.text()
    line, = judged.segment_lines
    assert line["item"] == "link-upgrade" and line["segment"] == "uplink", judged.text()
    # The city is hop 3: loss begins there, past the provider's first hop (hop 2).
    assert f"past the provider's first hop, at hop 3 ({seg.city_ip})" in line["reason"]


def test_a_pc_nic_at_10_mbit_half_duplex_is_the_pc_and_asks_for_an_adapter(lab: Lab) -> None:
    seg = lab.segments
    # The relay needs wire-ready frames from the router: no checksum offload (lab/slownic.py).
    seg.run(seg.router_ns, ["ethtool", "-K", "lan", "tx", "off"], timeout=10, check=True)
    try:
        with SlowNic(seg.pc_ns, "eth0", f"{seg.pc_ip}/30", seg.gateway_ip, speed_mbit=10,
                     duplex="half") as nic:
            ethtool = nic.ethtool()
            assert "Speed: 10Mb/s" in ethtool and "Duplex: Half" in ethtool  # the kernel's
            judged = judge(lab, "slow-nic")
    finally:  # the PC's own veth again, as the lab built it
        for argv in (["ip", "link", "set", "eth0", "arp", "on"],
                     ["ip", "addr", "replace", f"{seg.pc_ip}/30", "dev", "eth0"],
                     ["ip", "route", "replace", "default", "via", seg.gateway_ip]):
            seg.run(seg.pc_ns, argv, timeout=10, check=True)
    assert judged.named == {("pc", "nic-speed"), ("pc", "nic-duplex")}, judged.text()
    items = {x["item"] for x in judged.segment_lines}
    assert items == {"nic-gbe", "network-fix"}, judged.text()
    adapter = next(x for x in judged.segment_lines if x["item"] == "nic-gbe")
    assert "runs at 10 Mbit/s" in adapter["reason"] and adapter["segment"] == "pc"


def test_a_router_that_rewrites_dscp_to_0_is_the_router(lab: Lab) -> None:
    seg = lab.segments
    seg.reconfigure(SegmentSpec(dscp_rewrite=0))
    try:
        judged = judge(lab, "dscp")
        rewritten = seg.dscp_rewritten()  # the kernel's count of packets the rule rewrote
    finally:
        seg.reconfigure(SegmentSpec())
    assert rewritten > 0
    assert judged.named == {("router", "dscp-cleared")}, judged.text()
    line, = judged.segment_lines
    assert line["segment"] == "router" and line["item"] == "network-fix"
    assert "sees DSCP 0" in line["reason"], judged.text()


def test_the_technician_sees_the_segment_on_the_spot(lab: Lab) -> None:
    """`wardready-agent check` names the weak segment under its verdict table."""
    seg = lab.segments
    seg.reconfigure(SegmentSpec(lan_loss_percent=LOSS_PERCENT))
    try:
        config = fleet.write_agent_config(
            lab.workdir / "on-the-spot", f"http://{seg.city_ip}:8470", WARD, HOST, lab.token,
            role="conference-room", checks={"host": {"enabled": False}, "path": PATH,
                                            "lasthop": {}})
        out = seg.run(seg.pc_ns, [stack.executable("wardready-agent"), "check", "--config",
                                  str(config)], timeout=120, cwd=REPO)
    finally:
        seg.reconfigure(SegmentSpec())
    print(out.stdout)  # the table, for `pytest -s`
    assert "Weak segments (what to fix):" in out.stdout, out.stdout + out.stderr
    assert "lan: bench-pc (conference-room PC) loses" in out.stdout, out.stdout
