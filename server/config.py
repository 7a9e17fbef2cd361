"""The server's own configuration file, validated strictly on load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from wardready.configfile import load

FilePath = Annotated[Path, Field(strict=False)]
"""A path given as text in YAML."""


class ServerConfig(BaseModel):
    """Where the server listens and keeps its data. Relative paths are relative to the file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8470, ge=1, le=65535)
    database: FilePath = Path("wardready.db")
    inventory: FilePath = Path("inventory.yml")
    max_report_bytes: int = Field(default=1 << 20, ge=1024)


def load_server_config(path: Path | None) -> ServerConfig:
    """Load the config file (or the defaults when there is none), resolving relative paths."""
    if path is None:
        return ServerConfig()
    config, _ = load(path, ServerConfig)
    return config.model_copy(update={
        "database": path.parent / config.database,
        "inventory": path.parent / config.inventory,
    })
