"""`wardready-agent`: run the agent, or validate its configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from agent.config import load_agent_config, read_token
from wardready.errors import ConfigError

EXIT_CONFIG = 2
DEFAULT_CONFIG = Path("/etc/wardready/agent.yml")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for configuration errors)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wardready-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"agent configuration (default {DEFAULT_CONFIG})")
    parser = argparse.ArgumentParser(prog="wardready-agent", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="run checks on schedule and report")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-config", parents=[common],
                           help="validate the configuration, then exit")
    check.set_defaults(func=_check_config)
    return parser


def _run(args: argparse.Namespace) -> int:
    from agent.agent import Agent

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_agent_config(args.config)
    agent = Agent(config, read_token(config))
    asyncio.run(agent.run())  # returns on SIGTERM or SIGINT, after the round in progress
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config)
    read_token(config)
    checks = ", ".join(f"{n} every {c.interval_seconds:g} s"
                       for n, c in config.check_configs().items())
    print(f"{args.config}: ward {config.ward}, host {config.host}, checks: {checks}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
