"""The `lasthop` check: the Wi-Fi parsers against real recorded outputs (tests/data/wifi, see
its README for where each came from), and the check's wiring against recorded sysfs trees
and command outputs. No Wi-Fi hardware and no Windows here: those paths run on recordings
only. The wired path runs for real in tests/test_slownic.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from tests.conftest import DATA, exposition, promtool_check_metrics, series
from wardready.checks import REGISTRY
from wardready.checks.base import Context, ServerLink
from wardready.checks.lasthop import (
    METRICS,
    CommandFailed,
    Config,
    Result,
    Sources,
    WifiLink,
    band_of,
    channel_of,
    interface_of,
    measure,
    netsh_lists,
    parse_iw_link,
    parse_netsh_wlan,
    parse_proc_net_wireless,
    proc_level_dbm,
    quality_to_dbm,
    run,
    run_command,
    samples,
    target_host,
)

WIFI = DATA / "wifi"


def recorded(name: str) -> str:
    return (WIFI / name).read_text(encoding="utf-8")


# --- iw dev IF link ----------------------------------------------------------------------------

def test_iw_link_strong_5ghz() -> None:
    link = parse_iw_link(recorded("iw-link-5ghz-strong.txt"))
    assert link == WifiLink(signal_dbm=-44, tx_bitrate_bits_per_second=866.7e6,
                            rx_bitrate_bits_per_second=702.0e6, frequency_mhz=5280,
                            band="5GHz", channel=56, ssid="HOME5", source="iw")


def test_iw_link_weak_5ghz() -> None:
    link = parse_iw_link(recorded("iw-link-5ghz-weak.txt"))
    assert link == WifiLink(signal_dbm=-77, tx_bitrate_bits_per_second=6.0e6,
                            rx_bitrate_bits_per_second=135.0e6, frequency_mhz=5200,
                            band="5GHz", channel=40, ssid="SQ-DEVICETEST", source="iw")


def test_iw_link_2_4ghz() -> None:
    link = parse_iw_link(recorded("iw-link-2.4ghz.txt"))
    assert link == WifiLink(signal_dbm=-64, tx_bitrate_bits_per_second=52.0e6,
                            rx_bitrate_bits_per_second=72.2e6, frequency_mhz=2412,
                            band="2.4GHz", channel=1, ssid="SQ-DEVICETEST", source="iw")


def test_iw_link_without_an_rx_bitrate_line() -> None:
    link = parse_iw_link(recorded("iw-link-no-rx-bitrate.txt"))
    assert link is not None
    assert (link.signal_dbm, link.tx_bitrate_bits_per_second, link.rx_bitrate_bits_per_second,
            link.frequency_mhz, link.channel) == (-45, 216.7e6, None, 5300, 60)


def test_iw_link_not_connected() -> None:
    # iw's own words when the interface is not associated (iw/link.c).
    assert parse_iw_link("Not connected.\n") is None
    assert parse_iw_link("") is None


def test_band_and_channel_from_frequency() -> None:
    # IEEE 802.11 channel plans: 2412 MHz is channel 1, 2484 is 14, 5180 is 36, 5745 is 149,
    # 5955 MHz is 6 GHz channel 1 and 5935 its channel 2.
    assert [channel_of(f) for f in (2412, 2437, 2484, 5180, 5745, 5955, 5935)] == [
        1, 6, 14, 36, 149, 1, 2]
    assert [band_of(f) for f in (2437, 5180, 5825, 5955, 6415, 900)] == [
        "2.4GHz", "5GHz", "5GHz", "6GHz", "6GHz", None]


# --- /proc/net/wireless ------------------------------------------------------------------------

def test_proc_net_wireless_dbm_with_a_trailing_dot() -> None:
    link = parse_proc_net_wireless(recorded("proc-net-wireless-dbm.txt"), "wlp5s0")
    assert link == WifiLink(signal_dbm=-42, source="proc")
    assert parse_proc_net_wireless(recorded("proc-net-wireless-dbm.txt"), "wlan0") is None


def test_proc_net_wireless_unsigned_byte_form() -> None:
    # The same post reports iwconfig's reading of that line: "Signal level=-53 dBm".
    link = parse_proc_net_wireless(recorded("proc-net-wireless-unsigned.txt"), "eth1")
    assert link == WifiLink(signal_dbm=-53, source="proc")


def test_proc_levels_that_are_no_dbm() -> None:
    # A relative level (iwconfig prints "Signal level=95/100") and no level at all.
    assert proc_level_dbm("95.") is None
    assert proc_level_dbm("0") is None
    assert proc_level_dbm("-61") == -61
    assert proc_level_dbm("175.") == -81


# --- netsh wlan show interfaces ----------------------------------------------------------------

def test_netsh_5ghz() -> None:
    [entry] = parse_netsh_wlan(recorded("netsh-5ghz-ax201.txt"))
    assert (entry.name, entry.state) == ("Wi-Fi", "connected")
    assert entry.link == WifiLink(
        signal_dbm=96 / 2 - 100, signal_quality_percent=96, tx_bitrate_bits_per_second=400e6,
        rx_bitrate_bits_per_second=400e6, frequency_mhz=5745, band="5GHz", channel=149,
        ssid="Starbucks WiFi", source="netsh")


def test_netsh_2_4ghz_without_a_band_line() -> None:
    [entry] = parse_netsh_wlan(recorded("netsh-2.4ghz-ar9485.txt"))
    assert entry.description == "Qualcomm Atheros AR9485WB-EG Wireless Network Adapter"
    assert entry.link == WifiLink(
        signal_dbm=-50, signal_quality_percent=100, tx_bitrate_bits_per_second=150e6,
        rx_bitrate_bits_per_second=150e6, frequency_mhz=2412, band="2.4GHz", channel=1,
        ssid="LUO-PC_Network", source="netsh")


def test_netsh_lists_an_interface_by_its_name_whatever_the_language() -> None:
    text = recorded("netsh-2.4ghz-ar9485.txt")
    assert netsh_lists(text, "Wi-Fi") and netsh_lists(text, "wi-fi")
    assert not netsh_lists(text, "Ethernet")


def test_windows_quality_to_dbm_as_microsoft_documents_it() -> None:
    # WLAN_ASSOCIATION_ATTRIBUTES.wlanSignalQuality: 0 is -100 dBm, 100 is -50 dBm, linear.
    assert [quality_to_dbm(q) for q in (0, 44, 100)] == [-100, -78, -50]


# --- the check, on recorded machines -----------------------------------------------------------

def sources(*, outputs: Mapping[str, str] | None = None, iw: bool = True,
            local: str | OSError = "192.168.1.23", speed: float | None = None,
            duplex: bool | None = None, interface: str = "wlan0") -> Sources:
    """Sources that replay `outputs` (by command name) instead of running commands."""
    def runner(argv: Sequence[str], timeout: float) -> str:
        name = argv[0].rsplit("/", 1)[-1]
        if outputs is None or name not in outputs:
            raise CommandFailed(f"{name} is not installed")
        return outputs[name]

    def local_address(host: str, port: int) -> str:
        if isinstance(local, OSError):
            raise local
        return local

    class Addr:
        address = "192.168.1.23"

    return Sources(runner=runner, which=lambda n: f"/usr/sbin/{n}" if iw else None,
                   local_address=local_address, addrs=lambda: {interface: [Addr()]},
                   link=lambda _: (speed, duplex))


def linux_tree(tmp_path: Path, interface: str, *, wireless: bool, proc: str | None = None
               ) -> Config:
    device = tmp_path / "sys" / "class" / "net" / interface
    device.mkdir(parents=True)
    (device / "type").write_text("1\n")
    if wireless:
        (device / "phy80211").mkdir()
    (tmp_path / "proc" / "net").mkdir(parents=True)
    if proc is not None:
        (tmp_path / "proc" / "net" / "wireless").write_text(proc)
    return Config(os="linux", sys_root=str(tmp_path / "sys"), proc_root=str(tmp_path / "proc"))


def test_linux_wifi_through_iw(tmp_path: Path) -> None:
    config = linux_tree(tmp_path, "wlan0", wireless=True)
    result = measure(config, ("wardready.example", 443),
                     sources(outputs={"iw": recorded("iw-link-5ghz-weak.txt")}))
    assert (result.interface, result.medium, result.notes) == ("wlan0", "wifi", [])
    assert result.wifi is not None and result.wifi.signal_dbm == -77


def test_linux_wifi_without_iw_falls_back_to_proc(tmp_path: Path) -> None:
    proc = recorded("proc-net-wireless-dbm.txt")
    config = linux_tree(tmp_path, "wlp5s0", wireless=True, proc=proc)
    result = measure(config, ("wardready.example", 443),
                     sources(iw=False, interface="wlp5s0"))
    assert result.wifi == WifiLink(signal_dbm=-42, source="proc")
    assert result.notes == ["iw is not installed: signal only, from /proc/net/wireless"]


def test_linux_wired_nic(tmp_path: Path) -> None:
    config = linux_tree(tmp_path, "eno1", wireless=False)
    result = measure(config, ("wardready.example", 443),
                     sources(interface="eno1", speed=100e6, duplex=False))
    assert (result.medium, result.speed_bits_per_second, result.full_duplex, result.wifi) == (
        "wired", 100e6, False, None)


def test_windows_wifi_and_wired(tmp_path: Path) -> None:
    netsh = {"netsh": recorded("netsh-2.4ghz-ar9485.txt")}
    config = Config(os="windows")
    wifi = measure(config, ("wardready.example", 443), sources(outputs=netsh, interface="Wi-Fi"))
    assert wifi.medium == "wifi" and wifi.wifi is not None and wifi.wifi.channel == 1
    wired = measure(config, ("wardready.example", 443),
                    sources(outputs=netsh, interface="Ethernet", speed=1e9, duplex=True))
    assert (wired.medium, wired.wifi, wired.notes) == ("wired", None, [])
    no_netsh = measure(config, ("wardready.example", 443), sources(interface="Ethernet"))
    assert (no_netsh.medium, no_netsh.notes) == ("unknown", ["netsh is not installed"])


def test_no_target_and_no_route_are_notes() -> None:
    assert measure(Config(os="linux"), None).notes == [
        "no target: no server configured and no `target` set"]
    result = measure(Config(os="linux"), ("10.255.255.1", 443),
                     sources(local=OSError(101, "Network is unreachable")))
    assert (result.interface, result.notes) == (
        None, ["no route to 10.255.255.1: Network is unreachable"])
    assert list(samples(result)) == []


def test_target_is_the_servers_host() -> None:
    server = Context(server=ServerLink(url="https://city.example:8470", token="t"))
    assert target_host(None, server) == ("city.example", 8470)
    assert target_host("10.0.0.9", server) == ("10.0.0.9", 443)
    assert target_host(None, Context()) is None


def test_loopback_for_real() -> None:
    """The real route lookup and psutil on this machine: 127.0.0.1 is on `lo`, which is
    neither Ethernet nor Wi-Fi."""
    result = asyncio.run(run(Config(target="127.0.0.1"), Context()))
    assert (result.interface, result.local_address, result.medium) == (
        "lo", "127.0.0.1", "unknown")
    assert interface_of("127.0.0.1", psutil.net_if_addrs()) == "lo"


def test_the_command_runner_turns_failures_into_one_line() -> None:
    """Real commands: output, a missing tool, a non-zero exit, a hang cut at the timeout."""
    assert run_command(["printf", "ok"], 5) == "ok"
    with pytest.raises(CommandFailed, match=r"^no-such-tool-wr is not installed$"):
        run_command(["no-such-tool-wr"], 5)
    with pytest.raises(CommandFailed, match=r"^sh -c .* exited 3: nope$"):
        run_command(["sh", "-c", "echo nope >&2; exit 3"], 5)
    with pytest.raises(CommandFailed, match=r"^sleep took longer than 0\.2 s$"):
        run_command(["sleep", "30"], 0.2)


def test_metrics_of_a_wifi_result() -> None:
    result = Result(target="city.example", interface="wlan0", local_address="192.168.1.23",
                    medium="wifi", speed_bits_per_second=None, full_duplex=None,
                    wifi=parse_iw_link(recorded("iw-link-5ghz-weak.txt")))
    got = series(samples(result))
    assert got == {
        ("wardready_lasthop_info", ("wlan0", "wifi")): 1,
        ("wardready_wifi_signal_dbm", ("wlan0",)): -77,
        ("wardready_wifi_bitrate_bytes_per_second", ("wlan0", "transmit")): 6.0e6 / 8,
        ("wardready_wifi_bitrate_bytes_per_second", ("wlan0", "receive")): 135.0e6 / 8,
        ("wardready_wifi_frequency_hertz", ("wlan0",)): 5200e6,
    }
    assert promtool_check_metrics(exposition(METRICS, samples(result))) == ""


def test_registered() -> None:
    assert REGISTRY["lasthop"].config_model().interval_seconds == 300


def test_a_command_timeout_beyond_the_checks_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"command_timeout_seconds \(30\) must be below "
                                              r"timeout_seconds \(20\)"):
        Config(command_timeout_seconds=30)
