"""Helpers for tests that run a real server and real agent processes on loopback."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from lab import REPO, stack
from wardready.checks import REGISTRY
from wardready.server.store import Store

SPOOLED = re.compile(r"report ([0-9a-f-]{36}) spooled")


def write_server_config(workdir: Path, port: int, **extra: Any) -> Path:
    path = workdir / "server.yml"
    path.write_text(yaml.safe_dump({"listen_port": port, "database": "server.db",
                                    "inventory": str(REPO / "inventory.yml"), **extra}))
    return path


def issue_tokens(server_config: Path, agents: list[tuple[str, str]]) -> list[str]:
    with Store(server_config.parent / "server.db") as store:
        return [store.issue_token(ward, host) for ward, host in agents]


def write_agent_config(workdir: Path, server_url: str, ward: str, host: str, token: str,
                       **extra: Any) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token").write_text(token)
    # Only the host check unless a test asks for more: the others measure links and take time.
    checks = {name: {"enabled": False} for name in REGISTRY if name != "host"}
    checks.update(extra.pop("checks", {}))
    config = {"checks": checks, "server_url": server_url, "ward": ward, "host": host,
              "token_file": "token",
              "listen_port": stack.free_port(), "spool_path": "spool",
              "start_jitter_seconds": 0, **extra}
    path = workdir / "agent.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def agent_port(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["listen_port"])


def agent_health(config: Path) -> dict[str, Any] | None:
    body = stack.http_get(f"http://127.0.0.1:{agent_port(config)}/healthz")
    return json.loads(body) if body else None


def spooled_ids(log: Path) -> list[str]:
    """Ids of the reports an agent logged as committed to its spool."""
    return SPOOLED.findall(log.read_text()) if log.exists() else []


def stored_ids(db: Path) -> list[str]:
    """Ids of the reports the server stored (every row, so duplicates would show)."""
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM reports")]


def metric_values(exposition: bytes) -> dict[str, float]:
    """`name{labels}` -> value, for reading a few figures off a /metrics page."""
    values = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            values[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return values
