"""The host check's hardware facts: DMI, physical disks and power supplies from recorded
Linux trees and Windows CIM outputs, and from this machine."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.conftest import DATA, exposition, promtool_check_metrics, series
from wardready.checks import host
from wardready.checks.base import Context
from wardready.checks.host import Config, Result
from wardready.checks.host.hardware import iso_date
from wardready.checks.host.linux import NOT_DISKS

HOSTS = DATA / "hosts"
DESKTOP = Config(os="linux", sys_root=str(HOSTS / "linux-desktop" / "sys"))
WINDOWS = Config(os="windows", windows_recorded=str(HOSTS / "windows-office"))


async def test_firmware_placeholders_are_unknown_not_facts() -> None:
    result = await host.run(DESKTOP, Context())
    # "To Be Filled By O.E.M." and "System Serial Number" would make every such PC one
    assert (result.manufacturer, result.model, result.serial) == (None, None, None)
    assert (result.bios_vendor, result.bios_version, result.bios_date) == (
        "American Megatrends Inc.", "P1.40", "2021-05-06")
    assert series(host.samples(result))[("wardready_host_hardware_info",
                           ("", "", "", "American Megatrends Inc.", "P1.40", "2021-05-06"))] == 1


def test_physical_disks_are_told_apart_and_virtual_devices_skipped() -> None:
    disks = {d.name: d for d in host.collect(DESKTOP).physical_disks or []}
    # loop, zram, dm-, md are not disks; an empty card reader (size 0) is no disk either
    assert sorted(disks) == ["nvme0n1", "sda", "sdb"]
    assert {n: (d.kind, d.bus) for n, d in disks.items()} == {
        "nvme0n1": ("ssd", "nvme"), "sda": ("ssd", "sata"), "sdb": ("hdd", "sata")}
    assert disks["sda"].serial == "S3Z1NB0K123456X"  # from VPD page 0x80
    assert disks["nvme0n1"].serial == "S4EVNX0R123456A"
    assert disks["nvme0n1"].model == "Samsung SSD 970 EVO Plus 500GB"
    assert disks["sdb"].size_bytes == 1953525168 * 512


def test_a_ups_is_counted_and_a_mouse_battery_is_not() -> None:
    result = host.collect(DESKTOP)
    assert [(s.name, s.kind) for s in result.power_supplies or []] == [("ups0", "ups")]
    assert result.on_battery is True  # the UPS discharges: mains power is out
    values = series(host.samples(result))
    assert values[("wardready_host_power_supplies", ("ups",))] == 1
    assert values[("wardready_host_power_supplies", ("battery",))] == 0
    assert values[("wardready_host_battery_charge_ratio", ("ups0",))] == 0.8
    assert values[("wardready_host_on_battery", ())] == 1


def test_windows_facts_come_from_cim() -> None:
    result = host.collect(WINDOWS)
    assert (result.manufacturer, result.model, result.serial) == ("Dell Inc.", "OptiPlex 7090",
                                                                  "7XK2Q93")
    assert (result.bios_version, result.bios_date) == ("1.9.2", "2021-05-06")
    disks = {d.model: (d.kind, d.removable) for d in result.physical_disks or []}
    assert disks == {"PC SN530 NVMe WDC 256GB": ("ssd", False),
                     "ST1000DM010-2EP102": ("hdd", False),
                     "SanDisk Cruzer Blade": ("unknown", True)}
    assert [(s.kind, s.status) for s in result.power_supplies or []] == [("ups", "AC")]
    assert result.on_battery is False
    assert result.unreadable == []


def test_windows_queries_that_fail_leave_the_facts_unknown(tmp_path: Path) -> None:
    result = host.collect(Config(os="windows", windows_recorded=str(tmp_path)))
    assert result.physical_disks is None and result.power_supplies is None
    assert result.manufacturer is None and result.on_battery is None
    assert sorted(u.source for u in result.unreadable) == [
        "battery", "bios", "computer_system", "physical_disks"]
    names = {name for name, _ in series(host.samples(result))}
    assert not names & {"wardready_host_hardware_info", "wardready_host_physical_disk_info",
                        "wardready_host_power_supplies", "wardready_host_on_battery"}
    assert set(host.inventory(result)) == {"host"}  # disks and UPSes unknown, not gone


def test_a_machine_without_dmi_says_why(tmp_path: Path) -> None:
    (tmp_path / "class" / "block").mkdir(parents=True)
    result = host.collect(Config(os="linux", sys_root=str(tmp_path)))
    assert [u.source for u in result.unreadable] == ["dmi"]
    assert result.physical_disks == [] and result.power_supplies == []


def test_an_unreadable_sysfs_is_unknown_not_empty(tmp_path: Path) -> None:
    result = host.collect(Config(os="linux", sys_root=str(tmp_path / "absent")))
    assert result.physical_disks is None and result.power_supplies is None
    assert {u.source for u in result.unreadable} == {"dmi", "sysfs"}


@pytest.mark.parametrize(("raw", "iso"), [
    ("05/06/2021", "2021-05-06"),                  # Linux DMI
    ("/Date(1620259200000)/", "2021-05-06"),       # CIM DateTime, Windows PowerShell 5.1
    ("2021-05-06T07:00:00+07:00", "2021-05-06"),   # PowerShell 7
    ("20210506000000.000000+000", "2021-05-06"),   # WMI (Get-WmiObject)
    ("00/00/0000", None), ("soon", None), (None, None),
])
def test_bios_dates_become_iso(raw: str | None, iso: str | None) -> None:
    assert iso_date(raw) == iso


def test_inventory_items() -> None:
    result = host.collect(WINDOWS)
    items = host.inventory(result)
    [machine] = items["host"]
    assert machine.key == "7XK2Q93"
    assert dict(machine.facts)["model"] == "OptiPlex 7090"
    assert {i.key: dict(i.facts)["kind"] for i in items["disk"]} == {
        "E823_8FA6_BF53_0001_001B_448B_4A1B_2C3D.": "ssd", "Z9A1B2C3": "hdd",
        "4C530001230819115283": "unknown"}
    assert [i.key for i in items["ups"]] == ["4B1234P56789"]
    # without a serial the host is known by its name
    assert host.inventory(host.collect(DESKTOP))["host"][0].key == result.os_hostname


def test_reports_stored_before_the_hardware_fields_still_validate() -> None:
    new = set(host.Hardware.model_fields)
    old = host.collect(DESKTOP).model_dump(mode="json", exclude=new)
    result = Result.model_validate(old)
    assert result.physical_disks is None and result.unreadable == []
    assert set(host.inventory(result)) == {"host"}


@pytest.mark.parametrize("config", [DESKTOP, WINDOWS], ids=["linux", "windows"])
def test_exposition_passes_promtool(config: Config) -> None:
    body = exposition(host.METRICS, host.samples(host.collect(config)))
    assert b"wardready_host_physical_disk_size_bytes{" in body
    assert promtool_check_metrics(body) == ""


async def test_this_machine_completes_and_is_consistent() -> None:
    result = await host.run(Config(), Context())
    series(host.samples(result))  # no duplicate series
    if result.physical_disks is None:
        assert any(u.source == "sysfs" for u in result.unreadable)
    for disk in result.physical_disks or []:
        assert disk.kind in ("ssd", "hdd", "unknown")
        assert disk.size_bytes and disk.size_bytes > 0
        assert Path("/sys/block", disk.name).exists()
        assert not disk.name.startswith(NOT_DISKS)
    names = [d.name for d in result.physical_disks or []]
    assert len(set(names)) == len(names)
    # psutil reads the same power supplies: a battery it sees, we see
    if psutil.sensors_battery() is not None:
        assert any(s.kind == "battery" for s in result.power_supplies or [])
