"""The peripherals check on recorded Linux trees and Windows query outputs, and on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DATA, exposition, promtool_check_metrics, series
from wardready.checks import peripherals
from wardready.checks.base import Context
from wardready.checks.peripherals import KINDS, Config, Result

FIXTURES = DATA / "peripherals"


def linux(name: str, **overrides: str) -> Config:
    root = FIXTURES / f"linux-{name}"
    settings = {"sys_root": str(root / "sys"), "proc_root": str(root / "proc"),
                "lpstat_recorded": str(root / "lpstat-v.txt"), **overrides}
    return Config(os="linux", **settings)


def windows(name: str) -> Config:
    return Config(os="windows", windows_recorded=str(FIXTURES / f"windows-{name}"))


async def test_office_pc_counts_one_webcam_though_it_has_two_video_nodes() -> None:
    result = await peripherals.run(linux("office"), Context())
    assert result.counts == {"webcam": 1, "microphone": 2, "speaker": 1, "printer": 1,
                             "scanner": 1, "usb": 3}
    assert result.unreadable == []
    [webcam] = [d for d in result.devices if d.kind == "webcam"]
    assert (webcam.vendor_id, webcam.product_id, webcam.path) == ("046d", "082d", "1-6")


def test_sound_cards_say_which_is_usb_and_which_onboard_and_hdmi_is_no_speaker() -> None:
    result = peripherals.collect(linux("office"))
    mics = {d.name: (d.bus, d.driver) for d in result.devices if d.kind == "microphone"}
    assert mics == {"HDA Intel PCH": ("pci", "snd_hda_intel"),
                    "HD Pro Webcam C920": ("usb", "snd-usb-audio")}
    # card 0 plays to its analog jack and to HDMI: one speaker, the analog one
    assert [d.path for d in result.devices if d.kind == "speaker"] == ["card0"]


def test_network_printers_known_to_cups_count_once_per_printer(tmp_path: Path) -> None:
    lpstat = tmp_path / "lpstat-v.txt"
    lpstat.write_text(
        "device for HP_M1132: usb://HP/LaserJet%20Professional%20M1132%20MFP?serial=0001\n"
        "device for Brother_HL_L2366DW: ipp://192.168.10.25/ipp/print\n"
        "device for Brother_driverless: ipps://192.168.10.25:443/ipp/print\n"
        "device for Canon_LBP: socket://192.168.10.30:9100\n"
        "device for PDF: cups-pdf:/\n")
    result = peripherals.collect(linux("office", lpstat_recorded=str(lpstat)))
    assert result.counts["printer"] == 3  # the USB one, and two network printers
    assert sorted(d.bus or "" for d in result.devices if d.kind == "printer") == [
        "network", "network", "usb"]


def test_a_pc_without_peripherals_counts_zero_and_says_it_knows() -> None:
    result = peripherals.collect(linux("bare"))
    assert result.counts == dict.fromkeys(KINDS, 0)  # the hub is no USB device of note
    values = series(peripherals.samples(result))
    for kind in KINDS:
        assert values[("wardready_peripherals", (kind,))] == 0
        assert values[("wardready_peripherals_known", (kind,))] == 1


@pytest.mark.parametrize("sys_root", [FIXTURES / "linux-unreadable" / "sys",
                                      FIXTURES / "linux-unreadable" / "absent"],
                         ids=["a file instead of sysfs", "no sysfs"])
def test_an_unreadable_tree_is_unknown_never_zero(sys_root: Path) -> None:
    result = peripherals.collect(linux("bare", sys_root=str(sys_root)))
    assert result.counts == dict.fromkeys(KINDS, None)
    [problem] = result.unreadable
    assert problem.source == "sysfs" and str(sys_root) in problem.reason
    values = series(peripherals.samples(result))
    assert not any(name == "wardready_peripherals" for name, _ in values)
    assert all(values[("wardready_peripherals_known", (kind,))] == 0 for kind in KINDS)
    assert peripherals.inventory(result) == {}  # so the server removes nothing it knew


def test_unreadable_cups_makes_only_printers_unknown(tmp_path: Path) -> None:
    result = peripherals.collect(linux("office", lpstat_recorded=str(tmp_path / "none.txt")))
    assert result.counts["printer"] is None
    assert result.counts["webcam"] == 1
    assert [u.source for u in result.unreadable] == ["cups"]
    assert "printer" not in peripherals.inventory(result)


def test_windows_office_pc_counts_cameras_endpoints_and_real_print_queues() -> None:
    result = peripherals.collect(windows("office"))
    # PDF, XPS, OneNote and Fax queues are not printers; the hub is not counted as a device
    assert result.counts == {"webcam": 1, "microphone": 1, "speaker": 2, "printer": 1,
                             "scanner": 1, "usb": 3}
    [printer] = [d for d in result.devices if d.kind == "printer"]
    assert (printer.name, printer.bus) == ("HP LaserJet Professional M1132 MFP", "usb")
    usb = {d.path: d.serial for d in result.devices if d.kind == "usb"}
    assert usb["USB\\VID_046D&PID_082D\\9F3A1B2C"] == "9F3A1B2C"
    assert usb["USB\\VID_046D&PID_C077\\5&3A2B1C0D&0&3"] is None  # an instance id, no serial


def test_windows_single_objects_not_wrapped_in_a_list_count_zero() -> None:
    result = peripherals.collect(windows("bare"))
    assert result.counts == dict.fromkeys(KINDS, 0)
    assert result.unreadable == []


def test_windows_without_get_pnpdevice_is_unknown_with_reasons() -> None:
    result = peripherals.collect(windows("unreadable"))
    assert result.counts == dict.fromkeys(KINDS, None)
    reasons = {u.source: u.reason for u in result.unreadable}
    assert "not JSON" in reasons["pnp_devices"]
    assert "no recorded output" in reasons["printers"]


@pytest.mark.parametrize("config", [linux("office"), windows("office")], ids=["linux", "windows"])
def test_inventory_keys_devices_by_serial_or_bus_path(config: Config) -> None:
    result = peripherals.collect(config)
    items = peripherals.inventory(result)
    assert set(items) == set(KINDS)
    for kind, found in items.items():
        assert len(found) == result.counts[kind]
        assert len({item.key for item in found}) == len(found), f"{kind}: keys collide"
    webcam_keys = [item.key for item in items["webcam"]]
    assert webcam_keys == (["046d:082d:9F3A1B2C"] if config.os == "linux"
                           else ["USB\\VID_046D&PID_082D&MI_00\\7&2A1B3C4D&0&0000"])


def test_info_series_are_capped() -> None:
    result = peripherals.collect(linux("office"))
    many = result.model_copy(update={"devices": result.devices * 20})
    info = [s for s in peripherals.samples(many) if s.spec is peripherals.INFO]
    assert len(info) == peripherals.MAX_INFO_SERIES


@pytest.mark.parametrize("config", [linux("office"), linux("bare"), windows("unreadable")],
                         ids=["office", "bare", "unknown"])
def test_exposition_passes_promtool(config: Config) -> None:
    body = exposition(peripherals.METRICS, peripherals.samples(peripherals.collect(config)))
    assert b'wardready_peripherals_known{kind="webcam"}' in body
    assert promtool_check_metrics(body) == ""


def test_results_survive_the_round_trip_through_json() -> None:
    result = peripherals.collect(linux("office"))
    assert Result.model_validate_json(result.model_dump_json()) == result


def test_defaults_run_hourly() -> None:
    assert Config().interval_seconds == 3600


async def test_this_machine_completes_and_is_consistent() -> None:
    result = await peripherals.run(Config(), Context())
    assert set(result.counts) == set(KINDS)
    for kind, count in result.counts.items():
        listed = [d for d in result.devices if d.kind == kind]
        if count is None:
            assert result.unreadable, f"{kind} unknown without a reason"
            assert listed == []
        else:
            assert count == len(listed)
    for device in result.devices:
        assert device.name and device.path
    series(peripherals.samples(result))  # no duplicate series
