"""`wardready-agent`: enroll with the server, run the agent, or validate its configuration."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import logging
import sys
from pathlib import Path

from wardready.agent.config import load_agent_config, read_token
from wardready.checks.base import ServerLink
from wardready.core import i18n
from wardready.core.errors import ConfigError, WardreadyError, output_closed
from wardready.core.i18n import _

EXIT_CONFIG = 2
EXIT_REFUSED = 1
DEFAULT_CONFIG = Path("/etc/wardready/agent.yml")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for configuration errors, 1 when the
    server refuses or cannot be reached while enrolling)."""
    # The language first (its help too is in it): `--lang`, else the config's `language:`,
    # else the locale. A bad `language:` is left to the config's validation, which reports
    # it with its line.
    try:
        lang = i18n.command_language(argv, DEFAULT_CONFIG)
    except ValueError as exc:
        print(f"wardready-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    i18n.localize_argparse()
    # The language for the whole command (as i18n.set_language would), given back on return
    # so that a caller in the same process (a test) keeps its own.
    with i18n.using(lang):
        args = _parser().parse_args(argv)
        try:
            return int(args.func(args) or 0)
        except ConfigError as exc:
            print(f"wardready-agent: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except WardreadyError as exc:
            print(f"wardready-agent: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except BrokenPipeError:
            return output_closed()


def _parser() -> argparse.ArgumentParser:
    """The commands and options, their help in the current language (argparse's own words,
    `usage:` and its errors, follow it through `i18n.localize_argparse`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=_("agent configuration (default {file})").format(
                            file=DEFAULT_CONFIG))
    common.add_argument("--lang", metavar="{en,vi}",
                        help=_("the language of what it prints (default: the config's "
                               "`language`, else the locale)"))
    parser = argparse.ArgumentParser(prog="wardready-agent", description=_(
        "enroll with the server, run the agent, or validate its configuration"))
    parser.add_argument("--lang", metavar="{en,vi}", help=_(
        "the language of what it prints (default: the config's `language`, else the locale)"))
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help=_("run checks on schedule and report"))
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_run)
    check = sub.add_parser("check-config", parents=[common],
                           help=_("validate the configuration, then exit"))
    check.set_defaults(func=_check_config)
    ready = sub.add_parser("check", parents=[common],
                           help=_("run every check once now and print the readiness verdict "
                                  "(exit 0 ready, 1 not ready, 2 configuration error)"))
    ready.add_argument("--json", action="store_true",
                       help=_("machine-readable output (always English)"))
    ready.add_argument("--now", action="store_true", help=_(
        "run the throughput test even in a quiet window, past the ward's budget or on a busy "
        "link"))
    ready.set_defaults(func=_check)
    plan = sub.add_parser("plan", parents=[common], help=_(
        "show this PC's part of the city measurement plan: whether it tests the uplink, when, "
        "the ward's budget and quiet windows"))
    plan.set_defaults(func=_plan)
    enroll = sub.add_parser("enroll", parents=[common], help=_(
        "redeem a one-time enrollment code: write the token and config"))
    enroll.add_argument("--server", required=True, metavar="URL",
                        help=_("the wardready server, e.g. {url}").format(
                            url="https://wardready.example:8470"))
    enroll.add_argument("--ward", required=True, help=_("this PC's ward id"))
    enroll.add_argument("--code", required=True,
                        help=_("the enrollment code from the operators"))
    enroll.add_argument("--host", help=_("this PC's name in the metrics (default: its host "
                                         "name made a valid id: a-z, 0-9 and '-')"))
    enroll.add_argument("--role", help=_("what this PC is for, a role id from the inventory "
                                         "(e.g. conference-room, counter)"))
    enroll.add_argument("--ca-file", type=Path, metavar="FILE",
                        help=_("CA bundle to verify the server with (default: system CAs)"))
    enroll.add_argument("--force", action="store_true",
                        help=_("replace an existing config and token file"))
    enroll.set_defaults(func=_enroll)
    return parser


def _enroll(args: argparse.Namespace) -> int:
    from wardready.agent.enroll import EnrollOptions, enroll

    enroll(EnrollOptions(server=args.server, ward=args.ward, code=args.code, config=args.config,
                         host=args.host, role=args.role, ca_file=args.ca_file, force=args.force))
    return 0


def _check(args: argparse.Namespace) -> int:
    from wardready.agent import check

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    config = load_agent_config(args.config)
    return check.main(config, read_token(config), args.json, args.now)


def _plan(args: argparse.Namespace) -> int:
    from wardready.agent import plan

    config = load_agent_config(args.config)
    server = ServerLink(str(config.server_url).rstrip("/"), read_token(config), config.ca_file)
    try:
        body = plan.fetch_plan(server)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        print("wardready-agent: " + _("cannot fetch the plan from {server}: {error}").format(
            server=config.server_url, error=exc), file=sys.stderr)
        return 1
    print(plan.describe(body, plan.next_test(config.listen_host, config.listen_port)))
    return 0


def _run(args: argparse.Namespace) -> int:
    from wardready.agent.agent import Agent

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_agent_config(args.config)
    agent = Agent(config, read_token(config))
    asyncio.run(agent.run())  # returns on SIGTERM or SIGINT, after the round in progress
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = load_agent_config(args.config)
    read_token(config)
    checks = ", ".join(_("{check} every {seconds:g} s").format(check=n, seconds=c.interval_seconds)
                       for n, c in config.check_configs().items())
    print(_("{file}: ward {ward}, host {host}, checks: {checks}: ok").format(
        file=args.config, ward=config.ward, host=config.host, checks=checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
