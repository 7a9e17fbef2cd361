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
from wardready.core.i18n import _

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
            raise ConfigError(str(path), 0, "", _("already exists; give --force to replace it"))
    temps: list[Path] = []
    try:
        try:
            opts.config.parent.mkdir(parents=True, exist_ok=True)
            # Both files are created before the code is spent, so an unwritable directory
            # cannot waste it; mkstemp makes them mode 600: never readable by others.
            temps += [_temp(token_path), _temp(opts.config)]
        except OSError as exc:
            raise ConfigError(str(opts.config.parent), 0, "", _(
                "cannot write here: {error}").format(error=exc.strerror or exc)) from None
        token_tmp, config_tmp = temps
        context = _tls(server, opts.ca_file)
        wanted = {"code": opts.code, "host": host, "ward": opts.ward}
        if opts.role is not None:
            wanted["role"] = opts.role
        status, answer = _call(server, ENROLL_PATH, context, wanted)
        if status != 200:
            raise EnrollError(_("{server} refused the enrollment ({status}): {reason}").format(
                server=server, status=status,
                reason=answer.get("error") or _("no reason given")))
        token, ward = str(answer.get("token", "")), answer.get("ward")
        if not token or (ward, answer.get("host")) != (opts.ward, host):
            raise EnrollError(_("{server} answered the enrollment unexpectedly (for ward "
                                "{ward} host {host})").format(
                                    server=server, ward=repr(ward),
                                    host=repr(answer.get("host"))))
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
    say(_("enrolled ward {ward} host {host} with {server}").format(ward=opts.ward, host=host,
                                                                   server=server))
    files = {"token": token_path, "config": opts.config, "user": SERVICE_USER}
    say((_("wrote {token} (mode 600, owner {user}) and {config} (mode 640, group {user})")
         if owner else _("wrote {token} (mode 600) and {config} (mode 640)")).format(**files))
    if owner is None and _is_root():
        say(_("note: no user {user} here; create it before enabling the service ({command}), "
              "then chown the token file to it").format(
                  user=repr(SERVICE_USER), command=f"useradd --system --home {STATE_DIR} "
                  f"--shell /usr/sbin/nologin {SERVICE_USER}"))
    say(_verify(opts.config))
    say(_("next steps:"))
    say(f"  wardready-agent check-config --config {opts.config}")
    say("  " + _("{command}    (the verdict for this PC, now)").format(
        command=f"wardready-agent check --config {opts.config}"))
    say("  " + _("{command}    (Windows: docs/install.md)").format(
        command="systemctl enable --now wardready-agent"))


def _server_url(raw: str) -> str:
    url = urllib.parse.urlsplit(raw.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(_("command line"), 0, "--server",
                          _("expected an http:// or https:// URL, got {value}").format(
                              value=repr(raw[:100])))
    if url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
        print("wardready-agent: " + _("warning: {url} is plain HTTP: the token will cross the "
                                      "network unencrypted; use https").format(url=raw),
              file=sys.stderr)
    return raw.strip().rstrip("/")


def _check_inputs(opts: EnrollOptions) -> str:
    """The host name to enroll as, once every argument is known to be usable."""
    if not _SLUG.match(opts.ward):
        raise ConfigError(_("command line"), 0, "--ward",
                          _("{value} is not a ward id (a-z, 0-9 and '-')").format(
                              value=repr(opts.ward)))
    if opts.host is not None:
        host = opts.host
        if not _SLUG.match(host):
            raise ConfigError(_("command line"), 0, "--host",
                              _("{value} is not a valid host name (a-z, 0-9 and '-')").format(
                                  value=repr(host)))
    else:
        host = host_slug(socket.gethostname())
        if not _SLUG.match(host):
            raise ConfigError(_("command line"), 0, "--host", _(
                "cannot make a host name of this machine's name {name}; give --host").format(
                    name=repr(socket.gethostname())))
    # The server is the judge; this only catches a mistyped code before it counts as a guess.
    if enrollment.normalise_code(opts.code) is None:
        raise ConfigError(_("command line"), 0, "--code", _(
            "not an enrollment code (expected wre- and six groups of five letters or digits)"))
    if opts.role is not None and not _SLUG.match(opts.role):
        raise ConfigError(_("command line"), 0, "--role",
                          _("{value} is not a role id (a-z, 0-9 and '-')").format(
                              value=repr(opts.role)))
    if opts.ca_file is not None and not opts.ca_file.is_file():
        raise ConfigError(str(opts.ca_file), 0, "--ca-file", _("no such file"))
    return host


def _tls(server: str, ca_file: Path | None) -> ssl.SSLContext | None:
    if not server.startswith("https:"):
        return None
    try:
        return server_tls(ca_file.resolve() if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(str(ca_file), 0, "--ca-file",
                          _("not a PEM CA bundle: {error}").format(error=exc)) from None


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
        raise EnrollError(_("cannot reach {server}: {why}").format(
            server=server, why=_why(exc.reason))) from None
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(_("cannot reach {server}: {why}").format(
            server=server, why=_why(exc))) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise EnrollError(_("{url} answered {status} with something that is not wardready's "
                            "JSON: is this the wardready server?").format(
                                url=server + path, status=status))
    return status, answer


def _why(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return _("TLS: the server's certificate cannot be verified ({why}); give the city's "
                 "CA bundle with --ca-file").format(why=reason.verify_message)
    if isinstance(reason, ssl.SSLError):
        return _("TLS failure ({why}); is the server speaking https?").format(
            why=reason.reason or reason)
    if isinstance(reason, socket.gaierror):
        return _("cannot resolve its name ({why})").format(why=reason.strerror)
    if isinstance(reason, ConnectionRefusedError):
        return _("connection refused (is the server running, and the port right?)")
    if isinstance(reason, TimeoutError):
        return _("no answer within {seconds:g} s").format(seconds=TIMEOUT_SECONDS)
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
            raise EnrollError(_("{url} answered {status}: {error}").format(
                url=f"{server}/healthz", status=status, error=answer.get("error")))
        status, answer = _call(server, WHOAMI_PATH, context, token=read_token(config))
        if status != 200:
            raise EnrollError(_("{server} refused the new token ({status}): {error}").format(
                server=server, status=status, error=answer.get("error")))
    except EnrollError as exc:
        raise EnrollError(_("enrolled and wrote {config}, but verifying it failed: {error}")
                          .format(config=config_path, error=exc)) from None
    if (answer.get("ward"), answer.get("host")) != (config.ward, config.host):
        raise EnrollError(_("the server knows this token as {known}, not {expected}").format(
            known=f"{answer.get('ward')}/{answer.get('host')}",
            expected=f"{config.ward}/{config.host}"))
    return _("verified: {url} ok, and the server knows this agent's token as ward {ward} host "
             "{host}").format(url=f"{server}/healthz", ward=config.ward, host=config.host)
