"""`wardready-agent enroll`: trade a one-time enrollment code for this agent's token, write the
token file and agent.yml beside each other, then prove the written config reaches the server.

Usage mistakes (a config already there, a bad host name, a missing CA file) raise ConfigError
(exit 2) before anything is sent; the server's refusals and network or TLS failures raise
EnrollError (exit 1). The code and the token are never printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wardready.agent.config import load_agent_config, read_token
from wardready.agent.spool import fsync_directory
from wardready.checks.base import server_tls
from wardready.core import enrollment
from wardready.core.api import ENROLL_PATH, WHOAMI_PATH
from wardready.core.errors import ConfigError, EnrollError

TOKEN_FILE = "agent.token"
STATE_DIR = Path("/var/lib/wardready")
"""The systemd unit's StateDirectory: the only place the service may write."""
SERVICE_USER = "wardready"
TIMEOUT_SECONDS = 30.0
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class EnrollOptions:
    """What the technician gave on the command line."""

    server: str
    ward: str
    code: str
    config: Path
    host: str | None = None
    role: str | None = None
    ca_file: Path | None = None
    force: bool = False


def host_slug(name: str) -> str:
    """A machine name as a valid host id: first DNS label, lower case, runs of anything but
    a-z and 0-9 as one '-' (e.g. 'DESKTOP-4F2K_1.city.local' -> 'desktop-4f2k-1')."""
    label = name.split(".")[0].lower()
    return re.sub(r"[^a-z0-9]+", "-", label).strip("-")[:63].rstrip("-")


def enroll(opts: EnrollOptions, say: Callable[[str], None] = print) -> None:
    """Redeem the code, write the token file and config, verify them; raises on failure."""
    server = _server_url(opts.server)
    host = _check_inputs(opts)
    token_path = opts.config.parent / TOKEN_FILE
    for path in (opts.config, token_path):
        if path.exists() and not opts.force:
            raise ConfigError(str(path), 0, "", "already exists; give --force to replace it")
    temps: list[Path] = []
    try:
        try:
            opts.config.parent.mkdir(parents=True, exist_ok=True)
            # Both files are created before the code is spent, so an unwritable directory
            # cannot waste it; mkstemp makes them mode 600: never readable by others.
            temps += [_temp(token_path), _temp(opts.config)]
        except OSError as exc:
            raise ConfigError(str(opts.config.parent), 0, "",
                              f"cannot write here: {exc.strerror or exc}") from None
        token_tmp, config_tmp = temps
        context = _tls(server, opts.ca_file)
        wanted = {"code": opts.code, "host": host, "ward": opts.ward}
        if opts.role is not None:
            wanted["role"] = opts.role
        status, answer = _call(server, ENROLL_PATH, context, wanted)
        if status != 200:
            raise EnrollError(f"{server} refused the enrollment ({status}): "
                              f"{answer.get('error', 'no reason given')}")
        token, ward = str(answer.get("token", "")), answer.get("ward")
        if not token or (ward, answer.get("host")) != (opts.ward, host):
            raise EnrollError(f"{server} answered the enrollment unexpectedly (for ward "
                              f"{ward!r} host {answer.get('host')!r})")
        owner = _service_owner()
        _write(token_tmp, token_path, token + "\n", 0o600, owner)
        _write(config_tmp, opts.config, _config_text(server, opts.ward, host, opts.role,
                                                     token_path, opts.ca_file), 0o640,
               (0, owner[1]) if owner else None)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    with contextlib.suppress(OSError):  # make the renames durable
        fsync_directory(opts.config.parent)
    say(f"enrolled ward {opts.ward} host {host} with {server}")
    say(f"wrote {token_path} (mode 600{f', owner {SERVICE_USER}' if owner else ''}) and "
        f"{opts.config} (mode 640{f', group {SERVICE_USER}' if owner else ''})")
    if owner is None and _is_root():
        say(f"note: no user {SERVICE_USER!r} here; create it before enabling the service "
            f"(useradd --system --home {STATE_DIR} --shell /usr/sbin/nologin {SERVICE_USER}), "
            "then chown the token file to it")
    say(_verify(opts.config))
    say("next steps:")
    say(f"  wardready-agent check-config --config {opts.config}")
    say(f"  wardready-agent check --config {opts.config}    (the verdict for this PC, now)")
    say("  systemctl enable --now wardready-agent    (Windows: docs/install.md)")


def _server_url(raw: str) -> str:
    url = urllib.parse.urlsplit(raw.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("command line", 0, "--server",
                          f"expected an http:// or https:// URL, got {raw[:100]!r}")
    if url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
        print(f"wardready-agent: warning: {raw} is plain HTTP: the token will cross the "
              "network unencrypted; use https", file=sys.stderr)
    return raw.strip().rstrip("/")


def _check_inputs(opts: EnrollOptions) -> str:
    """The host name to enroll as, once every argument is known to be usable."""
    if not _SLUG.match(opts.ward):
        raise ConfigError("command line", 0, "--ward",
                          f"{opts.ward!r} is not a ward id (a-z, 0-9 and '-')")
    if opts.host is not None:
        host = opts.host
        if not _SLUG.match(host):
            raise ConfigError("command line", 0, "--host",
                              f"{host!r} is not a valid host name (a-z, 0-9 and '-')")
    else:
        host = host_slug(socket.gethostname())
        if not _SLUG.match(host):
            raise ConfigError("command line", 0, "--host", "cannot make a host name of this "
                              f"machine's name {socket.gethostname()!r}; give --host")
    # The server is the judge; this only catches a mistyped code before it counts as a guess.
    if enrollment.normalise_code(opts.code) is None:
        raise ConfigError("command line", 0, "--code", "not an enrollment code (expected "
                          "wre- and six groups of five letters or digits)")
    if opts.role is not None and not _SLUG.match(opts.role):
        raise ConfigError("command line", 0, "--role",
                          f"{opts.role!r} is not a role id (a-z, 0-9 and '-')")
    if opts.ca_file is not None and not opts.ca_file.is_file():
        raise ConfigError(str(opts.ca_file), 0, "--ca-file", "no such file")
    return host


def _tls(server: str, ca_file: Path | None) -> ssl.SSLContext | None:
    if not server.startswith("https:"):
        return None
    try:
        return server_tls(ca_file.resolve() if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(str(ca_file), 0, "--ca-file", f"not a PEM CA bundle: {exc}") from None


def _call(server: str, path: str, context: ssl.SSLContext | None,
          body: dict[str, Any] | None = None, token: str | None = None
          ) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of one request; EnrollError naming what went wrong otherwise."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server + path, headers=headers, method=(
        "POST" if body is not None else "GET"), data=json.dumps(body).encode() if body else None)
    # No proxy from the environment: the agent itself never uses one, so neither does this.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise EnrollError(f"cannot reach {server}: {_why(exc.reason)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(f"cannot reach {server}: {_why(exc)}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise EnrollError(f"{server}{path} answered {status} with something that is not "
                          "wardready's JSON: is this the wardready server?")
    return status, answer


def _why(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"TLS: the server's certificate cannot be verified ({reason.verify_message}); "
                "give the city's CA bundle with --ca-file")
    if isinstance(reason, ssl.SSLError):
        return f"TLS failure ({reason.reason or reason}); is the server speaking https?"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve its name ({reason.strerror})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the server running, and the port right?)"
    if isinstance(reason, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _temp(final: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.")
    os.close(fd)
    return Path(name)


def _write(tmp: Path, final: Path, text: str, mode: int,
           owner: tuple[int, int] | None) -> None:
    """Fill a temp file made by `_temp`, set its mode and owner, then rename it into place."""
    with tmp.open("w", encoding="utf-8") as out:
        os.chmod(tmp, mode)  # before the content: the token is never in a wider-mode file
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, final)


def _service_owner() -> tuple[int, int] | None:
    """(uid, gid) of the service user when run as root and that user exists, else None."""
    if not _is_root():
        return None
    import pwd
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def _config_text(server: str, ward: str, host: str, role: str | None, token_path: Path,
                 ca_file: Path | None) -> str:
    config: dict[str, Any] = {"server_url": server, "ward": ward, "host": host,
                              "token_file": token_path.name}
    if role is not None:
        config["role"] = role
    if ca_file is not None:
        config["ca_file"] = str(ca_file.resolve())
    # Under /etc the service may not write (ProtectSystem=strict): the spool goes to its
    # StateDirectory. Elsewhere (Windows, a test) it stays beside the config.
    in_etc = os.name == "posix" and token_path.resolve().is_relative_to("/etc")
    config["spool_path"] = str(STATE_DIR / "spool") if in_etc else "spool"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f"# Written by `wardready-agent enroll` on {stamp}; every other key has its default\n"
            "# (docs/configuration.md, 'agent.yml'). The token is in token_file, mode 600.\n"
            + yaml.safe_dump(config, sort_keys=False))


def _verify(config_path: Path) -> str:
    """Load the written config as the agent will, then GET /healthz and an authenticated
    no-op (/api/v1/whoami) with its token; nothing is stored on the server."""
    config = load_agent_config(config_path)
    server = str(config.server_url).rstrip("/")
    context = _tls(server, config.ca_file)
    try:
        status, answer = _call(server, "/healthz", context)
        if status != 200:
            raise EnrollError(f"{server}/healthz answered {status}: {answer.get('error')}")
        status, answer = _call(server, WHOAMI_PATH, context, token=read_token(config))
        if status != 200:
            raise EnrollError(f"{server} refused the new token ({status}): "
                              f"{answer.get('error')}")
    except EnrollError as exc:
        raise EnrollError(f"enrolled and wrote {config_path}, but verifying it failed: {exc}"
                          ) from None
    if (answer.get("ward"), answer.get("host")) != (config.ward, config.host):
        raise EnrollError(f"the server knows this token as {answer.get('ward')}/"
                          f"{answer.get('host')}, not {config.ward}/{config.host}")
    return (f"verified: {server}/healthz ok, and the server knows this agent's token as ward "
            f"{config.ward} host {config.host}")
