"""The agent's resident memory, idle after its first rounds of checks.

Starts a real server and a real agent on loopback with every check at its defaults except
those in SKIPPED_CHECKS, waits until the
agent has delivered its first reports, then reads the agent's VmRSS from /proc. It also shows
what importing the heavy libraries would add, to prove they stay lazy.

    .venv/bin/python -m bench.agent_memory            # about 30 seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from wardready import stack

REPO = Path(__file__).resolve().parent.parent
SKIPPED_CHECKS = ("bandwidth", "media", "platforms")
"""Link checks would measure loopback at full speed; platforms would resolve outside names."""
NEIGHBOURS_ON_LOOPBACK = {"method": "neighbour-table", "probe_ports": False}
"""The LAN check reads the OS neighbour table (and looks up vendors) but sends nothing: a
sweep or a port probe would leave loopback."""


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def import_cost(module: str) -> int:
    """What importing `module` adds to a bare interpreter's RSS, in bytes."""
    code = ("import resource, sys\nfrom pathlib import Path\n"
            "def rss():\n"
            "    for l in Path('/proc/self/status').read_text().splitlines():\n"
            "        if l.startswith('VmRSS:'): return int(l.split()[1]) * 1024\n"
            f"before = rss(); import {module}; print(rss() - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return int(out.stdout)


def one_run(workdir: Path, rounds: int) -> int:
    """The agent's RSS once `rounds` reports are delivered and it waits for the next."""
    port = stack.free_port()
    server_config = workdir / "server.yml"
    server_config.write_text(yaml.safe_dump({
        "listen_port": port, "database": "server.db",
        "inventory": str(REPO / "inventory.yml")}))
    token = stack.issue_token(server_config, "sai-gon", "pc-01")
    (workdir / "token").write_text(token)
    agent_port = stack.free_port()
    checks = {name: {"enabled": False} for name in SKIPPED_CHECKS}
    checks["host"] = {"interval_seconds": 2}
    checks["neighbours"] = {"interval_seconds": 2, **NEIGHBOURS_ON_LOOPBACK}
    checks["peripherals"] = {"interval_seconds": 2}
    agent_config = workdir / "agent.yml"
    agent_config.write_text(yaml.safe_dump({
        "server_url": f"http://127.0.0.1:{port}", "ward": "sai-gon", "host": "pc-01",
        "token_file": "token", "listen_port": agent_port, "spool_path": "spool.db",
        "start_jitter_seconds": 0,
        "checks": checks}))
    server = stack.start_server(server_config, workdir)
    agent = stack.start_agent(agent_config, workdir)
    try:
        health = f"http://127.0.0.1:{agent_port}/healthz"
        stack.wait_until("agent", lambda: stack.http_get(health), 20, agent)

        def delivered() -> bool:
            body = stack.http_get(health)
            state = json.loads(body) if body else {}
            return state.get("generated", 0) >= rounds and state.get("pending", 1) == 0
        stack.wait_until(f"{rounds} delivered reports", delivered, 60 + 5 * rounds, agent)
        return rss_bytes(agent.popen.pid)
    finally:
        agent.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    idles = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="wardready-mem-") as tmp:
            idles.append(one_run(Path(tmp), args.rounds))
    mib = 2**20
    print("| measurement | median MiB | runs |")
    print("|---|---:|---|")
    print(f"| agent RSS idle after {args.rounds} rounds | {statistics.median(idles) / mib:.1f} | "
          + ", ".join(f"{s / mib:.1f}" for s in idles) + " |")
    for module in ("scapy.all", "netmiko"):
        print(f"| importing {module} would add | {import_cost(module) / mib:.1f} | 1 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
