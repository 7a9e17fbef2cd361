"""Run one check once and print its result as JSON: for trying a probe by hand, and for
benchmarks that run a check inside an emulated ward network.

    python -m wardready.checks latency --config '{"targets": ["127.0.0.1"]}'
    python -m wardready.checks bandwidth --server http://127.0.0.1:8470 --token-file agent.token
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from wardready.checks import REGISTRY
from wardready.checks.base import Context, ServerLink
from wardready.core.inventory import load_inventory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wardready.checks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=sorted(REGISTRY))
    parser.add_argument("--config", default="{}", help="the check's config as JSON")
    parser.add_argument("--server", help="base URL of a wardready server")
    parser.add_argument("--token-file", type=Path, help="file holding an agent token")
    parser.add_argument("--ca-file", type=Path, help="CA bundle for the server's certificate")
    parser.add_argument("--inventory", type=Path,
                        help="inventory.yml: its city platforms (and, with --ward, devices)")
    parser.add_argument("--ward", help="the ward whose routers and switches to poll")
    args = parser.parse_args(argv)
    spec = REGISTRY[args.check]
    try:
        config = spec.config_model.model_validate_json(args.config)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        print(f"python -m wardready.checks: --config: {where}: {first['msg']}", file=sys.stderr)
        return 2
    server = None
    if args.server:
        token = args.token_file.read_text().strip() if args.token_file else ""
        server = ServerLink(args.server.rstrip("/"), token, args.ca_file)
    inventory = load_inventory(args.inventory) if args.inventory else None
    context = Context.of_ward(inventory, args.ward, server)
    result = asyncio.run(spec.run(config, context))
    print(json.dumps(result.model_dump(mode="json"), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
