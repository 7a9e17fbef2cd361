"""The neighbours check: which addresses a sweep covers, vendor and kind, the OS neighbour
tables from fixtures, and a real ARP sweep of an emulated office LAN (namespaces on a bridge)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lab.lanlab import Host, Lan, require_lanlab
from tests.conftest import DATA, REPO, as_nobody, exposition, promtool_check_metrics
from wardready.checks import neighbours
from wardready.checks.base import Context
from wardready.core.errors import QueryFailed

FIXTURES = DATA / "neighbours"
IP4 = ipaddress.IPv4Address
NET4 = ipaddress.IPv4Network


def hosts_of(network: NET4) -> list[int]:
    """Every host address of `network` as integers, the slow obvious way."""
    if network.prefixlen >= 31:
        return list(range(int(network.network_address), int(network.broadcast_address) + 1))
    return [int(a) for a in network.hosts()]


# --- which addresses a sweep covers -----------------------------------------------------------

def test_a_slash24_is_swept_whole_but_for_own_network_and_broadcast() -> None:
    targets, truncated = neighbours.sweep_targets(IP4("192.168.1.100"),
                                                  NET4("192.168.1.0/24"), 1024)
    assert not truncated
    assert len(targets) == 253
    assert targets == sorted(targets)
    assert {IP4("192.168.1.0"), IP4("192.168.1.100"), IP4("192.168.1.255")}.isdisjoint(targets)
    assert targets[0] == IP4("192.168.1.1") and targets[-1] == IP4("192.168.1.254")


@pytest.mark.parametrize("own", ["10.1.200.7", "10.1.0.3", "10.1.255.250"])
def test_a_slash16_is_swept_only_over_the_nearest_max_addresses(own: str) -> None:
    network = NET4("10.1.0.0/16")
    targets, truncated = neighbours.sweep_targets(IP4(own), network, 1024)
    assert truncated
    assert len(targets) == len(set(targets)) == 1024
    assert all(t in network for t in targets)
    assert {network.network_address, network.broadcast_address, IP4(own)}.isdisjoint(targets)
    me = int(IP4(own))
    nearest = sorted((h for h in hosts_of(network) if h != me), key=lambda h: (abs(h - me), h))
    assert [int(t) for t in targets] == sorted(nearest[:1024])


@pytest.mark.parametrize(("own", "network", "expected"), [
    ("10.0.0.1", "10.0.0.0/30", ["10.0.0.2"]),
    ("10.0.0.0", "10.0.0.0/31", ["10.0.0.1"]),  # RFC 3021: no network or broadcast address
    ("10.0.0.1", "10.0.0.1/32", []),
])
def test_tiny_subnets(own: str, network: str, expected: list[str]) -> None:
    targets, truncated = neighbours.sweep_targets(IP4(own), NET4(network), 1024)
    assert [str(t) for t in targets] == expected and not truncated


@settings(max_examples=60, deadline=None)
@given(prefix=st.integers(min_value=20, max_value=32), offset=st.integers(min_value=0),
       limit=st.integers(min_value=1, max_value=5000))
def test_sweep_targets_are_the_nearest_hosts_of_the_subnet(prefix: int, offset: int,
                                                           limit: int) -> None:
    network = NET4(f"172.16.0.0/{prefix}")
    hosts = hosts_of(network)
    own = IP4(hosts[offset % len(hosts)])
    targets, truncated = neighbours.sweep_targets(own, network, limit)
    others = [h for h in hosts if h != int(own)]
    nearest = sorted(others, key=lambda h: (abs(h - int(own)), h))[:limit]
    assert [int(t) for t in targets] == sorted(nearest)
    assert truncated == (len(others) > limit)


def fake_psutil(monkeypatch: pytest.MonkeyPatch, addrs: dict[str, list[tuple[int, str, str]]],
                stats: dict[str, tuple[bool, str]]) -> None:
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {
        name: [SimpleNamespace(family=f, address=a, netmask=m or None) for f, a, m in entries]
        for name, entries in addrs.items()})
    monkeypatch.setattr(psutil, "net_if_stats", lambda: {
        name: SimpleNamespace(isup=up, flags=flags) for name, (up, flags) in stats.items()})


def test_local_networks_are_the_up_non_loopback_ipv4_subnets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    link, inet = psutil.AF_LINK, socket.AF_INET
    fake_psutil(monkeypatch, {
        "lo": [(link, "00:00:00:00:00:00", ""), (inet, "127.0.0.1", "255.0.0.0")],
        "eth0": [(link, "00:1e:67:12:34:56", ""), (inet, "192.168.1.10", "255.255.255.0"),
                 (inet, "192.168.1.11", "255.255.255.0"), (inet, "10.5.0.2", "255.255.0.0")],
        "docker0": [(link, "02:42:ac:11:00:01", ""), (inet, "172.17.0.1", "255.255.0.0")],
        "tun0": [(inet, "10.8.0.6", "255.255.255.0")],
        "wlan0": [(link, "f0:18:98:12:34:56", ""), (inet, "169.254.7.9", "255.255.0.0")],
    }, {
        "lo": (True, "up,loopback,running"), "eth0": (True, "up,broadcast,running,multicast"),
        "docker0": (False, "up,broadcast,multicast"), "tun0": (True, "up,pointopoint,running"),
        "wlan0": (True, "up,broadcast,running,multicast"),
    })
    found, missing = neighbours.local_networks()
    # one sweep per subnet (.11 shares .10's); no loopback, down, MAC-less or link-local one
    assert [(n.interface, n.mac, str(n.address), str(n.network)) for n in found] == [
        ("eth0", "00:1e:67:12:34:56", "192.168.1.10", "192.168.1.0/24"),
        ("eth0", "00:1e:67:12:34:56", "10.5.0.2", "10.5.0.0/16"),
    ]
    assert missing == []
    found, missing = neighbours.local_networks(["docker0", "eth0", "nope"])
    assert {n.interface for n in found} == {"eth0"}
    assert missing == ["docker0", "nope"]


# --- MACs, vendors and kinds ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("00-1B-A9-12-34-56", "00:1b:a9:12:34:56"),
    ("00:1b:a9:12:34:56", "00:1b:a9:12:34:56"),
    ("001b.a912.3456", "00:1b:a9:12:34:56"),
    ("001BA9123456", "00:1b:a9:12:34:56"),
    ("00-00-00-00-00-00", None),
    ("FF-FF-FF-FF-FF-FF", None),
    ("01-00-5E-7F-FF-FA", None),
    ("", None),
    ("00:1b:a9:12:34", None),
    ("zz:1b:a9:12:34:56", None),
])
def test_normalise_mac(text: str, expected: str | None) -> None:
    assert neighbours.normalise_mac(text) == expected


@pytest.mark.parametrize(("mac", "word"), [
    ("00:00:85:12:34:56", "canon"),
    ("44:19:b6:12:34:56", "hikvision"),
    ("F0-18-98-12-34-56", "apple"),
    ("64:d1:54:00:00:01", "routerboard"),
])
def test_vendor_from_the_ieee_registry(mac: str, word: str) -> None:
    name = neighbours.vendor(mac)
    assert name is not None and word in name.lower()


@pytest.mark.parametrize("mac", [
    "02:00:5e:12:34:56",  # locally administered
    "6a:3f:12:9c:44:01",  # a phone's private address
    "48:ea:62:00:00:00",  # an unregistered prefix
    "not a mac",
])
def test_no_vendor(mac: str) -> None:
    assert neighbours.vendor(mac) is None


@pytest.mark.parametrize(("vendor", "ports", "expected"), [
    ("CANON INC.", [], ("printer", "vendor")),
    ("Seiko Epson Corporation", [], ("printer", "vendor")),
    ("Zhejiang Dahua Technology Co., Ltd.", [], ("ip-camera", "vendor")),
    ("Huawei Device Co., Ltd.", [], ("phone", "vendor")),
    ("TP-LINK TECHNOLOGIES CO.,LTD.", [], ("network", "vendor")),
    ("Aruba, a Hewlett Packard Enterprise Company", [], ("network", "vendor")),
    ("Hewlett Packard", [], ("unknown", None)),  # printers, PCs and switches alike
    ("HUAWEI TECHNOLOGIES CO.,LTD", [], ("unknown", None)),
    ("Jiangsu Toppower Automotive Electronics Co., Ltd", [], ("unknown", None)),  # not Oppo
    ("SINDORICOH", [], ("unknown", None)),  # whole words only
    ("Hewlett Packard", [9100], ("printer", "port")),
    (None, [631], ("printer", "port")),
    (None, [554], ("ip-camera", "port")),
    ("Apple, Inc.", [554, 515], ("printer", "port")),  # ports beat the vendor
    (None, [], ("unknown", None)),
])
def test_kind(vendor: str | None, ports: list[int], expected: tuple[str, str | None]) -> None:
    assert neighbours.kind_of(vendor, ports) == expected


# --- the OS neighbour tables from fixtures ----------------------------------------------------

def run_check(**config: Any) -> neighbours.Result:
    return asyncio.run(neighbours.run(neighbours.Config(**config), Context()))


def from_windows(recording: Path, **config: Any) -> neighbours.Result:
    """A run reading Windows' table from `recording` (no port probe: fixture addresses must
    see no traffic)."""
    return run_check(os="windows", windows_recorded=str(recording), probe_ports=False,
                     method="neighbour-table", **config)


def summary(result: neighbours.Result) -> list[tuple[str, str, str | None, str, str | None]]:
    return [(n.ip, n.mac, n.interface, n.kind, n.kind_from) for n in result.neighbours]


def test_linux_proc_net_arp(monkeypatch: pytest.MonkeyPatch) -> None:
    # auto without the right to send ARP reads the table; no port probe: fixture addresses
    # must see no traffic
    monkeypatch.setattr(neighbours, "can_sweep", lambda: False)
    result = run_check(os="linux", proc_root=str(FIXTURES / "linux"), probe_ports=False)
    assert result.method == "neighbour-table" and result.networks == []
    assert summary(result) == [
        ("172.17.0.2", "02:42:ac:11:00:02", "docker0", "unknown", None),
        ("192.168.10.1", "50:c7:bf:11:22:33", "eth0", "network", "vendor"),
        ("192.168.10.23", "00:1b:a9:12:34:56", "eth0", "printer", "vendor"),
        ("192.168.10.50", "44:19:b6:0a:0b:0c", "eth0", "ip-camera", "vendor"),
        ("192.168.10.77", "6a:3f:12:9c:44:01", "eth0", "unknown", None),
    ]
    assert result.counts == {"printer": 1, "ip-camera": 1, "phone": 0, "network": 1,
                             "unknown": 2}
    assert not result.truncated
    assert neighbours.inventory(result) == {}  # a table is no census: nothing is removed
    only_eth0 = run_check(os="linux", proc_root=str(FIXTURES / "linux"), probe_ports=False,
                          method="neighbour-table", interfaces=["eth0"])
    assert {n.interface for n in only_eth0.neighbours} == {"eth0"}


@pytest.mark.parametrize("version", ["windows-ps51", "windows-ps7"])
def test_windows_get_netneighbor(version: str) -> None:
    result = from_windows(FIXTURES / version)
    assert result.method == "neighbour-table"
    assert summary(result) == [
        ("192.168.1.1", "50:c7:bf:11:22:33", "Ethernet", "network", "vendor"),
        ("192.168.1.23", "00:1b:a9:12:34:56", "Ethernet", "printer", "vendor"),
        ("192.168.1.60", "f0:18:98:aa:bb:cc", "Ethernet", "phone", "vendor"),
        ("192.168.56.101", "08:00:27:3a:4b:5c", "Ethernet 2", "unknown", None),
    ]
    second = from_windows(FIXTURES / version, interfaces=["Ethernet 2"])
    assert [n.ip for n in second.neighbours] == ["192.168.56.101"]


def test_a_missing_recording_fails_the_run_rather_than_counting_zero(tmp_path: Path) -> None:
    with pytest.raises(QueryFailed):
        from_windows(tmp_path)


def test_arp_sweep_without_the_right_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours, "can_sweep", lambda: False)
    with pytest.raises(PermissionError, match="CAP_NET_RAW"):
        run_check(method="arp-sweep")


def test_a_failed_subnet_is_reported_and_the_others_stand(
        monkeypatch: pytest.MonkeyPatch) -> None:
    nets = [neighbours.LocalNetwork("eth0", "00:1e:67:00:00:01", IP4("192.168.1.10"),
                                    NET4("192.168.1.0/24")),
            neighbours.LocalNetwork("eth1", "00:1e:67:00:00:02", IP4("10.9.0.10"),
                                    NET4("10.9.0.0/24"))]

    def sweep(net: neighbours.LocalNetwork, *_: Any) -> list[neighbours.Seen]:
        if net.interface == "eth1":
            raise OSError(19, "No such device")
        return [neighbours.Seen("192.168.1.1", "50:c7:bf:11:22:33", "eth0")]

    monkeypatch.setattr(neighbours, "can_sweep", lambda: True)
    monkeypatch.setattr(neighbours, "local_networks", lambda names: (nets, []))
    monkeypatch.setattr(neighbours, "arp_sweep", sweep)
    result = run_check(probe_ports=False)
    assert [(n.interface, n.error) for n in result.networks] == [
        ("eth0", None), ("eth1", "OSError: [Errno 19] No such device")]
    assert result.truncated and [n.ip for n in result.neighbours] == ["192.168.1.1"]
    assert neighbours.inventory(result) == {}  # part of the LAN is unknown: remove nothing

    monkeypatch.setattr(neighbours, "local_networks", lambda names: (nets[1:], []))
    with pytest.raises(OSError, match="No such device"):
        run_check(probe_ports=False)


# --- config, metrics, import cost ---------------------------------------------------------------

def test_config_defaults_and_budget() -> None:
    config = neighbours.Config()
    assert (config.interval_seconds, config.max_addresses, config.packets_per_second) == (
        3600, 1024, 200)
    assert neighbours.budget_seconds(config) <= config.timeout_seconds
    with pytest.raises(ValidationError, match=r"need up to .* more than timeout_seconds"):
        neighbours.Config(max_addresses=4096, packets_per_second=50)
    with pytest.raises(ValidationError):
        neighbours.Config(method="nmap")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        neighbours.Config(surprise=1)  # type: ignore[call-arg]


def test_metrics_are_counts_by_kind_and_pass_promtool() -> None:
    result = from_windows(FIXTURES / "windows-ps51")
    samples = list(neighbours.samples(result))
    by_name: dict[str, dict[tuple[str, ...], float]] = {}
    for s in samples:
        by_name.setdefault(s.spec.name, {})[s.labels] = s.value
    assert by_name["wardready_lan_neighbours"] == {
        ("printer",): 1, ("ip-camera",): 0, ("phone",): 1, ("network",): 1, ("unknown",): 1}
    assert by_name["wardready_lan_scan_info"] == {("neighbour-table",): 1}
    assert by_name["wardready_lan_scan_truncated"] == {(): 0}
    assert by_name["wardready_lan_scan_duration_seconds"][()] == result.duration_seconds
    assert {label for s in samples for label in s.spec.labels} == {"kind", "method"}
    assert promtool_check_metrics(exposition(neighbours.METRICS, samples)) == ""


def test_importing_the_check_loads_neither_scapy_nor_netaddr() -> None:
    code = ("import sys, wardready.checks.neighbours\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scapy', 'netaddr'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# --- a real sweep of an emulated office LAN ---------------------------------------------------

SUBNET = NET4("10.77.0.0/24")
AGENT_IP = "10.77.0.100"
LAN_HOSTS = (
    Host("gw", "10.77.0.1", "50:c7:bf:00:00:01"),  # TP-Link
    Host("canon", "10.77.0.11", "00:00:85:12:34:56"),
    Host("hik", "10.77.0.12", "44:19:b6:12:34:56"),
    Host("iphone", "10.77.0.13", "f0:18:98:12:34:56"),
    Host("jetdirect", "10.77.0.14", "02:00:5e:12:34:56"),  # locally administered; port 9100
    Host("pc", "10.77.0.200", "00:1e:67:12:34:56"),  # Intel: no kind
)
EXPECTED = {  # ip -> (vendor word or None, kind, what decided it)
    "10.77.0.1": ("tp-link", "network", "vendor"),
    "10.77.0.11": ("canon", "printer", "vendor"),
    "10.77.0.12": ("hikvision", "ip-camera", "vendor"),
    "10.77.0.13": ("apple", "phone", "vendor"),
    "10.77.0.14": (None, "printer", "port"),
    "10.77.0.200": ("intel", "unknown", None),
}
SWEEP_CONFIG = {"packets_per_second": 1000, "sweep_timeout_seconds": 1.0}
LISTENER_SECONDS = 60  # outlives the test; killed at teardown anyway

# Runs the check in whatever namespace `ip netns exec` put it in; prints JSON.
NS_SCRIPT = """
import asyncio, json, sys, time
from wardready.checks import neighbours
from wardready.checks.base import Context
config = neighbours.Config.model_validate_json(sys.argv[1])
t0 = time.monotonic()
result = asyncio.run(neighbours.run(config, Context()))
print(json.dumps({"elapsed": time.monotonic() - t0, "can_sweep": neighbours.can_sweep(),
                  "result": result.model_dump(mode="json")}))
"""
LISTENER = """
import socket, sys, time
s = socket.socket()
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)  # the kernel completes handshakes; nobody needs to accept
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def lan() -> Iterator[Lan]:
    reason = require_lanlab()
    if reason:
        pytest.skip(reason)
    with Lan(LAN_HOSTS, AGENT_IP, prefix=SUBNET.prefixlen) as built:
        listener = built.popen(built.ns("jetdirect"),
                               [sys.executable, "-c", LISTENER, "9100", str(LISTENER_SECONDS)],
                               stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None
        ready, _, _ = select.select([listener.stdout], [], [], 10)
        assert ready and listener.stdout.readline().strip() == "ready"
        yield built
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           timeout=10, check=True).stdout
    assert not any(ns in names for ns in built.namespaces), "namespaces left behind"


def in_agent(lan: Lan, config: dict[str, Any], *, unprivileged: bool = False
             ) -> dict[str, Any]:
    """Run the check in the agent's namespace (as nobody, without capabilities, if asked)."""
    argv = [sys.executable, "-c", NS_SCRIPT, json.dumps(config)]
    out = lan.run(lan.agent_ns, as_nobody(argv) if unprivileged else argv, timeout=60,
                  cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def root_namespace_state() -> list[str]:
    """The root namespace's addresses and neighbours inside the test subnet."""
    lines = []
    for argv in (["ip", "-4", "-o", "addr"], ["ip", "-4", "neigh"]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
        lines += [line for line in out.stdout.splitlines()
                  if any(_in_subnet(word) for word in line.split())]
    return sorted(lines)


def _in_subnet(word: str) -> bool:
    try:
        return IP4(word.split("/")[0]) in SUBNET
    except ValueError:
        return False


def assert_found_exactly_the_lan(result: dict[str, Any]) -> None:
    found = {n["ip"]: n for n in result["neighbours"]}
    assert set(found) == {h.ip for h in LAN_HOSTS}, sorted(found)
    for host in LAN_HOSTS:
        n = found[host.ip]
        word, kind, kind_from = EXPECTED[host.ip]
        assert n["mac"] == host.mac and n["interface"] == "eth0"
        assert (word is None) == (n["vendor"] is None), n
        assert word is None or word in n["vendor"].lower(), n
        assert (n["kind"], n["kind_from"]) == (kind, kind_from), n
    assert result["counts"] == {"printer": 2, "ip-camera": 1, "phone": 1, "network": 1,
                                "unknown": 1}
    assert not result["truncated"]


def test_arp_sweep_finds_exactly_the_lan_then_the_table_agrees(lan: Lan) -> None:
    before = root_namespace_state()
    started = time.monotonic()
    swept = in_agent(lan, SWEEP_CONFIG)
    result = swept["result"]
    assert swept["can_sweep"] and result["method"] == "arp-sweep"
    assert result["networks"] == [{"interface": "eth0", "address": AGENT_IP,
                                   "network": str(SUBNET), "addresses_swept": 253,
                                   "truncated": False, "error": None}]
    assert_found_exactly_the_lan(result)
    budget = neighbours.budget_seconds(neighbours.Config.model_validate(SWEEP_CONFIG))
    assert result["duration_seconds"] < min(budget, 10)
    items = neighbours.inventory(neighbours.Result.model_validate(result))
    assert {i.key: dict(i.facts)["kind"] for i in items["lan-neighbour"]} == {
        h.mac: EXPECTED[h.ip][1] for h in LAN_HOSTS}

    # The port probe made the agent's kernel resolve every neighbour: the table now holds
    # the same LAN, found without sending a single ARP request.
    table = in_agent(lan, {**SWEEP_CONFIG, "method": "neighbour-table"})["result"]
    assert table["method"] == "neighbour-table" and table["networks"] == []
    assert_found_exactly_the_lan(table)
    # Without root or CAP_NET_RAW, auto falls back to the table by itself.
    unprivileged = in_agent(lan, SWEEP_CONFIG, unprivileged=True)
    assert not unprivileged["can_sweep"]
    assert unprivileged["result"]["method"] == "neighbour-table"
    assert_found_exactly_the_lan(unprivileged["result"])
    assert time.monotonic() - started < 30

    assert root_namespace_state() == before  # nothing leaked into the host's own network


def test_a_sweep_limited_to_max_addresses_stays_near_the_agent_and_paced(lan: Lan) -> None:
    # 180 addresses nearest .100: .10 to .190; the gateway (.1) and the PC (.200) are beyond
    config = {"max_addresses": 180, "packets_per_second": 200, "sweep_timeout_seconds": 0.5,
              "probe_ports": False}
    result = in_agent(lan, config)["result"]
    assert result["networks"][0]["addresses_swept"] == 180
    assert result["networks"][0]["truncated"] and result["truncated"]
    assert [n["ip"] for n in result["neighbours"]] == [
        "10.77.0.11", "10.77.0.12", "10.77.0.13", "10.77.0.14"]
    assert neighbours.inventory(neighbours.Result.model_validate(result)) == {}
    # 180 requests, then the 176 unanswered once more, never faster than 200 per second
    assert result["duration_seconds"] >= (180 + 176) / 200 + 2 * 0.5
