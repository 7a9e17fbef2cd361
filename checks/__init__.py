"""The probes: a plain library. Each module is one check; `REGISTRY` maps names to checks.

Nothing here imports the agent or the server.
"""

from __future__ import annotations

from wardready.checks import (
    bandwidth,
    devices,
    host,
    lasthop,
    latency,
    media,
    neighbours,
    path,
    peripherals,
    platforms,
    probe,
)
from wardready.checks.base import CheckConfig, CheckResult, CheckSpec, Context, ServerLink, Target

REGISTRY: dict[str, CheckSpec] = {}


def register(spec: CheckSpec) -> None:
    """Add a check to the registry; a name that is taken is a programming error."""
    if spec.name in REGISTRY:
        raise ValueError(f"check name {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec


register(host.CHECK)
register(latency.CHECK)
register(bandwidth.CHECK)
register(platforms.CHECK)
register(media.CHECK)
register(neighbours.CHECK)
register(peripherals.CHECK)
register(devices.CHECK)
register(probe.CHECK)
register(lasthop.CHECK)
register(path.CHECK)

__all__ = ["REGISTRY", "CheckConfig", "CheckResult", "CheckSpec", "Context", "ServerLink",
           "Target", "register"]
