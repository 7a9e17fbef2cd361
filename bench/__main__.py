"""Run the performance benchmarks and write their sections of docs/benchmarks.md.

    .venv/bin/python -m bench                      # agent, server, speed test, plan (~30 min)
    .venv/bin/python -m bench speedtest --quick    # one benchmark, a short smoke run
    .venv/bin/python -m bench plan_capacity        # the measurement plan's capacity (~2 min)
    sudo .venv/bin/python -m bench calls_first     # one outside the default suite (root)
    .venv/bin/python -m bench remote_write         # remote write at the ingest rate (~18 min)

Each benchmark runs in a process of its own (`python -m bench.NAME`), so one's memory or
threads never weigh on the next, and prints one or more Markdown sections, each starting
with a `## ` heading. Those sections replace the ones of the same heading in
docs/benchmarks.md; the others (the link accuracy and equipment list benchmarks, which have
their own commands) are kept as they are. EXTRA benchmarks run only when named.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
SUITE = ("agent_footprint", "server_scale", "speedtest", "plan_capacity")
"""Side by side with node-exporter, the Pushgateway and iperf3 (issue 9); the measurement
plan against hourly tests, simulated (issue 21)."""
EXTRA = ("calls_first", "remote_write")
"""calls_first needs root (network namespaces): a call and the throughput test on one ward
link (issue 21). remote_write takes about 18 minutes: the server's remote write at its
ingest rate, Prometheus's receiver against VictoriaMetrics (issue 23)."""


def sections(markdown: str) -> dict[str, str]:
    """`## ` heading -> the section's text (heading included), in order."""
    parts = re.split(r"(?m)^(?=## )", markdown)
    return {part.splitlines()[0]: part.rstrip() + "\n" for part in parts
            if part.startswith("## ")}


def splice(document: str, new: dict[str, str]) -> str:
    """`document` with each of `new`'s sections in place of the one of the same heading,
    or appended when it has none."""
    head, *_ = re.split(r"(?m)^(?=## )", document, maxsplit=1)
    merged = sections(document)
    for heading, text in new.items():
        merged[heading] = text
    return head.rstrip() + "\n\n" + "\n".join(merged.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: {' '.join(SUITE)}; also "
                             f"{' '.join(EXTRA)})")
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SUITE) - set(EXTRA))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from "
                     f"{', '.join(SUITE + EXTRA)}")
    found: dict[str, str] = {}
    for name in args.names or SUITE:
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        print(f"bench: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        start = time.monotonic()
        out = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
        if out.returncode != 0:
            print(f"bench: {name} failed (exit {out.returncode}); docs left unchanged",
                  file=sys.stderr)
            return 1
        new = sections(out.stdout)
        if not new:
            print(f"bench: {name} printed no '## ' section", file=sys.stderr)
            return 1
        print(out.stdout, flush=True)
        print(f"bench: {name} took {time.monotonic() - start:.0f} s", file=sys.stderr)
        found.update(new)
    if not args.no_write:
        DOC.write_text(splice(DOC.read_text(encoding="utf-8"), found), encoding="utf-8")
        print(f"bench: wrote {len(found)} sections of {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
