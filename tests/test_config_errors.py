"""Bad inventories, server and agent configs, token files: one line naming file and line,
exit code 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import fleet, stack
from tests.conftest import DATA
from wardready.agent.cli import main as agent_main
from wardready.agent.config import TOKEN_ENV, load_agent_config
from wardready.agent.spool import Spool
from wardready.core.errors import ConfigError
from wardready.core.inventory import load_inventory
from wardready.server.cli import main as server_main
from wardready.server.config import load_server_config

# (case, original text, replacement, marker of the offending line,
#  expected error after "file:line: ")
INVENTORY_CASES = [
    ("wrong type", "min_download_mbps: 50", "min_download_mbps: fast", "min_download_mbps",
     "profiles.ward-standard.link.min_download_mbps: Input should be a valid number, got 'fast'"),
    ("unknown key", "    kind: commune\n", "    kind: commune\n    mayor: someone\n", "mayor",
     "wards[1].mayor: unknown key"),
    ("duplicate ward id", "  - id: nha-be", "  - id: sai-gon", "  - id: sai-gon\n    name: Xã",
     "wards[1]: duplicate ward id 'sai-gon' (also wards[0])"),
    ("unknown working group", "working_group: wg-01", "working_group: wg-11", "wg-11",
     "wards[1].working_group: unknown working group 'wg-11' (expected one of: wg-01, wg-02)"),
    ("unknown profile", "  profile: ward-standard", "  profile: ward-deluxe", "ward-deluxe",
     "defaults.profile: unknown profile 'ward-deluxe' (expected one of: ward-standard)"),
    ("duplicate key", "    kind: ward\n", "    kind: ward\n    kind: commune\n", "kind: commune",
     "wards[0].kind: duplicate key (first at line 30)"),
    ("missing key", "    former_district: Nha Be District\n", "", "- id: nha-be",
     "wards[1].former_district: required key is missing"),
    ("bad enum", "kind: commune", "kind: district", "kind: district",
     "wards[1].kind: Input should be 'ward', 'commune' or 'special-zone', got 'district'"),
    ("bad device type", "device_type: cisco_ios", "device_type: cisco_xr", "cisco_xr",
     "wards[0].devices[0].device_type: Input should be 'cisco_ios', 'cisco_xe', 'cisco_nxos', "
     "'arista_eos', 'juniper_junos', 'mikrotik_routeros', 'hp_procurve', 'huawei' or 'linux', "
     "got 'cisco_xr'"),
    ("unknown call preset", "speakers: 1,", "speakers: 1, call: teams-hd,", "teams-hd",
     "profiles.ward-standard.video.call: unknown call preset 'teams-hd' (none is defined)"),
    ("unknown role", "roles: [conference-room]", "roles: [meeting-room]", "meeting-room",
     "profiles.ward-standard.video.roles[0]: unknown role 'meeting-room' (expected one of: "
     "conference-room, counter)"),
    ("duplicate role", "  - {id: counter,", "  - {id: conference-room,", "Reception",
     "roles[1]: duplicate role id 'conference-room' (also roles[0])"),
    ("inverted quiet window", 'start: "08:00", end: "10:00"', 'start: "10:00", end: "08:00"',
     "Past conference", "measurement_plan.quiet_windows[0].end: Value error, the window ends "
     "(08:00) before it starts (10:00); a window across midnight is written as two windows, "
     "got '08:00'"),
    ("overlapping quiet windows", 'working_group: wg-01, dates: [2020-01-07], start: "14:00"',
     'dates: [2020-01-06], start: "09:00"', "Past review",
     "measurement_plan.quiet_windows[1]: overlaps quiet_windows[0] ('Past conference', "
     "08:00-10:00) for the same city: merge them"),
    ("quiet window of an unknown working group", "working_group: wg-01, dates",
     "working_group: wg-09, dates", "Past review",
     "measurement_plan.quiet_windows[1].working_group: unknown working group 'wg-09' "
     "(expected one of: wg-01, wg-02)"),
    ("override of an unknown ward", "{working_group: wg-01, throughput",
     "{ward: tan-dinh, throughput", "tan-dinh",
     "measurement_plan.overrides[0].ward: unknown ward 'tan-dinh' (not in the inventory's "
     "wards)"),
    ("budget below one test", "daily_budget_mb: 1000000", "daily_budget_mb: 100",
     "daily_budget_mb", "measurement_plan.throughput.daily_budget_mb: 100 MB is below one "
     "test (test_max_mb: 1000 MB)"),
    ("plan time zone", "timezone: Asia/Ho_Chi_Minh", "timezone: Asia/Saigon_City",
     "timezone", "measurement_plan.timezone: Value error, unknown time zone "
     "'Asia/Saigon_City' (an IANA name such as Asia/Ho_Chi_Minh), got 'Asia/Saigon_City'"),
    ("time of day without quotes", 'start: "08:00"', "start: 10:00", "Past conference",
     'measurement_plan.quiet_windows[0].start: Value error, write times of day in quotes, '
     'e.g. "10:00" (unquoted, YAML reads them as numbers), got 600'),
    ("yaml syntax", "    name: Xã Nhà Bè", "    name: [Xã Nhà Bè", "kind: commune",
     "invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence at line 37)"),
]

AGENT_CASES = [
    ("unknown ward", "ward: sai-gon", "ward: tan-dinh", "ward:",
     "ward: unknown ward 'tan-dinh' (not in {dir}/inventory-small.yml)"),
    ("unknown key", "host: counter-01", "host: counter-01\nhostname: x", "hostname",
     "hostname: unknown key"),
    ("wrong type", "checks:", "listen_port: nine\nchecks:", "listen_port",
     "listen_port: Input should be a valid integer, got 'nine'"),
    ("unknown role", "host: counter-01", "host: counter-01\nrole: kiosk", "role:",
     "role: unknown role 'kiosk' (the inventory's roles: conference-room, counter)"),
    ("unknown check", "  host:\n", "  bandwidth_probe:\n", "bandwidth_probe",
     "checks.bandwidth_probe: unknown key"),
    ("bad interval", "interval_seconds: 300", "interval_seconds: -5", "interval_seconds",
     "checks.host.interval_seconds: Input should be greater than 0, got -5"),
    ("no token", "token_file: agent.token\n", "", "server_url",
     "token_file: no token: set token_file or the WARDREADY_TOKEN variable"),
    ("bad host name", "host: counter-01", "host: Counter 01", "host:",
     "host: String should match pattern '^[a-z0-9][a-z0-9-]{{0,62}}$', got 'Counter 01'"),
]


def _mutate(tmp: Path, name: str, old: str, new: str, marker: str) -> tuple[Path, int]:
    text = (DATA / name).read_text()
    assert old in text, f"test data lacks {old!r}"
    text = text.replace(old, new, 1)
    path = tmp / name
    path.write_text(text)
    line = text[: text.index(marker)].count("\n") + 1
    return path, line


@pytest.mark.parametrize(("case", "old", "new", "marker", "expected"), INVENTORY_CASES,
                         ids=[c[0] for c in INVENTORY_CASES])
def test_bad_inventory_is_one_line_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        case: str, old: str, new: str, marker: str, expected: str) -> None:
    path, line = _mutate(tmp_path, "inventory-small.yml", old, new, marker)
    (tmp_path / "server.yml").write_text("inventory: inventory-small.yml\n")
    code = server_main(["check-config", "--config", str(tmp_path / "server.yml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"wardready-server: {path}:{line}: {expected}\n"


@pytest.mark.parametrize(("case", "old", "new", "marker", "expected"), AGENT_CASES,
                         ids=[c[0] for c in AGENT_CASES])
def test_bad_agent_config_is_one_line_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        case: str, old: str, new: str, marker: str, expected: str) -> None:
    monkeypatch.delenv("WARDREADY_TOKEN", raising=False)
    shutil.copy(DATA / "inventory-small.yml", tmp_path)
    shutil.copy(DATA / "agent.token", tmp_path)
    path, line = _mutate(tmp_path, "agent-small.yml", old, new, marker)
    code = agent_main(["check-config", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"wardready-agent: {path}:{line}: {expected.format(dir=tmp_path)}\n"


def test_valid_small_configs_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["check-config", "--config", str(DATA / "agent-small.yml")]) == 0
    out = capsys.readouterr().out
    assert "ward sai-gon, host counter-01, checks: host every 300 s, latency every 300 s" in out
    assert out.endswith(": ok\n")


def test_shipped_inventory_is_valid_and_complete(inventory_path: Path) -> None:
    inv = load_inventory(inventory_path)
    # The ten groups of the June 2025 trials and one placeholder per province folded in.
    assert len(inv.working_groups) == 12
    assert len(inv.wards) == 168  # Resolution 1685/NQ-UBTVQH15 (tests/test_inventory_units.py)
    assert all(p.example for p in inv.profiles.values()), "example profiles must say so"
    assert inv.ward("sai-gon") is not None and inv.ward("sai-gon").former_district == "Quận 1"
    # Every working group supervises at least one ward.
    assert {w.working_group for w in inv.wards} == {g.id for g in inv.working_groups}


def test_cli_process_exits_2_without_traceback(tmp_path: Path) -> None:
    """As a user sees it: a real process, one line on stderr, exit code 2."""
    path, line = _mutate(tmp_path, "inventory-small.yml", "  - id: nha-be", "  - id: sai-gon",
                         "  - id: sai-gon\n    name: Xã")
    (tmp_path / "server.yml").write_text("inventory: inventory-small.yml\n")
    out = subprocess.run([sys.executable, "-m", "wardready.server.cli", "check-config", "--config",
                          str(tmp_path / "server.yml")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"wardready-server: {path}:{line}: wards[1]: duplicate ward id 'sai-gon' (also wards[0])"]
    assert "Traceback" not in out.stderr


def test_tokens_issue_rejects_unknown_ward(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(DATA / "inventory-small.yml", tmp_path)
    (tmp_path / "server.yml").write_text("inventory: inventory-small.yml\ndatabase: w.db\n")
    code = server_main(["tokens", "issue", "--config", str(tmp_path / "server.yml"),
                        "--ward", "tan-dinh", "--host", "pc-1"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"wardready-server: {tmp_path}/inventory-small.yml: --ward: unknown ward 'tan-dinh'\n")


def test_paths_in_check_sections_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "agent.yml"
    config.parent.mkdir()
    config.write_text("server_url: http://127.0.0.1:8470\nward: sai-gon\nhost: pc-1\n"
                      "token_file: agent.token\nchecks:\n  platforms: {ca_file: city-ca.pem}\n")
    loaded = load_agent_config(config)
    assert loaded.checks.platforms.ca_file == tmp_path / "etc" / "city-ca.pem"


# -- server.yml ------------------------------------------------------------------------------

@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """In `tmp_path`: a certificate and its key, another certificate's key, the key encrypted
    with a passphrase, a file that is neither, and a scrape token too short."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(tmp_path / "other.key"))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    (tmp_path / "locked.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase")))
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    (tmp_path / "short.token").write_text("tooshort\n")
    shutil.copy(DATA / "inventory-small.yml", tmp_path)
    return tmp_path


# (case, server.yml after its first line `inventory: inventory-small.yml`, marker of the
#  offending line, expected error after "file:line: "; {dir} is the config's folder)
SERVER_CASES = [
    ("unknown key", "listen_prot: 8470\n", "listen_prot", "listen_prot: unknown key"),
    ("wrong type", "listen_port: eighty\n", "listen_port",
     "listen_port: Input should be a valid integer, got 'eighty'"),
    ("wrong type in a section", "udp_echo:\n  max_packets: many\n", "max_packets",
     "udp_echo.max_packets: Input should be a valid integer, got 'many'"),
    ("out of range", "max_report_bytes: 10\n", "max_report_bytes",
     "max_report_bytes: Input should be greater than or equal to 1024, got 10"),
    ("time zone", "timezone: Asia/Saigon_City\n", "timezone",
     "timezone: Value error, unknown time zone 'Asia/Saigon_City' (an IANA name such as "
     "Asia/Ho_Chi_Minh), got 'Asia/Saigon_City'"),
    ("certificate missing", "tls:\n  cert_file: absent.pem\n  key_file: server.key\n",
     "cert_file", "tls.cert_file: cannot read {dir}/absent.pem: No such file or directory"),
    ("key missing", "tls:\n  cert_file: server.pem\n  key_file: absent.key\n", "key_file",
     "tls.key_file: cannot read {dir}/absent.key: No such file or directory"),
    ("not a certificate", "tls:\n  cert_file: notes.txt\n  key_file: server.key\n",
     "cert_file", "tls.cert_file: {dir}/notes.txt holds no PEM certificate"),
    ("a key given as the certificate", "tls:\n  cert_file: server.key\n  key_file: server.key\n",
     "cert_file", "tls.cert_file: {dir}/server.key holds no PEM certificate"),
    ("not a key", "tls:\n  cert_file: server.pem\n  key_file: notes.txt\n", "key_file",
     "tls.key_file: {dir}/notes.txt holds no PEM private key"),
    ("another certificate's key", "tls:\n  cert_file: server.pem\n  key_file: other.key\n",
     "key_file", "tls.key_file: {dir}/other.key is not the key of the certificate in "
     "{dir}/server.pem"),
    ("key with a passphrase", "tls:\n  cert_file: server.pem\n  key_file: locked.key\n",
     "key_file", "tls.key_file: {dir}/locked.key is encrypted with a passphrase, which the "
     "server cannot ask for: give it the key unencrypted, readable only by its user"),
    ("key file not given", "tls:\n  cert_file: server.pem\n", "tls:",
     "tls.key_file: required key is missing"),
    ("scrape token too short", "scrape_token_file: short.token\n", "scrape_token_file",
     "scrape_token_file: {dir}/short.token: the token must be at least 16 printable ASCII "
     "characters, without spaces"),
    ("scrape token missing", "scrape_token_file: absent.token\n", "scrape_token_file",
     "scrape_token_file: [Errno 2] No such file or directory: '{dir}/absent.token'"),
    ("remote write to ftp", "remote_write:\n  url: ftp://store/write\n", "url",
     "remote_write.url: Value error, expected an http:// or https:// URL with a host, got "
     "'ftp://store/write'"),
    ("remote write token missing", "remote_write:\n  url: http://store:9090/api/v1/write\n"
     "  bearer_token_file: absent.token\n", "bearer_token_file",
     "remote_write.bearer_token_file: [Errno 2] No such file or directory: "
     "'{dir}/absent.token'"),
    ("remote write unknown key", "remote_write:\n  url: http://store:9090/api/v1/write\n"
     "  max_age_days: 3\n", "max_age_days", "remote_write.max_age_days: unknown key"),
]


def _server_yml(folder: Path, rest: str, marker: str) -> tuple[Path, int]:
    text = "inventory: inventory-small.yml\n" + rest
    path = folder / "server.yml"
    path.write_text(text)
    return path, text[: text.index(marker)].count("\n") + 1


@pytest.mark.parametrize(("case", "rest", "marker", "expected"), SERVER_CASES,
                         ids=[c[0] for c in SERVER_CASES])
def test_bad_server_config_is_one_line_with_file_line_and_key(
        tls_files: Path, case: str, rest: str, marker: str, expected: str) -> None:
    path, line = _server_yml(tls_files, rest, marker)
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    assert str(caught.value) == f"{path}:{line}: {expected.format(dir=tls_files)}"


def test_the_tls_files_of_the_cases_are_good_together(tls_files: Path) -> None:
    """The cases above fail for the fault each brings, not for some other."""
    path, _ = _server_yml(tls_files, "tls:\n  cert_file: server.pem\n  key_file: server.key\n",
                          "tls")
    config = load_server_config(path)
    assert config.tls is not None and config.tls.key_file == tls_files / "server.key"


@pytest.mark.parametrize(("command", "rest", "marker", "expected"), [
    ("check-config", "listen_prot: 8470\n", "listen_prot", "listen_prot: unknown key"),
    ("serve", "tls:\n  cert_file: server.pem\n  key_file: other.key\n", "key_file",
     "tls.key_file: {dir}/other.key is not the key of the certificate in {dir}/server.pem"),
    ("serve", "timezone: Asia/Saigon_City\n", "timezone",
     "timezone: Value error, unknown time zone 'Asia/Saigon_City' (an IANA name such as "
     "Asia/Ho_Chi_Minh), got 'Asia/Saigon_City'"),
    ("serve", "scrape_token_file: short.token\n", "scrape_token_file",
     "scrape_token_file: {dir}/short.token: the token must be at least 16 printable ASCII "
     "characters, without spaces"),
], ids=["check-config unknown key", "serve wrong key", "serve time zone", "serve short token"])
def test_server_process_with_a_bad_config_exits_2_and_starts_nothing(
        tls_files: Path, command: str, rest: str, marker: str, expected: str) -> None:
    """As an operator sees it: the real command, one line on stderr, exit code 2; `serve`
    opens no database and listens nowhere."""
    port = stack.free_port()
    path, line = _server_yml(tls_files, f"listen_port: {port}\ndatabase: w.db\n" + rest,
                             marker)
    out = subprocess.run([stack.executable("wardready-server"), command, "--config",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"wardready-server: {path}:{line}: {expected.format(dir=tls_files)}"]
    assert out.stdout == ""
    assert not (tls_files / "w.db").exists() and stack.port_is_free(port)


# -- the agent's token file ------------------------------------------------------------------

@pytest.mark.parametrize(("case", "content", "expected"), [
    ("missing", None, "cannot read token file: No such file or directory"),
    ("empty", "", "token file is empty"),
    ("blank", " \n\n", "token file is empty"),
], ids=["missing", "empty", "blank"])
def test_agent_without_a_usable_token_exits_2_and_keeps_its_spool(
        tmp_path: Path, case: str, content: str | None, expected: str) -> None:
    """`wardready-agent run` as a real process: one line naming the token file, exit code 2,
    and the reports already in its spool are still there, untouched."""
    port = stack.free_port()
    config = fleet.write_agent_config(tmp_path, "http://127.0.0.1:9", "sai-gon", "pc-1",
                                      "unused", listen_port=port)
    token = tmp_path / "token"
    token.unlink()
    if content is not None:
        token.write_text(content)
    spool = Spool(tmp_path / "spool", 1 << 20, 86400)
    spool.put("waiting-1", b'{"n": 1}')
    spool.close()
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "spool").iterdir())
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    out = subprocess.run([stack.executable("wardready-agent"), "run", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"wardready-agent: {token}: {expected}"]
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "spool").iterdir()) == before
    assert stack.port_is_free(port)  # its /metrics never opened
