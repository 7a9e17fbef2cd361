"""Asset history: the equipment each agent's checks counted, and what changed, when.

"Inventory" is the city's file of wards and requirements; "assets" are what the agents
find: hosts, disks, webcams, printers, routers, LAN neighbours. Each check that counts
equipment turns its result into items (`CheckSpec.inventory`); the store keeps every item
with when it was first and last seen, and a change log (added, removed, changed) so that
"what changed in this ward since last week" is one query, and a counter for Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from wardready.checks import REGISTRY
from wardready.checks.base import InventoryItem
from wardready.core.metrics import MetricSpec
from wardready.model.report import Outcome

DEFAULT_WINDOW_SECONDS = 7 * 86400
"""What the change log shows when no `since` is given: a week."""
MAX_ROWS = 10_000
"""Rows one API answer carries at most; more is flagged `truncated`."""
ChangeKind = Literal["added", "removed", "changed"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("added", "removed", "changed")

CHANGES = MetricSpec("wardready_asset_changes_total",
                     "Equipment added, removed or changed on this agent, by item kind.",
                     ("kind", "change"), kind="counter")
LAST_CHANGE = MetricSpec("wardready_asset_last_change_timestamp_seconds",
                         "When this agent's equipment last changed (agent clock).")
METRICS = (CHANGES, LAST_CHANGE)


@dataclass(frozen=True)
class Change:
    """One difference between what a check counted before and what it counts now."""

    change: ChangeKind
    kind: str
    key: str
    before: dict[str, str] | None
    after: dict[str, str] | None


def items_of(outcome: Outcome) -> Mapping[str, Iterable[InventoryItem]] | None:
    """The items a successful outcome counted, by kind; None for checks that count nothing."""
    spec = REGISTRY.get(outcome.check)
    if spec is None or spec.inventory is None or not outcome.ok or outcome.result is None:
        return None
    return spec.inventory(outcome.result)


def diff(current: Mapping[tuple[str, str], dict[str, str]],
         found: Mapping[str, Iterable[InventoryItem]]) -> list[Change]:
    """Changes from `current` ((kind, key) -> facts) to what was `found`.

    Only kinds present in `found` are compared: a kind the check could not count this time
    keeps its items rather than losing them.
    """
    changes: list[Change] = []
    for kind, items in found.items():
        now = {item.key: dict(item.facts) for item in items}
        before = {key: facts for (k, key), facts in current.items() if k == kind}
        # Removals first: a replacement reads "old out, new in".
        changes.extend(Change("removed", kind, key, facts, None)
                       for key, facts in before.items() if key not in now)
        for key, facts in now.items():
            if key not in before:
                changes.append(Change("added", kind, key, None, facts))
            elif before[key] != facts:
                changes.append(Change("changed", kind, key, before[key], facts))
    return changes
