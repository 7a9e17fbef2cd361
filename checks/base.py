"""The interface every check shares: a config, an async run, a typed result and its metrics."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wardready.metrics import MetricSpec, Sample


class CheckConfig(BaseModel):
    """Settings every check has; a check's own config subclasses this."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool = True
    interval_seconds: float = Field(default=300.0, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0)


class ResultModel(BaseModel):
    """Base of results and their parts: lenient types (they travel as JSON), bounded text,
    finite numbers, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              str_max_length=1024)


class CheckResult(ResultModel):
    """Base of every check's typed result."""


@dataclass(frozen=True)
class ServerLink:
    """The agent's own server, for checks that measure against it (speed test, UDP echo)."""

    url: str
    """Base URL, e.g. `https://wardready.example:8470`."""
    token: str
    ca_file: Path | None = None
    """CA bundle to verify the server's certificate; None means the system's CAs."""


def server_tls(ca_file: Path | None) -> ssl.SSLContext:
    """Verify the agent's server against the system's CAs, or only `ca_file` when given."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class Target:
    """Something a check probes by name, e.g. a city platform from the inventory."""

    id: str
    url: str


@dataclass(frozen=True)
class Context:
    """What the agent knows that checks may need; every check's `run(config, context)` gets it."""

    server: ServerLink | None = None
    platforms: tuple[Target, ...] = ()


@dataclass(frozen=True)
class CheckSpec:
    """A check as the agent schedules it and the server ingests it."""

    name: str
    config_model: type[CheckConfig]
    result_model: type[CheckResult]
    run: Callable[[Any, Context], Coroutine[Any, Any, CheckResult]]
    metrics: tuple[MetricSpec, ...]
    samples: Callable[[Any], Iterable[Sample]]
