"""The ward's routers and switches, polled over SSH with netmiko.

For each device of the inventory (`context.devices`): model, OS version, serial, hostname,
uptime, interfaces (admin and operational state, speed, duplex, error counters), CPU and memory
where the platform tells them. Network operating systems are parsed with ntc-templates' TextFSM
templates; netmiko's `linux` type with one shell command and a small parser of our own.

Credentials never come from the inventory: environment variables or a secrets file readable
only by the agent's user. netmiko is imported only when a ward has devices to poll.

Modules: `config`, `result` (the typed result), `credentials`, `recipes` (commands and TextFSM
parsing per platform), `linux` (the `linux` type's command and parser), `session` (one
device's SSH poll), `metrics`. Here: the check itself, and the names its callers use.
"""

from __future__ import annotations

import asyncio

from wardready.checks.base import CheckSpec, Context, DeviceTarget
from wardready.checks.devices.config import Config
from wardready.checks.devices.credentials import (
    ENV_PREFIX,
    Credentials,
    env_name,
    load_credentials_file,
    resolve_credentials,
)
from wardready.checks.devices.metrics import METRICS, inventory, samples
from wardready.checks.devices.result import (
    MAX_DEVICES,
    MAX_INTERFACES,
    DevicePoll,
    Facts,
    Interface,
    Result,
    is_physical_port,
)
from wardready.checks.devices.session import poll


async def run(config: Config, context: Context) -> Result:
    """Poll every device, at most `max_concurrent` at a time; one failing device never
    affects the others, and a Result comes back even if all of them failed."""
    devices = context.devices
    if len(devices) > MAX_DEVICES:
        raise ValueError(f"{len(devices)} devices; at most {MAX_DEVICES} are polled")
    if not devices:
        return Result(devices=[])
    logins = resolve_credentials(devices, config)
    bound = asyncio.Semaphore(config.max_concurrent)

    async def bounded(device: DeviceTarget) -> DevicePoll:
        async with bound:
            return await poll(device, logins[device.name], config)

    return Result(devices=list(await asyncio.gather(*(bounded(d) for d in devices))))


CHECK = CheckSpec(name="devices", config_model=Config, result_model=Result, run=run,
                  metrics=METRICS, samples=samples, inventory=inventory,
                  isolated=True)

__all__ = ["CHECK", "ENV_PREFIX", "MAX_DEVICES", "MAX_INTERFACES", "METRICS", "Config",
           "Credentials", "DevicePoll", "Facts", "Interface", "Result", "env_name", "inventory",
           "is_physical_port", "load_credentials_file", "poll", "resolve_credentials", "run",
           "samples"]
