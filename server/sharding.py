"""Shards of /metrics: a fleet too large for one scrape is split by ward
(`?shard=i&shards=n`), a ward's series always in one shard with its requirements and
verdicts; `GET /api/v1/metrics-targets` lists the shards for Prometheus's HTTP service
discovery (docs/scaling.md)."""

from __future__ import annotations

import math
import zlib

MAX_SHARDS = 1024
Shard = tuple[int, int]
"""(index, count): the wards whose `shard_of` is index when split count ways."""
WHOLE: Shard = (0, 1)


def shard_of(ward: str, shards: int) -> int:
    """The shard a ward's series are served in: stable across restarts and servers."""
    return zlib.crc32(ward.encode()) % shards


def shard_count(agents: int, agents_per_shard: int) -> int:
    """How many shards serve `agents` PCs at most `agents_per_shard` each (on average)."""
    return max(1, min(MAX_SHARDS, math.ceil(agents / agents_per_shard)))
