"""The interface every check shares: a config, an async run, a typed result and its metrics."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from wardready.core.metrics import MetricSpec, Sample

if TYPE_CHECKING:
    from wardready.core.inventory import Inventory


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
class DeviceTarget:
    """A router or switch of the agent's ward, from the inventory; credentials come from
    the devices check's own secrets, never from here."""

    name: str
    address: str
    device_type: str
    """A netmiko device type, e.g. `cisco_ios`."""
    role: str
    port: int = 22


@dataclass(frozen=True)
class Context:
    """What the agent knows that checks may need; every check's `run(config, context)` gets it."""

    server: ServerLink | None = None
    platforms: tuple[Target, ...] = ()
    devices: tuple[DeviceTarget, ...] = ()

    @classmethod
    def of_ward(cls, inventory: Inventory | None, ward: str | None,
                server: ServerLink | None = None) -> Context:
        """The context of an agent of `ward`: the inventory's platforms and the ward's devices."""
        if inventory is None:
            return cls(server=server)
        entry = inventory.ward(ward) if ward else None
        return cls(server=server,
                   platforms=tuple(Target(p.id, str(p.url)) for p in inventory.platforms),
                   devices=tuple(DeviceTarget(d.name, d.address, d.device_type, d.role, d.port)
                                 for d in (entry.devices if entry else ())))


@dataclass(frozen=True)
class InventoryItem:
    """One countable thing a check found (a disk, a webcam, a switch, a neighbour), so the
    server can keep its history: `key` identifies it within `kind` (a serial, a MAC, a name);
    a change of `facts` is a change of the item."""

    kind: str
    key: str
    facts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CheckSpec:
    """A check as the agent schedules it and the server ingests it."""

    name: str
    config_model: type[CheckConfig]
    result_model: type[CheckResult]
    run: Callable[[Any, Context], Coroutine[Any, Any, CheckResult]]
    metrics: tuple[MetricSpec, ...]
    samples: Callable[[Any], Iterable[Sample]]
    inventory: Callable[[Any], Mapping[str, Iterable[InventoryItem]]] | None = None
    """For checks that count equipment: a result's items by kind, for the server's history.
    Only kinds the result could count appear; a kind left out was unknown this time (e.g. an
    unreadable tree), so none of its items is taken as removed."""
    isolated: bool = False
    """Run by the agent in a short-lived child process: what the check imports (aiohttp,
    scapy, netmiko: tens of MiB) would otherwise stay resident in the agent for good."""
    continuous: bool = False
    """Run by the agent interval after interval, back to back, in a task of its own rather
    than in the scheduled rounds; each run's outcome is a report of its own."""
    totals: tuple[MetricSpec, ...] = ()
    """Counters and histograms that `counts` feeds: whoever receives every run (the server)
    adds each run's counts to running totals and serves those."""
    counts: Callable[[Any], Iterable[Sample]] | None = None
    """For checks whose runs add up (continuous ones): what one result counted, as samples
    of `totals` whose values are that run's increase."""


T = TypeVar("T")


async def in_thread(work: Callable[[threading.Event], T], name: str,
                    stop: asyncio.Event | None = None) -> T:
    """Run blocking `work` in a thread of its own (not the shared pool, which it would hold
    for seconds). `work` gets an event that is set when `stop` is or when the awaiting task
    is cancelled; work that ignores it ends on its own bound and its outcome is dropped."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    halt = threading.Event()

    def settle(outcome: Callable[[], None]) -> None:
        if not done.done():
            outcome()

    def body() -> None:
        try:
            value = work(halt)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, lambda: done.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: done.set_result(value))

    relay = asyncio.create_task(stop.wait()) if stop is not None else None
    if relay is not None:
        relay.add_done_callback(lambda _: halt.set())
    threading.Thread(target=body, name=name, daemon=True).start()
    try:
        return await done
    finally:
        halt.set()
        if relay is not None:
            relay.cancel()
