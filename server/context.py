"""What the server's handlers share, as typed application keys."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from server.config import ServerConfig
from server.store import AgentState, Store
from wardready.inventory import Inventory
from wardready.serial import SerialThread


class Fleet:
    """The server's in-memory view of every agent, rebuilt from the store at start."""

    def __init__(self, agents: dict[tuple[str, str], AgentState],
                 active: set[tuple[str, str]]) -> None:
        self.agents = agents
        self.active = active
        self.asset_changes: list[tuple[str, str, str, str, int, float]] = []
        """Asset change counts per agent, as `Store.asset_change_counts` last read them."""


CONFIG = web.AppKey("config", ServerConfig)
INVENTORY = web.AppKey("inventory", Inventory)
STORE = web.AppKey("store", Store)
IO = web.AppKey("io", SerialThread)
"""The one thread every Store call runs on."""
FLEET = web.AppKey("fleet", Fleet)
REGISTRY = web.AppKey("registry", CollectorRegistry)
