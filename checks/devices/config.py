"""The devices check's settings: how to reach the devices, where their credentials are, and
how long each may take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from wardready.checks.base import CheckConfig


class Config(CheckConfig):
    """How to reach the devices, where their credentials are, and how long each may take."""

    enabled: bool = False
    """Off by default: one agent per ward polls its devices (e.g. the conference-room PC's),
    not every counter PC."""
    interval_seconds: float = Field(default=900.0, gt=0)
    timeout_seconds: float = Field(default=300.0, gt=0)
    credentials_file: Annotated[Path, Field(strict=False)] | None = None
    """YAML with `default:` and/or `devices: {name: ...}` entries of username, password and
    (enable) secret; it must not be readable by group or others."""
    max_concurrent: int = Field(default=4, ge=1, le=32)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    banner_timeout_seconds: float = Field(default=10.0, gt=0)
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=20.0, gt=0)
    """For each command's output (and netmiko's prompt detection)."""
    device_timeout_seconds: float = Field(default=60.0, gt=0)
    """Deadline for one device, from TCP connect to the last command."""
    known_hosts_file: Annotated[Path, Field(strict=False)] | None = None
    """OpenSSH known_hosts with the devices' host keys (`ssh-keyscan -p PORT ADDRESS`); when
    given, a device whose key is missing from it or differs is not logged into (reason
    `host-key`). Without it any key is accepted: a machine posing as the router would get
    the login."""

    @model_validator(mode="after")
    def _deadlines_fit(self) -> Config:
        # Otherwise the agent cancels the whole check and every device's result is lost.
        if self.device_timeout_seconds >= self.timeout_seconds:
            raise ValueError("device_timeout_seconds must be less than timeout_seconds")
        return self
