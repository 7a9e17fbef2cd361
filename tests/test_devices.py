"""The devices check against real SSH peers on loopback: FakeNOS emulating Cisco IOS and Arista
EOS with recorded outputs (tests/data/devices), Debian's OpenSSH server for netmiko's `linux`
type, a closed port, a listener that never sends a banner, and a wrong password."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.sshpeers import (
    LOOPBACK,
    FakeDevice,
    Sshd,
    closed_port,
    fakenos,
    recorded,
    silent_listener,
    sshd,
)
from tests.conftest import REPO, exposition, promtool_check_metrics
from wardready.checks import devices
from wardready.checks.base import Context, DeviceTarget
from wardready.checks.devices import Config, DevicePoll, Result
from wardready.core.errors import CredentialsError

# FakeNOS's server threads raise when a client hangs up mid-session (a rejected login, the end
# of a poll); that is the emulator's noise, not the check's.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

USER, PASSWORD, SECRET = "netops", "s3cr3t-Pa55word-xyz", "En4ble-Secret-qrs"
OTHER_PASSWORD = "another-Pa55word-abc"
SLACK = 2.0
"""How much later than its configured timeout a failure may be reported."""

CISCO = FakeDevice("router1", "cisco_ios", USER, PASSWORD, {
    "show version": recorded("cisco_ios_show_version.raw"),
    "show interfaces": recorded("cisco_ios_show_interfaces5.raw"),
    "show processes cpu": recorded("cisco_ios_show_processes_cpu.raw"),
    "show processes memory sorted": recorded("cisco_ios_show_processes_memory_sorted.raw"),
})
ARISTA = FakeDevice("spine1", "arista_eos", USER, PASSWORD, {
    "show version": recorded("arista_eos_show_version2.raw"),
    "show hostname": recorded("arista_eos_show_hostname.raw"),
    "show interfaces": recorded("arista_eos_show_interfaces.raw"),
    "show processes top once": recorded("arista_eos_show_processes_top_once.raw"),
})
LOCKED = FakeDevice("locked", "cisco_ios", USER, OTHER_PASSWORD, CISCO.outputs)
"""Same device, another password: our login is rejected."""
BIG = FakeDevice("big", "arista_eos", USER, PASSWORD, {
    "show version": recorded("arista_eos_show_version2.raw"),
    "show interfaces": "".join(f"Ethernet{n} is up, line protocol is up (connected)\n"
                               "  Hardware is Ethernet, address is 0800.27dc.5443\n"
                               for n in range(200)),
})
"""A chassis with more interfaces than the check keeps (synthetic: only the count matters)."""

FAST = Config(connect_timeout_seconds=2, banner_timeout_seconds=2, auth_timeout_seconds=3,
              read_timeout_seconds=5, device_timeout_seconds=10, timeout_seconds=30)


@dataclass(frozen=True)
class Peers:
    ports: dict[str, int]
    sshd: Sshd


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    with fakenos([CISCO, ARISTA, LOCKED, BIG]) as ports, sshd(tmp_path_factory.mktemp("sshd")) as s:
        yield Peers(ports, s)


@pytest.fixture
def login_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default login in the environment, as an agent's service unit would set it."""
    for key in list(os.environ):
        if key.startswith(devices.ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WARDREADY_DEVICE_USERNAME", USER)
    monkeypatch.setenv("WARDREADY_DEVICE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WARDREADY_DEVICE_SECRET", SECRET)


def target(name: str, port: int, device_type: str = "cisco_ios",
           role: str = "switch") -> DeviceTarget:
    return DeviceTarget(name=name, address=LOOPBACK, device_type=device_type, role=role,
                        port=port)


def good_targets(peers: Peers) -> list[DeviceTarget]:
    return [target("core-router", peers.ports["router1"], "cisco_ios", "router"),
            target("spine", peers.ports["spine1"], "arista_eos", "switch"),
            target("gateway", peers.sshd.port, "linux", "firewall")]


@pytest.fixture
def linux_env(monkeypatch: pytest.MonkeyPatch, peers: Peers, login_env: None) -> None:
    """The Linux peer has its own account: a per-device override."""
    prefix = devices.env_name("gateway")
    monkeypatch.setenv(prefix + "USERNAME", peers.sshd.username)
    monkeypatch.setenv(prefix + "PASSWORD", peers.sshd.password)


async def run(config: Config, *targets: DeviceTarget) -> Result:
    return await devices.run(config, Context(devices=tuple(targets)))


def by_name(result: Result) -> dict[str, DevicePoll]:
    return {d.name: d for d in result.devices}


# --- real peers, recorded outputs ----------------------------------------------------------


@pytest.fixture(scope="module")
def polled(peers: Peers) -> Result:
    """One run of the check over the good peers, shared by the tests that read it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WARDREADY_DEVICE_USERNAME", USER)
        env.setenv("WARDREADY_DEVICE_PASSWORD", PASSWORD)
        env.setenv("WARDREADY_DEVICE_SECRET", SECRET)
        env.setenv(devices.env_name("gateway") + "USERNAME", peers.sshd.username)
        env.setenv(devices.env_name("gateway") + "PASSWORD", peers.sshd.password)
        return asyncio.run(run(FAST, *good_targets(peers)))


def test_cisco_ios_facts_from_recorded_outputs(polled: Result) -> None:
    d = by_name(polled)["core-router"]
    assert (d.up, d.reason, d.error) == (True, None, None)
    # cisco_ios_show_version.raw: a Catalyst 4948E.
    assert (d.hostname, d.model, d.os_version, d.serial) == (
        "router1", "WS-C4948E", "12.2(54)SG1", "CAT1451S15C")
    assert d.uptime_seconds == (((2 * 365 + 31 * 7 + 6) * 24 + 9) * 60 + 55) * 60
    # show processes cpu: "one minute: 0%"; show processes memory sorted: Processor Pool.
    assert d.cpu_utilisation_ratio == 0.0
    assert (d.memory_total_bytes, d.memory_used_bytes) == (919638648, 236752096)


def test_cisco_ios_interfaces_and_counters(polled: Result) -> None:
    interfaces = {i.name: i for i in by_name(polled)["core-router"].interfaces}
    assert list(interfaces) == ["Port-channel1", "Port-channel1.13"]
    channel = interfaces["Port-channel1"]
    assert (channel.admin_up, channel.oper_up) == (True, True)
    assert (channel.input_errors, channel.crc_errors, channel.output_errors) == (179928, 21419, 0)
    # No duplex line of its own (its members have theirs): the bandwidth, BW 20000000 Kbit/sec.
    assert (channel.speed_bits_per_second, channel.full_duplex) == (20e9, None)
    sub = interfaces["Port-channel1.13"]
    # The recording ends before this subinterface's counters: unknown, not zero.
    assert (sub.oper_up, sub.input_errors, sub.crc_errors) == (True, None, None)


def test_arista_eos_from_recorded_outputs(polled: Result) -> None:
    d = by_name(polled)["spine"]
    assert d.up
    assert (d.hostname, d.model, d.os_version, d.serial) == (
        "spine1", "CCS-720XP-24ZY4-F", "4.27.6M", "JPE11400249")
    assert d.uptime_seconds == (((134 * 7 + 5) * 24 + 23) * 60 + 44) * 60
    # show version: total 3982820 kB, free 1807180 kB; top: 96.3 % idle.
    assert d.memory_total_bytes == 3982820 * 1024
    assert d.memory_used_bytes == (3982820 - 1807180) * 1024
    assert d.cpu_utilisation_ratio == pytest.approx(0.037)
    interfaces = {i.name: i for i in d.interfaces}
    assert list(interfaces) == ["Ethernet1", "Ethernet2", "Loopback0", "Port-Channel1",
                                "Management1", "Vlan10"]
    assert interfaces["Ethernet1"].model_dump(exclude={"name"}) == dict(
        admin_up=True, oper_up=True, speed_bits_per_second=10e9, full_duplex=True,
        input_errors=0, output_errors=0, crc_errors=0)
    assert interfaces["Management1"].speed_bits_per_second == 1e9
    assert (interfaces["Port-Channel1"].oper_up, interfaces["Vlan10"].oper_up) == (False, False)


def test_linux_over_openssh_matches_this_host(polled: Result) -> None:
    d = by_name(polled)["gateway"]
    assert (d.up, d.reason) == (True, None), d.error
    assert d.hostname == socket.gethostname()
    assert d.os_version == platform.freedesktop_os_release()["PRETTY_NAME"]
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert d.uptime_seconds is not None and 0 <= uptime - d.uptime_seconds < 30
    serial = Path("/sys/class/dmi/id/product_serial")
    # Root-only on most machines: the check's unprivileged login cannot read it.
    readable = serial.exists() and serial.stat().st_mode & 0o004
    assert d.serial == (serial.read_text().strip() if readable else None)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert d.memory_total_bytes == int(meminfo["MemTotal"].split()[0]) * 1024
    assert d.cpu_utilisation_ratio is not None and 0 <= d.cpu_utilisation_ratio <= 1
    net = Path("/sys/class/net")
    names = sorted(p.name for p in net.iterdir() if p.name != "lo")
    assert sorted(i.name for i in d.interfaces) == names
    for i in d.interfaces:
        sysfs = net / i.name
        assert i.oper_up == ((sysfs / "operstate").read_text().strip() == "up")
        assert i.admin_up == bool(int((sysfs / "flags").read_text(), 16) & 1)
        assert i.input_errors == int((sysfs / "statistics/rx_errors").read_text())
        assert i.output_errors == int((sysfs / "statistics/tx_errors").read_text())


def test_metrics_pass_promtool_and_inventory_lists_devices(polled: Result) -> None:
    assert promtool_check_metrics(exposition(devices.METRICS, devices.samples(polled))) == ""
    text = exposition(devices.METRICS, devices.samples(polled)).decode()
    assert ('wardready_device_interface_errors_total{device="core-router",'
            'direction="input",interface="Port-channel1"} 179928.0') in text
    assert 'wardready_device_poll_error{device="spine",reason="timeout"} 0.0' in text
    items = devices.inventory(polled)["network-device"]
    assert [(i.key, dict(i.facts)["serial"]) for i in items] == [
        ("core-router", "CAT1451S15C"), ("spine", "JPE11400249"),
        ("gateway", by_name(polled)["gateway"].serial or "")]


# --- failures, each within its bound ------------------------------------------------------


async def test_refused_port(login_env: None) -> None:
    started = time.monotonic()
    d = (await run(FAST, target("gone", closed_port()))).devices[0]
    assert (d.up, d.reason) == (False, "refused")
    assert time.monotonic() - started < FAST.connect_timeout_seconds + SLACK


async def test_no_banner_is_a_timeout(login_env: None) -> None:
    with silent_listener() as mute:
        started = time.monotonic()
        d = (await run(FAST, target("mute", mute.port))).devices[0]
    assert (d.up, d.reason, d.error) == (
        False, "timeout", f"{LOOPBACK}:{mute.port} completed no SSH handshake within 2 s")
    assert time.monotonic() - started < FAST.banner_timeout_seconds + SLACK


async def test_device_deadline_ends_the_session(login_env: None) -> None:
    """The overall deadline holds even when netmiko's own timeouts are longer, and the
    abandoned session's socket is closed, so its thread ends too."""
    config = FAST.model_copy(update=dict(banner_timeout_seconds=20, device_timeout_seconds=1,
                                         timeout_seconds=30))
    with silent_listener() as mute:
        started = time.monotonic()
        d = (await run(config, target("mute", mute.port))).devices[0]
        assert (d.up, d.reason) == (False, "timeout")
        assert time.monotonic() - started < config.device_timeout_seconds + SLACK
        assert mute.accepted, "the check never connected"
        assert mute.client_closed_within(SLACK), "the abandoned session's socket stayed open"


async def test_wrong_password(peers: Peers, login_env: None) -> None:
    started = time.monotonic()
    d = (await run(FAST, target("locked", peers.ports["locked"]))).devices[0]
    assert (d.up, d.reason) == (False, "auth")
    assert time.monotonic() - started < FAST.auth_timeout_seconds + SLACK


async def test_missing_credentials(peers: Peers, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(devices.ENV_PREFIX):
            monkeypatch.delenv(key)
    d = (await run(FAST, target("core-router", peers.ports["router1"]))).devices[0]
    assert (d.up, d.reason) == (False, "no-credentials")
    assert "WARDREADY_DEVICE_CORE_ROUTER_USERNAME" in (d.error or "")
    # Decided before any connection or timeout: without a login the poll finishes on its
    # first step, awaiting nothing (an event the code controls, not a stopwatch).
    with pytest.raises(StopIteration) as first_step:
        devices.poll(target("core-router", peers.ports["router1"]), None, FAST).send(None)
    assert first_step.value.value.reason == "no-credentials"


async def test_hung_device_does_not_delay_the_others(peers: Peers, linux_env: None) -> None:
    # Every SSH timeout longer than the deadline: the hung one lasts until its deadline.
    config = FAST.model_copy(update=dict(connect_timeout_seconds=20, banner_timeout_seconds=20,
                                         device_timeout_seconds=4))
    with silent_listener() as mute:
        started = time.monotonic()
        result = await run(config, target("mute", mute.port), *good_targets(peers))
        elapsed = time.monotonic() - started
    polls = by_name(result)
    assert (polls["mute"].reason, polls["mute"].error) == (
        "timeout", f"no complete answer within {config.device_timeout_seconds:g} s")
    assert all(polls[t.name].up for t in good_targets(peers))
    # The others finished in their own time, not after the hung one's deadline: the four
    # polls started together, and each of the others ended before the hung one's did.
    assert max(polls[t.name].duration_seconds for t in good_targets(peers)) < polls[
        "mute"].duration_seconds
    # Concurrent: less than the sum of the polls, which polling one at a time takes at least
    # (test_one_at_a_time_when_bounded).
    assert elapsed < sum(d.duration_seconds for d in result.devices)


async def test_one_at_a_time_when_bounded(peers: Peers, linux_env: None) -> None:
    config = FAST.model_copy(update=dict(max_concurrent=1))
    started = time.monotonic()
    result = await run(config, *good_targets(peers))
    elapsed = time.monotonic() - started
    assert all(d.up for d in result.devices)
    assert elapsed >= sum(d.duration_seconds for d in result.devices) * 0.95


# --- credentials -----------------------------------------------------------------------------


def test_secrets_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secrets_file = tmp_path / "devices.yml"
    secrets_file.write_text(f"default: {{username: {USER}, password: {PASSWORD}}}\n")
    secrets_file.chmod(0o644)
    with pytest.raises(CredentialsError) as caught:
        asyncio.run(run(FAST.model_copy(update=dict(credentials_file=secrets_file)),
                        target("x", closed_port())))
    assert str(caught.value) == (f"{secrets_file}: credentials file is readable by group or "
                                 "others (mode 0644); chmod 600 it")
    assert PASSWORD not in str(caught.value)
    # Refused before any device is polled: on the check's first step, awaiting nothing.
    with pytest.raises(CredentialsError):
        run(FAST.model_copy(update=dict(credentials_file=secrets_file)),
            target("x", closed_port())).send(None)


async def test_secrets_file_per_device_entry(peers: Peers, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(devices.ENV_PREFIX):
            monkeypatch.delenv(key)
    secrets_file = tmp_path / "devices.yml"
    secrets_file.write_text(
        f"default: {{username: {USER}, password: {OTHER_PASSWORD}}}\n"
        f"devices:\n  core-router: {{username: {USER}, password: {PASSWORD}, "
        f"secret: {SECRET}}}\n")
    secrets_file.chmod(0o600)
    config = FAST.model_copy(update=dict(credentials_file=secrets_file))
    result = by_name(await run(config, target("core-router", peers.ports["router1"]),
                               target("spine", peers.ports["spine1"], "arista_eos")))
    assert result["core-router"].up
    assert result["spine"].reason == "auth"  # the file's default password is not the spine's


def test_credentials_resolution_order(tmp_path: Path) -> None:
    secrets_file = tmp_path / "devices.yml"
    secrets_file.write_text("default: {username: file-default, password: a}\n"
                            "devices:\n  b: {username: file-b, password: b}\n")
    secrets_file.chmod(0o600)
    environ = {"WARDREADY_DEVICE_USERNAME": "env-default", "WARDREADY_DEVICE_PASSWORD": "c",
               "WARDREADY_DEVICE_A_USERNAME": "env-a", "WARDREADY_DEVICE_A_PASSWORD": "pw-of-a"}
    names = ["a", "b", "c"]
    config = FAST.model_copy(update=dict(credentials_file=secrets_file))
    logins = devices.resolve_credentials([target(n, 22) for n in names], config, environ)
    assert [logins[n].username for n in names if logins[n]] == ["env-a", "file-b", "env-default"]
    assert devices.resolve_credentials([target("a", 22)], FAST, {}) == {"a": None}
    assert "pw-of-a" not in repr(logins["a"])  # secrets stay out of repr


async def test_password_appears_nowhere(peers: Peers, login_env: None,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with silent_listener() as mute:
        result = await run(FAST, target("core-router", peers.ports["router1"]),
                           target("locked", peers.ports["locked"]), target("mute", mute.port),
                           target("gone", closed_port()))
    assert [d.reason for d in result.devices] == [None, "auth", "timeout", "refused"]
    text = result.model_dump_json() + json.dumps([d.error for d in result.devices])
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    for secret in (PASSWORD, SECRET):
        assert secret not in text
        assert secret not in logged
    assert caplog.records, "expected netmiko/paramiko debug records to search"


# --- no devices, no netmiko ------------------------------------------------------------------


def test_no_devices_no_netmiko() -> None:
    code = ("import asyncio, sys\n"
            "from wardready.checks import devices\n"
            "from wardready.checks.base import Context\n"
            "r = asyncio.run(devices.run(devices.Config(), Context()))\n"
            "assert r.devices == [], r\n"
            "loaded = sorted(m for m in ('netmiko', 'paramiko', 'textfsm') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr


async def test_interfaces_are_capped(peers: Peers, login_env: None) -> None:
    d = (await run(FAST, target("big", peers.ports["big"], "arista_eos"))).devices[0]
    assert d.up
    assert len(d.interfaces) == devices.MAX_INTERFACES
    assert d.interfaces_dropped == 200 - devices.MAX_INTERFACES
    assert d.interfaces[-1].name == f"Ethernet{devices.MAX_INTERFACES - 1}"


async def test_pinned_host_keys_let_the_right_device_in_and_refuse_an_impostor(
        peers: Peers, linux_env: None, tmp_path: Path) -> None:
    # Against OpenSSH: FakeNOS keeps a thread waiting forever for a client that hangs up
    # after the key exchange (as ssh-keyscan and a refused host key do).
    port = peers.sshd.port
    scanned = subprocess.run(["ssh-keyscan", "-p", str(port), "-T", "5", LOOPBACK],
                             capture_output=True, text=True, timeout=15, check=True).stdout
    assert f"[{LOOPBACK}]:{port}" in scanned
    known = tmp_path / "known_hosts"
    known.write_text(scanned)
    pinned = FAST.model_copy(update=dict(known_hosts_file=known))
    gateway = target("gateway", port, "linux", "firewall")
    right = (await run(pinned, gateway)).devices[0]
    assert right.up, right.error

    # Another machine's keys under the gateway's name: what a machine posing as it would show.
    other = []
    for kind in ("ed25519", "ecdsa", "rsa"):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f",
                        str(tmp_path / f"other-{kind}")], check=True, timeout=30)
        other.append((tmp_path / f"other-{kind}.pub").read_text().split()[:2])
    known.write_text("".join(f"[{LOOPBACK}]:{port} {t} {k}\n" for t, k in other))
    started = time.monotonic()
    impostor = (await run(pinned, gateway)).devices[0]
    assert (impostor.up, impostor.reason) == (False, "host-key"), impostor.error
    assert time.monotonic() - started < FAST.connect_timeout_seconds + SLACK

    known.write_text("")
    unknown = (await run(pinned, gateway)).devices[0]
    assert unknown.reason == "host-key" and str(known) in (unknown.error or "")
