"""`wardready-server`: serve, check the configuration, manage agent tokens."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from wardready.core.errors import ConfigError, WardreadyError, output_closed
from wardready.core.inventory import Inventory, load_inventory
from wardready.server import memory, serving
from wardready.server.app import create_app
from wardready.server.config import ServerConfig, load_server_config
from wardready.server.enroll import DEFAULT_HOURS, MAX_HOURS
from wardready.server.store import Store

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for configuration errors)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wardready-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except WardreadyError as exc:
        print(f"wardready-server: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return output_closed()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE",
                        help="server configuration (YAML); defaults apply without one")
    parser = argparse.ArgumentParser(prog="wardready-server", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--access-log", action="store_true",
                       help="log every HTTP request (aiohttp.access, at INFO)")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", parents=[common],
                           help="validate the configuration and inventory, then exit")
    check.set_defaults(func=_check_config)

    tokens = sub.add_parser("tokens", help="issue, list and revoke agent tokens")
    tsub = tokens.add_subparsers(required=True, metavar="ACTION")
    issue = tsub.add_parser("issue", parents=[common],
                            help="issue a token for one agent (or --admin NAME)")
    issue.add_argument("--ward", help="ward id from the inventory")
    issue.add_argument("--host", help="the agent's host name")
    issue.add_argument("--admin", metavar="NAME",
                       help="issue an administrator token for the admin endpoints instead")
    issue.set_defaults(func=_tokens_issue)
    listing = tsub.add_parser("list", parents=[common], help="list tokens (never secrets)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_tokens_list)
    revoke = tsub.add_parser("revoke", parents=[common], help="revoke a token by its id")
    revoke.add_argument("token_id")
    revoke.set_defaults(func=_tokens_revoke)
    enroll = tsub.add_parser("enroll", parents=[common],
                             help="issue a single-use enrollment code for `wardready-agent "
                                  "enroll`")
    enroll.add_argument("--ward", required=True, help="ward id from the inventory")
    enroll.add_argument("--host", help="only this host name may enroll with it (default: any)")
    enroll.add_argument("--hours", type=float, default=DEFAULT_HOURS,
                        help=f"valid for HOURS hours (default {DEFAULT_HOURS:g}, at most "
                             f"{MAX_HOURS:g})")
    enroll.set_defaults(func=_tokens_enroll)

    assets = sub.add_parser("assets", parents=[common],
                            help="what the agents counted, and what changed")
    assets.add_argument("view", choices=("changes", "list"),
                        help="changes: the change log; list: the items present now")
    assets.add_argument("--ward", help="only this ward")
    assets.add_argument("--host", help="only this host")
    assets.add_argument("--kind", help="only this kind of item (disk, webcam, ...)")
    assets.add_argument("--days", type=float, default=7.0,
                        help="changes of the last DAYS days (default 7)")
    assets.add_argument("--json", action="store_true", help="machine-readable output")
    assets.set_defaults(func=_assets)

    ready = sub.add_parser("readiness", parents=[common],
                           help="each ward's video-conferencing readiness, and why")
    ready.add_argument("--ward", help="one ward, criterion by criterion")
    ready.add_argument("--json", action="store_true", help="machine-readable output")
    ready.set_defaults(func=_readiness)

    listing = sub.add_parser("equipment-list", parents=[common],
                             help="what each ward must buy or upgrade, with the evidence")
    listing.add_argument("--format", choices=("csv", "xlsx", "markdown", "json"),
                         default="markdown")
    listing.add_argument("--working-group", metavar="ID", help="only this working group")
    listing.add_argument("--output", "-o", type=Path, metavar="FILE",
                         help="write here instead of standard output (needed for xlsx)")
    listing.set_defaults(func=_equipment_list)
    return parser


def _load(args: argparse.Namespace) -> tuple[ServerConfig, Inventory]:
    config = load_server_config(args.config)
    return config, load_inventory(config.inventory)


def _known_ward(config: ServerConfig, inventory: Inventory, ward: str | None) -> None:
    """A --ward given on the command line must be in the inventory."""
    if ward and inventory.ward(ward) is None:
        raise ConfigError(str(config.inventory), 0, "--ward", f"unknown ward {ward!r}")


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, inventory = _load(args)
    logger = logging.getLogger("server")
    logger.info("inventory %s: %d wards", config.inventory, len(inventory.wards))
    before, after = serving.raise_open_files_limit()
    if after != before:
        logger.info("open-files limit raised from %d to %d", before, after)
    app = create_app(config, inventory)
    memory.freeze_long_lived()
    app.cleanup_ctx.append(memory.collecting)
    # No access log unless asked: a line per report is most of a busy server's logging.
    serving.serve(app, config,
                  logging.getLogger("aiohttp.access") if args.access_log else None,
                  lambda msg: print(f"wardready-server: {msg}", flush=True))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config, inventory = _load(args)
    print(f"{config.inventory}: {len(inventory.wards)} wards, "
          f"{len(inventory.working_groups)} working groups, {len(inventory.profiles)} profiles: ok")
    return 0


def _tokens_issue(args: argparse.Namespace) -> int:
    config, inventory = _load(args)
    if args.admin:
        if args.ward or args.host:
            raise ConfigError("command line", 0, "--admin", "an admin token has no ward or host")
        with Store(config.database) as store:
            print(store.issue_admin_token(args.admin))
        return 0
    if not args.ward or not args.host:
        raise ConfigError("command line", 0, "tokens issue", "give --ward and --host (or --admin)")
    _known_ward(config, inventory, args.ward)
    if not _is_slug(args.host):
        raise ConfigError("command line", 0, "--host",
                          f"{args.host!r} is not a valid host name (a-z, 0-9 and '-')")
    with Store(config.database) as store:
        token = store.issue_token(args.ward, args.host)
    print(token)
    print(f"token for ward {args.ward} host {args.host}: shown once, store it in the agent's "
          "token_file (mode 600)", file=sys.stderr)
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    config = load_server_config(args.config)
    with Store(config.database) as store:
        rows = store.tokens()
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return 0
    print(f"{'ID':<14}{'ROLE':<7}{'WARD':<22}{'HOST / NAME':<22}{'CREATED':<21}STATE")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created_at))
        state = "revoked" if row.revoked_at else "active"
        print(f"{row.id:<14}{row.role:<7}{row.ward or '-':<22}{row.host or row.name or '-':<22}"
              f"{created:<21}{state}")
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    config = load_server_config(args.config)
    with Store(config.database) as store:
        revoked = store.revoke_token(args.token_id)
    if not revoked:
        print(f"wardready-server: no active token with id {args.token_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.token_id}")
    return 0


def _tokens_enroll(args: argparse.Namespace) -> int:
    config, inventory = _load(args)
    _known_ward(config, inventory, args.ward)
    if args.host is not None and not _is_slug(args.host):
        raise ConfigError("command line", 0, "--host",
                          f"{args.host!r} is not a valid host name (a-z, 0-9 and '-')")
    if not 0 < args.hours <= MAX_HOURS:
        raise ConfigError("command line", 0, "--hours",
                          f"expected more than 0 and at most {MAX_HOURS:g}, got {args.hours:g}")
    with Store(config.database) as store:
        code, expires_at = store.issue_enrollment(args.ward, args.host, args.hours)
    print(code)
    expires = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(expires_at))
    who, host_flag = ((f"host {args.host}", f" --host {args.host}") if args.host
                      else ("any host", ""))
    print(f"enrollment code for ward {args.ward}, {who}: shown once, single use, valid until "
          f"{expires}. On the ward PC: wardready-agent enroll --server URL --ward {args.ward}"
          f"{host_flag} --code CODE", file=sys.stderr)
    return 0


def _assets(args: argparse.Namespace) -> int:
    config, inventory = _load(args)
    _known_ward(config, inventory, args.ward)
    with Store(config.database) as store:
        if args.view == "list":
            rows = store.assets(args.ward, args.host, args.kind, False, 100_000)
        else:
            rows = store.asset_changes(args.ward, args.host, args.kind,
                                       time.time() - args.days * 86400, float("inf"), 100_000)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    when = "changed_at" if args.view == "list" else "at"
    print(f"{'WHEN':<17}{'WARD':<20}{'HOST':<16}{'CHANGE':<9}{'KIND':<15}{'ITEM':<24}FACTS")
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(row[when]))
        facts = row.get("after") or row.get("before") or row.get("facts") or ""
        if not isinstance(facts, str):
            facts = json.dumps(facts, sort_keys=True)
        change = row.get("change", "present")
        print(f"{stamp:<17}{row['ward']:<20}{row['host']:<16}{change:<9}{row['kind']:<15}"
              f"{row['key'][:23]:<24}{facts}")
    return 0


def _readiness(args: argparse.Namespace) -> int:
    from wardready.model.readiness import show
    from wardready.server import readiness
    from wardready.server.store.port_errors import PORT_ERRORS_WINDOW_SECONDS, crc_per_day

    config, inventory = _load(args)
    _known_ward(config, inventory, args.ward)
    with Store(config.database) as store:
        hosts = readiness.counted(store.agent_states(), store.active_agents(), time.time(),
                                  config.readiness_max_age_seconds)
        points = store.port_error_points(time.time() - PORT_ERRORS_WINDOW_SECONDS)
    verdicts = {w: v for w, v in readiness.wards(inventory, hosts).items()
                if not args.ward or w == args.ward}
    found = {w: readiness.segment_findings(inventory, w, hosts.get(w, {}),
                                           crc_per_day(points, w, time.time()))
             for w in verdicts}
    if args.json:
        print(json.dumps({w: {**v.as_dict(), "segments": [f.as_dict() for f in found[w]]}
                          for w, v in verdicts.items()}, indent=2))
    elif args.ward:
        verdict = verdicts[args.ward]
        print(f"Ward {args.ward}: {verdict.state.upper()}")
        print(f"{'criterion':<22}{'measured':>15}{'required':>15}  {'verdict':<9}PC")
        for c in verdict.criteria:
            print(f"{c.name:<22}{show(c.measured, c.unit, c.id):>15}"
                  f"{show(c.required, c.unit, c.id):>15}  {c.verdict.upper():<9}{c.host}"
                  .rstrip())
            for label, text in (("note", c.note), ("fix", c.fix)):
                if text:
                    print(f"    {label}: {text}")
        print("Segments at fault:" if found[args.ward] else "Segments at fault: none found")
        for f in found[args.ward]:
            print(f"  {f.segment:<7}{f.reason:<15}{f.evidence}\n    fix: {f.fix}")
    else:
        groups = {w.id: w.working_group for w in inventory.wards}
        print(f"{'WARD':<22}{'GROUP':<8}{'STATE':<21}{'PCs':>4}  SHORT OF")
        for ward, verdict in verdicts.items():
            short = [c.id for c in verdict.criteria if c.verdict == "fail"]
            print(f"{ward:<22}{groups[ward]:<8}{verdict.state:<21}{len(verdict.hosts):>4}  "
                  f"{', '.join(short) or '-'}")
    return 0


def _equipment_list(args: argparse.Namespace) -> int:
    from wardready.server import equipment
    from wardready.server.equipment_formats import FORMATS

    config, inventory = _load(args)
    groups = [g.id for g in inventory.working_groups]
    if args.working_group and args.working_group not in groups:
        raise ConfigError(str(config.inventory), 0, "--working-group",
                          f"unknown working group {args.working_group!r} "
                          f"(the inventory's: {', '.join(groups)})")
    if args.format == "xlsx" and args.output is None:
        raise WardreadyError("--format xlsx writes a binary file: give --output FILE")
    with Store(config.database) as store:
        found = equipment.from_store(inventory, store, time.time(),
                                     config.readiness_max_age_seconds)
    if args.working_group:
        found = found.only(args.working_group)
    body = FORMATS[args.format][2](found, config.zone)
    if args.output is None:
        sys.stdout.write(body if isinstance(body, str) else body.decode())
        return 0
    try:
        if isinstance(body, str):
            args.output.write_text(body, encoding="utf-8", newline="")
        else:
            args.output.write_bytes(body)
    except OSError as exc:
        raise WardreadyError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"{args.output}: {len(found.lines)} lines for "
          f"{len({x.ward.id for x in found.lines})} wards, "
          f"{found.total_vnd:,} VND (+{found.unpriced_lines} lines needing a quote); "
          f"{len(found.no_data)} wards with no data", file=sys.stderr)
    return 0


def _is_slug(value: str) -> bool:
    from pydantic import TypeAdapter, ValidationError

    from wardready.core.inventory import Slug
    try:
        TypeAdapter(Slug).validate_python(value)
    except ValidationError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
