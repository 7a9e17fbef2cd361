"""The agent's configuration file, validated strictly on load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from wardready.checks import REGISTRY
from wardready.checks.base import CheckConfig, Context, ServerLink
from wardready.core.configfile import load
from wardready.core.errors import ConfigError
from wardready.core.i18n import Language, _
from wardready.core.inventory import HttpURL, Slug, load_inventory
from wardready.model.report import MAX_REPORT_AGE_SECONDS

FilePath = Annotated[Path, Field(strict=False)]
TOKEN_ENV = "WARDREADY_TOKEN"

_sections: dict[str, Any] = {name: (spec.config_model, spec.config_model())
                             for name, spec in REGISTRY.items()}
ChecksConfig: type[BaseModel] = create_model(  # one optional section per registered check
    "ChecksConfig", __config__=ConfigDict(extra="forbid", strict=True, frozen=True), **_sections)


class AgentConfig(BaseModel):
    """Who this agent is, where it reports, and how often each check runs."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    server_url: HttpURL
    ward: Slug
    host: Slug
    role: Slug | None = Field(
        default=None, description="What this PC is for: an inventory role id (e.g. "
        "conference-room). Unset, it is judged as a PC that holds video calls.")
    token_file: FilePath | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=9471, ge=0, le=65535)
    inventory: FilePath | None = Field(
        default=None, description="Local inventory copy; when given, the ward must be in it.")
    start_jitter_seconds: float | None = Field(
        default=None, ge=0, description="Spread of first runs; default: each check's interval.")
    ca_file: FilePath | None = Field(
        default=None, description="CA bundle to verify the server's certificate with.")
    delivery_timeout_seconds: float = Field(default=30.0, gt=0)
    delivery_backoff_max_seconds: float = Field(
        default=60.0, gt=0, description="Longest wait between retries while the server is away.")
    spool_path: FilePath = Path("spool")
    spool_max_bytes: int = Field(default=64 << 20, ge=1 << 16)
    spool_max_age_seconds: float = Field(
        default=14 * 86400, gt=0, le=MAX_REPORT_AGE_SECONDS, description=(
            "Reports older than this are dropped undelivered (the server refuses those older "
            "than 90 days)."))
    follow_plan: bool = Field(default=True, description=(
        "Run the throughput test when the server's measurement plan says (false: every "
        "checks.bandwidth.interval_seconds, as before the plan)."))
    language: Language | None = Field(default=None, description=(
        "The language of what the agent's commands print (en, vi); `--lang` wins over it, "
        "and without either the locale decides."))
    checks: ChecksConfig = ChecksConfig()

    def check_configs(self) -> dict[str, CheckConfig]:
        """Each enabled check's config, by check name."""
        configs: dict[str, CheckConfig] = {name: getattr(self.checks, name) for name in REGISTRY}
        return {name: c for name, c in configs.items() if c.enabled}

    def context(self, server: ServerLink | None) -> Context:
        """What the checks need to know: the local inventory's platforms and this ward's
        devices (none without a local inventory), and the server."""
        inventory = load_inventory(self.inventory) if self.inventory else None
        return Context.of_ward(inventory, self.ward, server)


def load_agent_config(path: Path) -> AgentConfig:
    """Load and validate the agent config; relative paths are relative to the file."""
    config, doc = load(path, AgentConfig)
    update: dict[str, Any] = {}
    for field in ("token_file", "inventory", "ca_file", "spool_path"):
        value = getattr(config, field)
        if value is not None:
            update[field] = path.parent / value
    sections = {}
    for name in REGISTRY:  # paths inside check sections too (e.g. platforms.ca_file)
        section = getattr(config.checks, name)
        paths = {k: path.parent / v for k, v in section if isinstance(v, Path)}
        sections[name] = section.model_copy(update=paths)
    update["checks"] = config.checks.model_copy(update=sections)
    config = config.model_copy(update=update)
    if config.inventory is not None:
        inventory = load_inventory(config.inventory)
        if inventory.ward(config.ward) is None:
            raise doc.error(("ward",), _("unknown ward {ward} (not in {inventory})").format(
                ward=repr(config.ward), inventory=config.inventory))
        roles = [r.id for r in inventory.roles]
        if config.role is not None and config.role not in roles:
            raise doc.error(("role",), _("unknown role {role} (the inventory's roles: "
                                         "{roles})").format(role=repr(config.role),
                                                            roles=", ".join(roles) or _("none")))
    if config.token_file is None and not os.environ.get(TOKEN_ENV):
        raise doc.error(("token_file",), _("no token: set token_file or the {variable} "
                                           "variable").format(variable=TOKEN_ENV))
    return config


def read_token(config: AgentConfig) -> str:
    """The agent's bearer token: the environment wins over the token file."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token.strip()
    assert config.token_file is not None
    try:
        token = config.token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(str(config.token_file), 0, "", _("cannot read token file: {error}")
                          .format(error=exc.strerror or exc)) from None
    if not token:
        raise ConfigError(str(config.token_file), 0, "", _("token file is empty"))
    return token
