"""Equipment end to end with real processes: an agent counts a recorded office PC's
peripherals and polls its ward's router (FakeNOS on loopback, listed in the inventory, with
credentials from a mode-600 secrets file); the server shows both in /metrics and keeps their
history, so unplugging the webcam appears in the change log."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import fleet, stack
from lab.sshpeers import FakeDevice, fakenos, recorded
from tests.conftest import DATA
from wardready.server.store import Store

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]
WARD, HOST = "sai-gon", "conference-pc"
USER, PASSWORD = "netops", "Pa55-for-the-e2e-only"
ROUTER = FakeDevice("edge", "cisco_ios", USER, PASSWORD, {
    "show version": recorded("cisco_ios_show_version.raw"),
    "show interfaces": recorded("cisco_ios_show_interfaces5.raw"),
})
PERIPHERALS = DATA / "peripherals"


def inventory_with_router(path: Path, port: int) -> Path:
    inventory = yaml.safe_load((DATA / "inventory-small.yml").read_text())
    ward = next(w for w in inventory["wards"] if w["id"] == WARD)
    ward["devices"] = [{"name": "edge-router", "address": "127.0.0.1", "port": port,
                        "device_type": "cisco_ios", "role": "router"}]
    path.write_text(yaml.safe_dump(inventory))
    return path


def point(link: Path, machine: str) -> None:
    """Make `link` the recorded machine's tree: the agent reads through it."""
    tmp = link.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(PERIPHERALS / machine)
    tmp.replace(link)


def admin_get(port: int, token: str, path: str, **query: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.load(resp)


def test_agent_reports_peripherals_and_router_and_server_keeps_history(tmp_path: Path) -> None:
    machine = tmp_path / "machine"
    point(machine, "linux-office")
    secrets = tmp_path / "device-secrets.yml"
    secrets.touch(mode=0o600)
    secrets.write_text(yaml.safe_dump({"devices": {"edge-router": {
        "username": USER, "password": PASSWORD, "secret": PASSWORD}}}))
    with fakenos([ROUTER]) as ports:
        inventory = inventory_with_router(tmp_path / "inventory.yml", ports["edge"])
        port = stack.free_port()
        server_config = fleet.write_server_config(tmp_path, port, inventory=str(inventory))
        agent_token, = fleet.issue_tokens(server_config, [(WARD, HOST)])
        store = Store(tmp_path / "server.db")
        admin = store.issue_admin_token("ops")
        store.close()
        agent_config = fleet.write_agent_config(
            tmp_path / "agent", f"http://127.0.0.1:{port}", WARD, HOST, agent_token,
            inventory=str(inventory), checks={
                "host": {"interval_seconds": 60},
                "peripherals": {"interval_seconds": 1, "os": "linux",
                                "sys_root": str(machine / "sys"),
                                "proc_root": str(machine / "proc"),
                                "lpstat_recorded": str(machine / "lpstat-v.txt")},
                "devices": {"enabled": True, "interval_seconds": 60,
                            "credentials_file": str(secrets)}})
        server = stack.start_server(server_config, tmp_path)
        agent = stack.start_agent(agent_config, tmp_path / "agent")
        try:
            def served() -> dict[str, float] | None:
                body = stack.http_get(f"http://127.0.0.1:{port}/metrics")
                values = fleet.metric_values(body) if body else {}
                ready = any(k.startswith("wardready_device_up{") for k in values)
                return values if ready and any("webcam" in k for k in values) else None
            values = stack.wait_until("device and peripheral metrics on the server", served,
                                      40, agent)
            labels = f'device="edge-router",device_type="cisco_ios",host="{HOST}"'
            assert values[f'wardready_device_up{{{labels},role="router",ward="{WARD}"}}'] == 1
            webcams = f'wardready_peripherals{{host="{HOST}",kind="webcam",ward="{WARD}"}}'
            assert values[webcams] == 1

            assets = admin_get(port, admin, "/api/v1/assets", ward=WARD)["assets"]
            kinds = {a["kind"] for a in assets}
            assert {"host", "network-device", "webcam", "printer"} <= kinds
            router = next(a for a in assets if a["kind"] == "network-device")
            assert router["key"] == "edge-router" and router["facts"]["serial"]

            point(machine, "linux-bare")  # the webcam and printer are unplugged

            def webcam_removed() -> list[dict[str, Any]] | None:
                changes = admin_get(port, admin, "/api/v1/assets/changes", ward=WARD)["changes"]
                gone = [c for c in changes if c["change"] == "removed"]
                return gone or None
            gone = stack.wait_until("the unplugged webcam in the change log", webcam_removed,
                                    20, agent)
            assert {"webcam", "printer"} <= {c["kind"] for c in gone}
            assert "network-device" not in {c["kind"] for c in gone}
        finally:
            agent.stop()
            server.stop()
    logs = (tmp_path / "server.log").read_text() + (tmp_path / "agent" / "agent.log").read_text()
    assert PASSWORD not in logs
