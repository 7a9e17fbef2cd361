"""The path check (`checks/path.py`) in the segment lab (`lab/segmentlab.py`): one impairment
at a time, the expected values from the configured impairment and the kernel's counters.

The check runs as the agent would run it, inside the pc namespace (`python -m
wardready.checks path`), against the city's address; nothing listens there: the probes are
answered by the kernels of the routers and the city. The lab routers keep the kernel's
default ICMP rate limit (1 error a second per peer, a burst of 6), so the trace meets it as
on a real path.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from lab import REPO, netlab, segmentlab
from lab.segmentlab import SegmentLab, SegmentSpec
from tests.conftest import as_nobody, exposition, promtool_check_metrics, series
from wardready.checks import REGISTRY, path
from wardready.checks.base import Context
from wardready.checks.path import Config, Hop, Result
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.config import ServerConfig
from wardready.server.store import Store

Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Client]]
EF = 46
Z = 4.5
"""Binomial bounds at 4.5 standard deviations: a false failure about once in 150,000 runs."""


@pytest.fixture
def lab_ready() -> None:
    """Skip (a failure under CI=true) where namespaces cannot be built."""
    reason = segmentlab.require_segmentlab()
    if reason:
        pytest.skip(f"segment lab: {reason}")


@pytest.fixture
def lab(lab_ready: None) -> Iterator[SegmentLab]:
    with SegmentLab() as built:
        yield built


def run_path(lab: SegmentLab, config: dict[str, Any], *, nobody: bool = False) -> Result:
    """One run of the path check on the pc, toward the city; as nobody when asked."""
    argv = [sys.executable, "-m", "wardready.checks", "path", "--config", json.dumps(config),
            "--server", f"http://{lab.city_ip}:8470"]
    c = Config.model_validate(config)
    timeout = path.span_seconds(c, "udp") + c.probe_timeout_seconds + 30
    out = lab.run(lab.pc_ns, as_nobody(argv) if nobody else argv, timeout=timeout, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return Result.model_validate_json(out.stdout)


def round_trip(percent: float) -> float:
    """Loss of a probe whose request and answer each cross the lossy segment once."""
    p = percent / 100
    return 1 - (1 - p) ** 2


def within_binomial(lost: int, sent: int, q: float) -> bool:
    """`lost` of `sent` is a plausible draw at loss probability `q` (Z standard deviations,
    plus one probe for the discreteness)."""
    return abs(lost / sent - q) <= Z * math.sqrt(q * (1 - q) / sent) + 1 / sent


def addresses(result: Result) -> list[str | None]:
    return [h.address for h in result.hops]


# -- Pure parts: the route table, the reading rule -----------------------------------------

# /proc/net/route as Linux prints it (net/ipv4/fib_trie.c, fib_route_seq_show): addresses
# in host byte order of a little-endian machine, hence "0101A8C0" for 192.168.1.1.
ROUTE_TABLE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wg0\t0000000A\t0100320A\t0003\t0\t0\t50\t000000FF\t0\t0\t0
wg1\t0000000A\t0100330A\t0003\t0\t0\t10\t000000FF\t0\t0\t0
tun0\t0000140A\t0100340A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0
down0\t0000A8C0\t0100A8C0\t0002\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(ROUTE_TABLE)
    return tmp_path


@pytest.mark.parametrize(("address", "gateway", "note"), [
    ("203.0.113.7", "192.168.1.1", ""),  # only the default route matches
    ("10.9.9.9", "10.51.0.1", ""),  # two /8s: the lower metric wins
    ("10.20.0.5", "10.52.0.1", ""),  # the /24 beats the /8s and the default
    ("192.168.1.40", None, "192.168.1.40 is on the local link: no gateway"),
    ("192.168.7.7", "192.168.1.1", ""),  # the /16 is not up: the default
    ("127.0.0.1", None, "127.0.0.1 is this machine: no gateway"),  # the local table's
])
def test_the_gateway_is_the_longest_prefix_route_toward_the_server(
        proc_root: Path, address: str, gateway: str | None, note: str) -> None:
    assert path.route_gateway(address, proc_root) == (gateway, note)


def test_no_route_is_said_as_such(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(ROUTE_TABLE.splitlines()[0] + "\n")
    assert path.route_gateway("10.0.0.1", tmp_path) == (None, "no route to 10.0.0.1")


def hop(ttl: int, lost: int, address: str | None = "x", sent: int = 10) -> Hop:
    return Hop(ttl=ttl, address=address, sent=sent, lost=lost, loss_ratio=lost / sent,
               rtt_median_seconds=0.001, received_dscp=None)


@pytest.mark.parametrize(("losses", "start"), [
    ([0, 0, 0, 0], None),
    ([0, 3, 0, 0], None),  # loss at hop 2 that does not carry on: its rate limit
    ([0, 3, 0, 2], 4),
    ([2, 4, 1, 2], 1),
    ([0, 5, 2, 3], 2),
    ([0, 0, 0, 3], 4),
])
def test_loss_starts_where_it_persists_to_the_destination(
        losses: list[int], start: int | None) -> None:
    hops = [hop(t, lost) for t, lost in enumerate(losses, 1)]
    assert path.loss_start(hops, reached=True) == start


def test_a_hop_that_never_answers_neither_starts_nor_stops_the_loss() -> None:
    hops = [hop(1, 0), hop(2, 3), hop(3, 10, address=None), hop(4, 2)]
    assert path.loss_start(hops, reached=True) == 2
    assert path.loss_start(hops, reached=False) is None


def test_bad_settings_are_one_line_naming_the_key() -> None:
    for bad, key in [({"dscp": 64}, "dscp"), ({"method": "tcp"}, "method"),
                     ({"max_hops": 33}, "max_hops"), ({"count": 0}, "count"),
                     ({"target": "a b"}, "target")]:
        with pytest.raises(ValidationError) as info:
            Config.model_validate(bad)
        assert info.value.errors()[0]["loc"] == (key,)
    with pytest.raises(ValidationError, match="round_interval_seconds"):
        Config(hop_spacing_seconds=0.2, round_interval_seconds=1.0)
    with pytest.raises(ValidationError, match="more than timeout_seconds"):
        Config(count=100, timeout_seconds=30)
    out = subprocess.run([sys.executable, "-m", "wardready.checks", "path", "--config",
                          '{"probes_per_hop": 0}'], capture_output=True, text=True,
                         check=False, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "python -m wardready.checks: --config: probes_per_hop: "
        "Input should be greater than or equal to 1"]


def test_no_server_and_no_target_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no target configured"):
        asyncio.run(path.run(Config(), Context()))


async def test_on_windows_the_gateway_is_unknown_and_the_result_says_so(
        lab_ready: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """No route table to read there yet: the gateway is left out as data, the rest runs (here
    on this Linux machine's loopback, the platform name patched)."""
    monkeypatch.setattr(path.sys, "platform", "win32")
    result = await path.run(Config(target="127.0.0.1", method="icmp", count=2, probes_per_hop=1,
                                   probe_interval_seconds=0.05), Context())
    assert result.note == "gateway unknown on Windows: not supported yet"
    assert result.gateway == path.Target(address=None, method=None, sent=0, lost=0,
                                         loss_ratio=None, rtt_median_seconds=None,
                                         rtt_p95_seconds=None, jitter_seconds=None)
    assert (result.server.sent, result.server.lost, result.reached) == (2, 0, True)
    assert ("wardready_path_loss_ratio", ("gateway",)) not in series(path.samples(result))


# -- The lab -------------------------------------------------------------------------------

QUICK = {"probes_per_hop": 3, "count": 3, "probe_interval_seconds": 0.2,
         "round_interval_seconds": 1.0, "hop_spacing_seconds": 0.02,
         "probe_timeout_seconds": 1.0}
"""A short run: one round a second, as routers allow; few probes."""
TRACE = {**QUICK, "probes_per_hop": 25, "count": 200, "probe_interval_seconds": 0.02}
"""Enough trace probes that a hop behind a lossy segment all but surely loses one (20 %
each way loses 36 % round trip: a hop keeps all 25 with odds 0.64^25, about 1 in 70,000;
with 15, 1 in 800, and CI once saw it), and enough echo probes to compare the gateway's
loss with the server's."""


def assert_clean(result: Result, lab: SegmentLab, method: str) -> None:
    assert result.method == method
    assert addresses(result) == [lab.gateway_ip, lab.provider_ip, lab.city_ip]
    assert result.reached and result.loss_start_hop is None
    assert [h.lost for h in result.hops] == [0, 0, 0]
    assert result.gateway.address == lab.gateway_ip and result.server.address == lab.city_ip
    for target in (result.gateway, result.server):
        assert target.method == method and target.lost == 0 and target.loss_ratio == 0
        assert target.rtt_median_seconds is not None and target.rtt_median_seconds < 0.1
    assert result.note == ""


def test_a_clean_path_by_icmp_names_every_hop(lab: SegmentLab) -> None:
    result = run_path(lab, {**QUICK, "method": "icmp"})
    assert_clean(result, lab, "icmp")
    # Raw mode reads the headers the hops quote: both routers saw EF; the city's echo
    # replies quote nothing.
    assert [h.received_dscp for h in result.hops] == [EF, EF, None]
    assert result.dscp_sent == EF and result.dscp_changed_at_hop is None
    got = series(path.samples(result))
    assert got[("wardready_path_hops", ())] == 3
    assert got[("wardready_path_reached", ())] == 1
    assert got[("wardready_path_loss_ratio", ("server",))] == 0
    assert ("wardready_path_loss_start_hop", ()) not in got
    assert {labels for name, labels in got if name == "wardready_path_hop_loss_ratio"} == {
        ("1",), ("2",), ("3",)}


def test_a_clean_path_by_udp_as_root(lab: SegmentLab) -> None:
    result = run_path(lab, {**QUICK, "method": "udp"})
    assert_clean(result, lab, "udp")
    assert [h.received_dscp for h in result.hops] == [None, None, None]


def test_auto_falls_back_to_udp_for_an_unprivileged_user(lab: SegmentLab) -> None:
    # A fresh namespace's ping_group_range is "1 0": no ICMP socket for anyone but root.
    result = run_path(lab, {**QUICK, "method": "auto"}, nobody=True)
    assert_clean(result, lab, "udp")


def test_an_unprivileged_ping_socket_is_icmp_without_the_quoted_dscp(lab: SegmentLab) -> None:
    lab.run(lab.pc_ns, ["tee", "/proc/sys/net/ipv4/ping_group_range"], input="0 2147483647\n",
            timeout=10, check=True)
    result = run_path(lab, {**QUICK, "method": "auto"}, nobody=True)
    assert_clean(result, lab, "icmp")
    # The datagram socket's error queue gives our echo header back, not the IP header.
    assert [h.received_dscp for h in result.hops] == [None, None, None]


def test_lan_loss_shows_at_the_gateway_as_at_the_server_and_starts_at_hop_1(
        lab: SegmentLab) -> None:
    percent = 20.0
    lab.reconfigure(SegmentSpec(lan_loss_percent=percent))
    result = run_path(lab, {**TRACE, "method": "icmp"})
    q = round_trip(percent)
    gw, server = result.gateway, result.server
    assert gw.sent == server.sent == TRACE["count"]
    assert within_binomial(gw.lost, gw.sent, q), gw
    assert within_binomial(server.lost, server.sent, q), server
    # Two independent draws at q: their difference within Z standard deviations.
    assert abs(gw.lost - server.lost) / gw.sent <= Z * math.sqrt(2 * q * (1 - q) / gw.sent)
    assert addresses(result) == [lab.gateway_ip, lab.provider_ip, lab.city_ip]
    assert all(h.lost > 0 for h in result.hops), result.hops
    assert result.loss_start_hop == 1
    assert lab.loss_drops() > 0


def test_loss_past_the_providers_first_hop_starts_at_the_city(lab: SegmentLab) -> None:
    percent = 20.0
    lab.reconfigure(SegmentSpec(core_loss_percent=percent))
    result = run_path(lab, {**TRACE, "method": "icmp"})
    assert result.gateway.lost == 0
    assert within_binomial(result.server.lost, result.server.sent, round_trip(percent))
    assert [h.lost == 0 for h in result.hops] == [True, True, False]
    assert result.loss_start_hop == 3


def test_access_loss_starts_at_the_providers_hop(lab: SegmentLab) -> None:
    percent = 20.0
    lab.reconfigure(SegmentSpec(access_loss_percent=percent))
    result = run_path(lab, {**TRACE, "method": "icmp"})
    assert result.gateway.lost == 0
    assert within_binomial(result.server.lost, result.server.sent, round_trip(percent))
    assert [h.lost == 0 for h in result.hops] == [True, False, False]
    assert result.loss_start_hop == 2


def test_a_routers_icmp_rate_limit_is_not_read_as_loss(lab: SegmentLab) -> None:
    # Ten rounds a second: both routers answer a burst of 6, then about one a second (their
    # kernel's icmp_ratelimit); the city's echo replies are not rate-limited.
    config = {**QUICK, "method": "icmp", "probes_per_hop": 30, "round_interval_seconds": 0.1,
              "hop_spacing_seconds": 0.001, "count": 1}
    result = run_path(lab, config)
    routers, city = result.hops[:2], result.hops[2]
    span = 29 * 0.1
    for h in routers:  # at most the burst and one a second more were answered
        assert h.lost > 0 and h.sent - h.lost <= 6 + math.ceil(span) + 1, h
    assert city.address == lab.city_ip and city.lost == 0
    assert result.loss_start_hop is None


def test_a_router_that_rewrites_dscp_is_found_by_the_next_hop(lab: SegmentLab) -> None:
    lab.reconfigure(SegmentSpec(dscp_rewrite=0))
    result = run_path(lab, {**QUICK, "method": "icmp"})
    # The router quotes what it received (EF): the TTL ran out before its forward hook
    # rewrote it; the provider quotes what the router forwarded.
    assert [h.received_dscp for h in result.hops] == [EF, 0, None]
    assert result.dscp_changed_at_hop == 2
    assert lab.dscp_rewritten() > 0
    got = series(path.samples(result))
    assert got[("wardready_path_dscp_changed_at_hop", ())] == 2


@pytest.mark.parametrize("method", ["icmp", "udp"])
def test_one_run_costs_what_it_counts_and_no_more_than_the_config_allows(
        lab: SegmentLab, method: str) -> None:
    """The bound: 2 x count echo probes (gateway and server) and probes_per_hop x max_hops
    trace probes, each a 60-byte IPv4 packet (20 IP + 8 ICMP or UDP + 32 payload): at the
    defaults 2 x 10 + 10 x 16 = 180 packets, 10,800 bytes. A trace stops climbing at the
    server, so on this 3-hop path the run costs 2 x 10 + 10 x 3 = 50 packets, 3,000 bytes
    (plus any probe the first round sent past the server before its answer came)."""
    config = Config(method=method)  # type: ignore[arg-type]
    before = lab.pc_sent()
    result = run_path(lab, config.model_dump(mode="json"))
    after = lab.pc_sent()
    packets, size = (after["all"][i] - before["all"][i] for i in (0, 1))
    protocol = "icmp" if method == "icmp" else "udp"
    assert (after[protocol][0] - before[protocol][0], packets) == (packets, packets)
    assert (packets, size) == (result.packets_sent, result.bytes_sent)
    bound = path.cost_bound(config)
    assert bound == (180, 10_800)
    assert packets <= bound[0] and size <= bound[1]
    assert packets == 2 * config.count + config.probes_per_hop * 3
    assert_clean(result, lab, method)


def test_a_changed_route_is_a_changed_path_hop(lab: SegmentLab) -> None:
    first = run_path(lab, {**QUICK, "method": "icmp"})
    lab.reconfigure(SegmentSpec(access_link="backup"))
    second = run_path(lab, {**QUICK, "method": "icmp"})
    assert addresses(first) == [lab.gateway_ip, lab.provider_ip, lab.city_ip]
    assert addresses(second) == [lab.gateway_ip, lab.provider_backup_ip, lab.city_ip]
    before, after = (
        {item.key: dict(item.facts) for item in path.inventory(r)["path-hop"]}
        for r in (first, second))
    assert before["2"] != after["2"] and before["1"] == after["1"] and before["3"] == after["3"]
    assert after["2"] == {"address": lab.provider_backup_ip}
    PATHS.extend([first, second])


PATHS: list[Result] = []
"""The two results of the route change, for the server's history below (same module)."""


def path_report(started_at: float, result: Result) -> dict[str, Any]:
    outcome = {"check": "path", "started_at": started_at, "duration_seconds": 5.0, "ok": True,
               "result": result.model_dump(mode="json")}
    return {"schema_version": 1, "id": str(uuid.uuid4()), "ward": "sai-gon",
            "host": "counter-01", "agent_version": "test", "generated_at": started_at,
            "outcomes": [outcome]}


async def test_the_server_records_when_the_path_changed(
        lab_ready: None, aiohttp_client: MakeClient, config: ServerConfig) -> None:
    if len(PATHS) != 2:  # run alone: measure the two paths here
        with SegmentLab() as lab:
            PATHS.append(run_path(lab, {**QUICK, "method": "icmp"}))
            lab.reconfigure(SegmentSpec(access_link="backup"))
            PATHS.append(run_path(lab, {**QUICK, "method": "icmp"}))
    first, second = PATHS[-2:]
    store = Store(config.database)
    agent = {"Authorization": f"Bearer {store.issue_token('sai-gon', 'counter-01')}"}
    admin = {"Authorization": f"Bearer {store.issue_admin_token('ops')}"}
    store.close()
    client = await aiohttp_client(create_app(config, load_inventory(config.inventory)))
    now = time.time()
    unreached = second.model_copy(update={"reached": False, "hops": second.hops[:1]})
    for started, result in [(now - 300, first), (now - 200, unreached), (now - 100, second)]:
        resp = await client.post("/api/v1/reports", json=path_report(started, result),
                                 headers=agent)
        assert resp.status == 201, await resp.text()
    resp = await client.get("/api/v1/assets/changes", params={"ward": "sai-gon"},
                            headers=admin)
    assert resp.status == 200, await resp.text()
    changes = [(c["change"], c["kind"], c["key"], c["before"], c["after"])
               for c in (await resp.json())["changes"]]
    assert [c[:3] for c in changes if c[0] != "added"] == [("changed", "path-hop", "2")]
    (_, _, _, was, now_is), = (c for c in changes if c[0] == "changed")
    assert (was, now_is) == ({"address": first.hops[1].address},
                             {"address": second.hops[1].address})
    # The trace that did not reach the server removed nothing.
    assert sorted(c[2] for c in changes if c[0] == "added") == ["1", "2", "3"]


def test_a_server_no_router_can_reach_is_lost_not_answered_by_the_routers(
        lab: SegmentLab) -> None:
    # An address of the lab's own /24 that no namespace holds: the provider has no route
    # to it and answers "net unreachable", which is no answer from the server.
    nowhere = lab.city_ip.rsplit(".", 1)[0] + ".100"
    for method in ("icmp", "udp"):
        result = run_path(lab, {**QUICK, "method": method, "target": nowhere, "max_hops": 4,
                                "count": 2})
        assert result.server.address == nowhere
        assert (result.server.sent, result.server.lost) == (2, 2)
        assert result.gateway.lost == 0 and not result.reached
        assert result.hops[0].address == lab.gateway_ip
        assert result.loss_start_hop is None
        assert f"did not reach {nowhere}" in result.note
        assert path.inventory(result) == {}


def test_the_metrics_pass_promtool(lab: SegmentLab) -> None:
    lab.reconfigure(SegmentSpec(core_loss_percent=50, dscp_rewrite=0))
    result = run_path(lab, {**QUICK, "method": "icmp"})
    assert promtool_check_metrics(exposition(path.METRICS, path.samples(result))) == ""


@pytest.mark.parametrize("download", [False, True])
def test_the_lab_shapes_the_pcs_own_link_both_ways(lab: SegmentLab, download: bool) -> None:
    """tbf at 10 Mbit/s on the pc's egress and the router's LAN egress: iperf3's TCP goodput
    reaches the ceiling rate x 1448/1514 (lab/netlab.py, goodput_ceiling_mbit) either way."""
    rate = 10.0
    lab.reconfigure(SegmentSpec(pc_rate_mbit=rate))
    server = lab.popen(lab.city_ns, ["iperf3", "-s", "-1", "-B", lab.city_ip, "-p", "5201"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(250):  # up to 5 s for it to listen
        if lab.run(lab.city_ns, ["ss", "-Hltn", "sport = :5201"], timeout=5).stdout.strip():
            break
        time.sleep(0.02)
    out = lab.run(lab.pc_ns, ["iperf3", "-c", lab.city_ip, "-p", "5201", "-t", "4", "-O", "1",
                              "-J", *(["-R"] if download else [])], timeout=40)
    server.wait(timeout=10)
    mbit = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    assert mbit == pytest.approx(netlab.goodput_ceiling_mbit(rate), rel=0.05)


def test_the_check_is_registered_with_its_inventory() -> None:
    spec = REGISTRY["path"]
    assert spec.inventory is path.inventory and not spec.isolated
    assert spec.config_model().interval_seconds == 300
