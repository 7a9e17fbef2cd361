"""Device logins. They never come from the inventory: a device's own environment variables,
its entry in a secrets file readable only by the agent's user, then the defaults of both."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wardready.checks.base import DeviceTarget
from wardready.checks.devices.config import Config
from wardready.core.errors import CredentialsError

ENV_PREFIX = "WARDREADY_DEVICE_"


@dataclass(frozen=True)
class Credentials:
    """A login; secrets are kept out of repr so they cannot reach a log by accident."""

    username: str
    password: str = field(repr=False)
    secret: str = field(default="", repr=False)


class _Login(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    secret: str = ""


class _SecretsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    default: _Login | None = None
    devices: dict[str, _Login] = {}


def load_credentials_file(path: Path) -> _SecretsFile:
    """Read the secrets file, refusing one that group or others may read."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read credentials file: "
                               f"{exc.strerror or exc}") from None
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        raise CredentialsError(f"{path}: credentials file is readable by group or others "
                               f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return _SecretsFile.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise CredentialsError(f"{path}: cannot read credentials file: "
                               f"{type(exc).__name__}") from None
    except ValidationError as exc:
        # Only where the mistake is: the values themselves may be secrets.
        where = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise CredentialsError(f"{path}: invalid credentials file at {where}") from None


def _env_login(environ: Mapping[str, str], prefix: str) -> Credentials | None:
    username, password = environ.get(prefix + "USERNAME"), environ.get(prefix + "PASSWORD")
    if not username or not password:
        return None
    return Credentials(username, password, environ.get(prefix + "SECRET", ""))


def env_name(device: str) -> str:
    """The prefix of a device's own environment variables, e.g. WARDREADY_DEVICE_CORE_SW_1_."""
    return f"{ENV_PREFIX}{re.sub(r'[^A-Za-z0-9]', '_', device).upper()}_"


def resolve_credentials(devices: Iterable[DeviceTarget], config: Config,
                        environ: Mapping[str, str] | None = None
                        ) -> dict[str, Credentials | None]:
    """Each device's login: the first complete one of its own environment variables, its
    entry in the secrets file, the default environment variables, the file's default."""
    env = os.environ if environ is None else environ
    file = load_credentials_file(config.credentials_file) if config.credentials_file else None

    def from_file(login: _Login | None) -> Credentials | None:
        return Credentials(login.username, login.password, login.secret) if login else None

    resolved: dict[str, Credentials | None] = {}
    for device in devices:
        candidates = (
            _env_login(env, env_name(device.name)),
            from_file(file.devices.get(device.name)) if file else None,
            _env_login(env, ENV_PREFIX),
            from_file(file.default) if file else None,
        )
        resolved[device.name] = next((c for c in candidates if c), None)
    return resolved
