"""The session's scan of its logs for secrets (tests/conftest.py) finds what it must."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.conftest import find_secrets, known_secrets, log_files
from wardready.server.store import Store


def test_a_token_a_code_and_a_password_planted_in_a_log_are_found_and_not_printed(
        tmp_path: Path) -> None:
    with Store(tmp_path / "w.db") as store:
        token = store.issue_token("sai-gon", "pc-1")
        code, _ = store.issue_enrollment("sai-gon", None, 1)
    token_id, secret = token.removeprefix("wrt_").split(".")
    password = "Pa55-planted-" + secrets.token_hex(4)
    # not *.log: the session's own scan must not find these
    log = tmp_path / "planted.txt"
    log.write_text(f"INFO token {token_id} for sai-gon/pc-1\n"  # an id alone is allowed
                   f"INFO enrollment {code.split('-')[1]} redeemed\n"
                   f"WARNING refused Bearer {token}\n"
                   f"DEBUG body {{\"code\": \"{code.upper()}\"}}\n"
                   f"DEBUG code typed as {code.replace('-', '')}\n"
                   f"ERROR login with {password} refused\n")
    leaks = find_secrets([log], {password, "a"})
    assert [(leak.line, leak.kind) for leak in leaks] == [
        (3, "bearer token"), (4, "enrollment code"), (5, "enrollment code"),
        (6, "known secret")]
    printed = "\n".join(map(str, leaks))
    for secret_part in (secret, code.split("-", 2)[2], code.replace("-", "")[8:], password):
        assert secret_part.lower() not in printed.lower()
    assert f"planted.txt:3: bearer token wrt_{token_id}." in printed


def test_clean_logs_pass_and_the_run_s_logs_and_token_files_are_found(tmp_path: Path) -> None:
    server = tmp_path / "srv" / "server.log"
    server.parent.mkdir()
    server.write_text("INFO admin fuzz issued token 0123456789ab for sai-gon/pc-9\n"
                      "INFO enrollment 7k2m9 redeemed by 127.0.0.1: token 0123456789ab\n"
                      "WARNING wrt_0123456789ab. is not a token\n")
    rotated = tmp_path / "agent.log.1"
    rotated.write_text("x\n")
    (tmp_path / "notes.txt").write_text("not a log\n")
    elsewhere = tmp_path / "other" / "prometheus.out"
    elsewhere.parent.mkdir()
    elsewhere.write_text("y\n")
    found = log_files(tmp_path, [elsewhere, tmp_path / "gone.log"])
    assert found == sorted([server, rotated, elsewhere])
    assert find_secrets(found) == []
    with Store(tmp_path / "w.db") as store:
        token = store.issue_token("sai-gon", "pc-1")
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "token").write_text(token + "\n")
    assert token.split(".")[1] in known_secrets(tmp_path)

