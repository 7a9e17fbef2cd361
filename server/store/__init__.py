"""Durable storage in SQLite (WAL, synchronous=FULL): `Store`, one connection shared by the
parts that each keep their own tables (tokens, reports, assets, ward link history, the
remote-write cursor, the ports' error counters).

The class is synchronous and not thread-safe by design: the server drives it from one
dedicated thread (see `server.app`), the command line drives it directly.
"""

from __future__ import annotations

from pathlib import Path

from wardready.server.store.asset_history import AssetStore
from wardready.server.store.port_errors import PortErrorStore
from wardready.server.store.remote_queue import RemoteQueueStore
from wardready.server.store.reports import AgentState, ReportStore
from wardready.server.store.schema import connect
from wardready.server.store.tokens import (
    Enrolled,
    Identity,
    Role,
    TokenReader,
    TokenRow,
    TokenStore,
)
from wardready.server.store.ward_link import WardLinkStore

__all__ = ["AgentState", "Enrolled", "Identity", "Role", "Store", "TokenReader", "TokenRow"]


class Store(TokenStore, ReportStore, AssetStore, WardLinkStore, RemoteQueueStore,
            PortErrorStore):
    """The server's database."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path)
        self._scrape_inputs: tuple[tuple[int, int], set[tuple[str, str]],
                                   list[tuple[str, str, str, str, int, float]]] | None = None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scrape_inputs(self) -> tuple[set[tuple[str, str]],
                                     list[tuple[str, str, str, str, int, float]]]:
        """`active_agents()` and `asset_change_counts()`, read again only when the database
        changed since the last call (here or in another process, such as `tokens revoke`):
        the same objects otherwise, so a scrape can tell nothing changed at a glance."""
        version = (self.db.execute("PRAGMA data_version").fetchone()[0],
                   self.db.total_changes)
        if self._scrape_inputs is None or self._scrape_inputs[0] != version:
            self._scrape_inputs = (version, self.active_agents(), self.asset_change_counts())
        return self._scrape_inputs[1], self._scrape_inputs[2]

    def prune_histories(self, links_before: float, ports_before: float) -> tuple[int, int]:
        """Forget ward link figures and port error counts older than their cut-offs (one
        trip to the store's thread): how many of each."""
        return self.prune_ward_link(links_before), self.prune_port_errors(ports_before)
