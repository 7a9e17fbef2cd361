"""`wardready-agent check --json` on emulated ward links: the verdict a technician gets in
the ward for a clean link, a thin one, a lossy one and one whose firewall blocks UDP.

One WardLink (ward -- router -- city, lab/netlab.py) and one city server for the module,
reconfigured per scenario. Ward sai-gon's profile (ward-standard) names the call preset
city-bridge-hd, whose per-PC figures are what the check judges: 4.2 Mbit/s down, 2.6 up,
RTT <= 100 ms, jitter <= 30 ms, loss <= 1 %.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import fleet, netlab, stack
from tests.conftest import DATA, REPO
from wardready.core import emodel
from wardready.model.readiness import MOS_GOOD, MOS_POOR, at_most, show

pytestmark = pytest.mark.integration
WARD, HOST = "sai-gon", "bench-pc"
OFFICE = DATA / "peripherals" / "linux-office"  # a webcam, microphones, speakers
MEDIA_SECONDS = 3.0
MEDIA_RATE = 50.0  # the media check's default packet_rate
MEDIA_CRITERIA = ("udp", "rtt", "jitter", "loss")
SOURCE = "from the server (ward-standard)"


@dataclass
class Lab:
    link: netlab.WardLink
    token: Path
    workdir: Path


@dataclass
class Verdict:
    """What one `check --json` run printed, and its exit code."""

    exit_code: int
    body: dict[str, Any]
    stderr: str

    @property
    def by_id(self) -> dict[str, dict[str, Any]]:
        return {c["id"]: c for c in self.body["criteria"]}

    @property
    def failing(self) -> set[str]:
        return {c["id"] for c in self.body["criteria"] if c["verdict"] == "fail"}

    @property
    def text(self) -> str:
        """For assertion messages: the criteria one per line, the errors and the progress."""
        lines = [f"exit {self.exit_code}, state {self.body.get('state')}, "
                 f"errors {self.body.get('errors')}"]
        lines += [json.dumps(c) for c in self.body.get("criteria", [])]
        return "\n".join([*lines, self.stderr])


def lab_inventory(workdir: Path) -> Path:
    """The repo's inventory with ward-standard's host minimums lowered: this CI machine has
    2 cores, and these tests judge the link, not the machine."""
    inventory = yaml.safe_load((REPO / "inventory.yml").read_text())
    inventory["profiles"]["ward-standard"]["hosts"].update(
        min_cpu_cores=1, min_memory_gib=1, min_disk_free_gib=0)
    path = workdir / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    problem = netlab.require_netlab()
    if problem:
        pytest.skip(problem)
    workdir = tmp_path_factory.mktemp("check-links")
    with netlab.WardLink() as link:
        token = netlab.start_city_server(link, workdir, inventory=lab_inventory(workdir))
        yield Lab(link, token, workdir)


def check(lab: Lab, spec: netlab.LinkSpec, name: str,
          media_seconds: float = MEDIA_SECONDS) -> Verdict:
    """Put `spec` on the link and run `wardready-agent check --json` in the ward."""
    link = lab.link
    link.reconfigure(spec)
    config = fleet.write_agent_config(
        lab.workdir / name, f"http://{link.city_ip}:8470", WARD, HOST, lab.token.read_text(),
        checks={
            "peripherals": {"os": "linux", "sys_root": str(OFFICE / "sys"),
                            "proc_root": str(OFFICE / "proc"),
                            "lpstat_recorded": str(OFFICE / "lpstat-v.txt")},
            # icmp-raw, not auto: the notes of figures taken from latency name the method.
            "latency": {"targets": [link.city_ip], "count": 20, "probe_interval_seconds": 0.05,
                        "method": "icmp-raw"},
            "media": {"duration_seconds": media_seconds},
            "bandwidth": {"max_seconds": 10.0}})
    out = link.run(link.ward_ns, [stack.executable("wardready-agent"), "check", "--json",
                                  "--config", str(config)], timeout=120)
    try:
        body = json.loads(out.stdout)
    except ValueError:
        pytest.fail(f"check exited {out.returncode} without JSON:\n{out.stdout}\n{out.stderr}")
    verdict = Verdict(out.returncode, body, out.stderr)
    print(f"\n{spec}\n{verdict.text}")  # the figures, for `pytest -s`
    assert body["profile_source"].startswith(SOURCE), verdict.text
    assert body["errors"] == {}, verdict.text  # every check ran: the figures are findings
    return verdict


def test_a_clean_20_mbit_link_is_ready(lab: Lab) -> None:
    v = check(lab, netlab.LinkSpec(rate_mbit=20), "clean")
    assert v.exit_code == 0 and v.body["state"] in ("ready", "ready-with-warnings"), v.text
    assert not v.failing, v.text
    ceiling = netlab.goodput_ceiling_mbit(20)  # 19.13 Mbit/s
    for direction in ("download", "upload"):
        c = v.by_id[direction]
        assert c["verdict"] == "pass" and c["measured"] == pytest.approx(ceiling, rel=0.05), v.text
    for criterion in (*MEDIA_CRITERIA, "mos", "camera", "microphone", "speaker"):
        assert v.by_id[criterion]["verdict"] == "pass", v.text
    assert v.by_id["udp"]["measured"] == 1.0 and v.by_id["loss"]["measured"] == 0.0, v.text


def test_a_2_mbit_link_fails_bandwidth(lab: Lab) -> None:
    v = check(lab, netlab.LinkSpec(rate_mbit=2), "thin")
    assert v.exit_code == 1 and v.body["state"] == "not-ready", v.text
    for direction, required in (("download", 4.2), ("upload", 2.6)):
        c = v.by_id[direction]
        assert c["verdict"] == "fail" and c["measured"] < 2 and c["required"] == required, v.text
        assert f"provider for at least {required:g} Mbit/s {direction}" in c["fix"], v.text
    # The media path itself is fine: the UDP stream runs before the speed test loads the line.
    for criterion in (*MEDIA_CRITERIA, "mos"):
        assert v.by_id[criterion]["verdict"] == "pass", v.text
    # The saturated line's RTT is bounded by the router's queue: tbf's limit at 2 Mbit/s is
    # 16 frames, 97 ms, near the 100 ms limit. It read 78-85 ms (a pass or a warning), and a
    # full queue plus a frame in service could pass 100 ms: the verdict follows the figure.
    queue_ms = int(netlab.tbf_args(2)[5]) * 8 / 2e6 * 1e3
    loaded = v.by_id["rtt_under_load"]
    assert queue_ms / 2 < loaded["measured"] < queue_ms + 15, f"queue {queue_ms:.0f} ms\n{v.text}"
    assert loaded["verdict"] == at_most(loaded["measured"], 100), v.text
    assert v.failing <= {"download", "upload", "rtt_under_load"}, v.text


def test_5_percent_loss_fails_the_media_criteria(lab: Lab) -> None:
    # The loss figure is the worse direction's over the media stream. 10 s at 50 packets/s:
    # 500 probes put 4 standard deviations of a 5 % estimate at 4 points (sqrt(p/n), the
    # return direction seeing about 0.95 n); 3 s (150) would allow anything up to 12 %.
    seconds, p = 10.0, 0.05
    v = check(lab, netlab.LinkSpec(rate_mbit=20, loss_percent=5), "lossy", seconds)
    assert v.exit_code == 1 and v.body["state"] == "not-ready", v.text
    loss = v.by_id["loss"]
    assert loss["verdict"] == "fail" and loss["required"] == 1.0, v.text
    assert loss["fix"].startswith("check cabling"), v.text
    sigma = math.sqrt(p / (MEDIA_RATE * seconds)) * 100
    assert abs(loss["measured"] - 5.0) <= 4 * sigma, f"sigma {sigma:.2f}\n{v.text}"
    assert v.by_id["udp"]["verdict"] == "pass", v.text  # UDP still gets through
    # The E-model (G.711 with concealment) rates 5 % loss on a sub-millisecond path at
    # MOS 3.92, above 3.6: the call MOS passes while the loss criterion fails. Past ~8 %
    # measured it would warn; the verdict follows the E-model at the figures measured.
    assert emodel.predict(1.0, 1.0, 5.0).mos >= MOS_GOOD
    rtt, jitter = v.by_id["rtt"]["measured"], v.by_id["jitter"]["measured"]
    mos = v.by_id["mos"]
    expected = emodel.predict(rtt, jitter, loss["measured"]).mos
    assert mos["measured"] == pytest.approx(expected, abs=0.01), v.text
    assert mos["verdict"] == ("pass" if expected >= MOS_GOOD else
                              "warn" if expected >= MOS_POOR else "fail"), v.text
    # The call preset's window targets (Teams'): the 10 s run is one window, losing the
    # round trip's ~9.75 % (5 % each way) against 1 %; and of ~49 losses in 500 probes some
    # two fall within 200 ms (10 probes): 20 % against 10 %.
    assert v.failing == {"loss", "window_loss", "burst_loss"}, v.text
    assert v.by_id["window_loss"]["note"].startswith("the whole 10 s run ("), v.text


def test_blocked_udp_fails_the_media_path_and_says_so(lab: Lab) -> None:
    v = check(lab, netlab.LinkSpec(rate_mbit=20, block_udp=True), "no-udp")
    assert v.exit_code == 1 and v.body["state"] == "not-ready", v.text
    udp = v.by_id["udp"]
    assert udp["verdict"] == "fail" and udp["measured"] == 0.0, v.text
    assert show(udp["measured"], udp["unit"], "udp") == "blocked"
    assert "allow outgoing UDP" in udp["fix"], v.text
    # The path's figures come from the latency check's ICMP probes instead, and say so.
    for criterion in ("rtt", "jitter", "loss", "mos"):
        c = v.by_id[criterion]
        assert c["note"] == "from icmp-raw probes: UDP blocked", v.text
        assert c["verdict"] == "pass", v.text
    for direction in ("download", "upload"):
        assert v.by_id[direction]["verdict"] == "pass", v.text
    assert v.failing == {"udp"}, v.text
    # The router's rule dropped the media stream (at least every probe sent).
    rules = lab.link.run(lab.link.router_ns, ["nft", "list", "chain", "inet", netlab.NFT_TABLE,
                                              "forward"], timeout=10).stdout
    dropped = re.search(r"l4proto udp counter packets (\d+)", rules)
    assert dropped and int(dropped[1]) >= MEDIA_RATE * MEDIA_SECONDS, rules
