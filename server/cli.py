"""`wardready-server`: serve, check the configuration, manage agent tokens."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from wardready.core import i18n
from wardready.core.errors import ConfigError, WardreadyError, output_closed
from wardready.core.i18n import N_, _, ngettext
from wardready.core.inventory import Inventory, load_inventory
from wardready.server import memory, serving
from wardready.server.app import create_app
from wardready.server.config import ServerConfig, load_server_config
from wardready.server.enroll import DEFAULT_HOURS, MAX_HOURS
from wardready.server.store import Store

EXIT_CONFIG = 2
STATES: dict[str, str] = {"ready": N_("ready"), "ready-with-warnings": N_("ready-with-warnings"),
                          "not-ready": N_("not-ready"), "unknown": N_("unknown")}
"""A ward's readiness state in words (English: the state as the API names it)."""
VERDICTS: dict[str, str] = {"pass": N_("pass"), "warn": N_("warn"), "fail": N_("fail"),
                            "unknown": N_("unknown")}
"""A criterion's verdict in words."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for configuration errors)."""
    # `--lang`, then the config's `language:`, then the locale; said once, for the run
    # (a bad `language:` is the config's validation's to report, with its line).
    try:
        i18n.set_language(i18n.command_language(argv, None))
    except ValueError as exc:
        print(f"wardready-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    i18n.localize_argparse()
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "config", None):
            load_server_config(args.config)  # its errors before the command's
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wardready-server: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except WardreadyError as exc:
        print(f"wardready-server: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return output_closed()


LANG_HELP = ("language of the messages and documents: en or vi (default: the config's "
             "`language`, then the locale)")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE",
                        help="server configuration (YAML); defaults apply without one")
    # SUPPRESS: a subcommand without --lang keeps the one given before it.
    common.add_argument("--lang", metavar="{en,vi}", default=argparse.SUPPRESS,
                        help=LANG_HELP)
    parser = argparse.ArgumentParser(prog="wardready-server", description=__doc__)
    parser.add_argument("--lang", metavar="{en,vi}", help=LANG_HELP)
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
    listing.add_argument("--format", choices=("csv", "xlsx", "markdown", "json", "pdf"),
                         default="markdown")
    listing.add_argument("--working-group", metavar="ID", help="only this working group")
    listing.add_argument("--output", "-o", type=Path, metavar="FILE",
                         help="write here instead of standard output (needed for xlsx "
                              "and pdf; a CSV file starts with a byte-order mark for Excel)")
    listing.set_defaults(func=_equipment_list)
    return parser


def _load(args: argparse.Namespace) -> tuple[ServerConfig, Inventory]:
    config = load_server_config(args.config)
    return config, load_inventory(config.inventory)


def _known_ward(config: ServerConfig, inventory: Inventory, ward: str | None) -> None:
    """A --ward given on the command line must be in the inventory."""
    if ward and inventory.ward(ward) is None:
        raise ConfigError(str(config.inventory), 0, "--ward",
                          _("unknown ward {ward}").format(ward=repr(ward)))


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, inventory = _load(args)
    # The language chosen at start is the request list's when a request does not ask.
    config = config.model_copy(update={"language": i18n.language()})
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
    print(_("{inventory}: {wards} wards, {groups} working groups, {profiles} profiles: ok")
          .format(inventory=config.inventory, wards=len(inventory.wards),
                  groups=len(inventory.working_groups), profiles=len(inventory.profiles)))
    return 0


def _tokens_issue(args: argparse.Namespace) -> int:
    config, inventory = _load(args)
    if args.admin:
        if args.ward or args.host:
            raise ConfigError(_("command line"), 0, "--admin",
                              _("an admin token has no ward or host"))
        with Store(config.database) as store:
            print(store.issue_admin_token(args.admin))
        return 0
    if not args.ward or not args.host:
        raise ConfigError(_("command line"), 0, "tokens issue",
                          _("give --ward and --host (or --admin)"))
    _known_ward(config, inventory, args.ward)
    if not _is_slug(args.host):
        raise ConfigError(_("command line"), 0, "--host", _(
            "{host} is not a valid host name (a-z, 0-9 and '-')").format(host=repr(args.host)))
    with Store(config.database) as store:
        token = store.issue_token(args.ward, args.host)
    print(token)
    print(_("token for ward {ward} host {host}: shown once, store it in the agent's "
            "token_file (mode 600)").format(ward=args.ward, host=args.host), file=sys.stderr)
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    config = load_server_config(args.config)
    with Store(config.database) as store:
        rows = store.tokens()
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return 0
    heads = (_("ID"), _("ROLE"), _("WARD"), _("HOST / NAME"), _("CREATED"), _("STATE"))
    role_width = max(7, len(heads[1]) + 1)
    print(f"{heads[0]:<14}{heads[1]:<{role_width}}{heads[2]:<22}{heads[3]:<22}{heads[4]:<21}"
          f"{heads[5]}")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created_at))
        state = _("revoked") if row.revoked_at else _("active")
        print(f"{row.id:<14}{row.role:<{role_width}}{row.ward or '-':<22}"
              f"{row.host or row.name or '-':<22}{created:<21}{state}")
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    config = load_server_config(args.config)
    with Store(config.database) as store:
        revoked = store.revoke_token(args.token_id)
    if not revoked:
        print("wardready-server: " + _("no active token with id {id}").format(
            id=repr(args.token_id)), file=sys.stderr)
        return 1
    print(_("revoked {id}").format(id=args.token_id))
    return 0


def _tokens_enroll(args: argparse.Namespace) -> int:
    config, inventory = _load(args)
    _known_ward(config, inventory, args.ward)
    if args.host is not None and not _is_slug(args.host):
        raise ConfigError(_("command line"), 0, "--host", _(
            "{host} is not a valid host name (a-z, 0-9 and '-')").format(host=repr(args.host)))
    if not 0 < args.hours <= MAX_HOURS:
        raise ConfigError(_("command line"), 0, "--hours", _(
            "expected more than 0 and at most {most}, got {hours}").format(
                most=f"{MAX_HOURS:g}", hours=f"{args.hours:g}"))
    with Store(config.database) as store:
        code, expires_at = store.issue_enrollment(args.ward, args.host, args.hours)
    print(code)
    expires = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(expires_at))
    who, host_flag = ((_("host {host}").format(host=args.host), f" --host {args.host}")
                      if args.host else (_("any host"), ""))
    print(_("enrollment code for ward {ward}, {who}: shown once, single use, valid until "
            "{expires}. On the ward PC: {command}").format(
        ward=args.ward, who=who, expires=expires,
        command=f"wardready-agent enroll --server URL --ward {args.ward}{host_flag} "
                "--code CODE"), file=sys.stderr)
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
    heads = (_("WHEN"), _("WARD"), _("HOST"), _("CHANGE"), _("KIND"), _("ITEM"), _("FACTS"))
    print(f"{heads[0]:<17}{heads[1]:<20}{heads[2]:<16}{heads[3]:<9}{heads[4]:<15}"
          f"{heads[5]:<24}{heads[6]}")
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
        unit = inventory.ward(args.ward)
        print(_("{name} ({ward}): {state}").format(
            name=unit.name if unit else args.ward, ward=args.ward,
            state=_(STATES[verdict.state]).upper()))
        verdict_width = max(9, *(len(_(v)) + 1 for v in VERDICTS.values()))
        heads = (_("criterion"), _("measured"), _("required"), _("verdict"), _("PC"))
        print(f"{heads[0]:<22}{heads[1]:>15}{heads[2]:>15}  {heads[3]:<{verdict_width}}"
              f"{heads[4]}")
        for c in verdict.criteria:
            print(f"{_(c.name):<22}{show(c.measured, c.unit, c.id):>15}"
                  f"{show(c.required, c.unit, c.id):>15}  "
                  f"{_(VERDICTS[c.verdict]).upper():<{verdict_width}}{c.host}".rstrip())
            for label, text in ((_("note"), c.note), (_("fix"), c.fix)):
                if text:
                    print(f"    {label}: {text}")
        print(_("Segments at fault:") if found[args.ward]
              else _("Segments at fault: none found"))
        fix = _("fix")
        for f in found[args.ward]:
            print(f"  {f.segment:<7}{f.reason:<15}{f.evidence}\n    {fix}: {f.fix}")
    else:
        # Units by id (what --ward takes) and by their Vietnamese name, in both languages.
        units = {w.id: w for w in inventory.wards}
        titles = (_("WARD"), _("NAME"), _("GROUP"), _("STATE"), _("PCs"), _("SHORT OF"))
        widths = [max(len(titles[0]), *map(len, units)) + 2,
                  max(len(titles[1]), *(len(w.name) for w in units.values())) + 2,
                  max(len(titles[2]), *(len(w.working_group) for w in units.values())) + 2,
                  max(len(titles[3]), *(len(_(s)) for s in STATES.values())) + 2,
                  max(4, len(titles[4]))]
        print("".join(f"{h:<{w}}" for h, w in zip(titles[:3], widths, strict=False))
              + f"{titles[3]:<{widths[3]}}{titles[4]:>{widths[4]}}  {titles[5]}")
        for ward, verdict in verdicts.items():
            short = [c.name for c in verdict.criteria if c.verdict == "fail"]
            unit = units[ward]
            print(f"{ward:<{widths[0]}}{unit.name:<{widths[1]}}"
                  f"{unit.working_group:<{widths[2]}}{_(STATES[verdict.state]):<{widths[3]}}"
                  f"{len(verdict.hosts):>{widths[4]}}  {', '.join(short) or '-'}")
    return 0


def _equipment_list(args: argparse.Namespace) -> int:
    from wardready.server import equipment
    from wardready.server.equipment_formats import BOM, lines_needing_a_quote, money_text, renderer

    config, inventory = _load(args)
    groups = [g.id for g in inventory.working_groups]
    if args.working_group and args.working_group not in groups:
        raise ConfigError(str(config.inventory), 0, "--working-group",
                          _("unknown working group {group} (the inventory's: {groups})")
                          .format(group=repr(args.working_group), groups=", ".join(groups)))
    if args.format in ("xlsx", "pdf") and args.output is None:
        raise WardreadyError(_("--format {format} writes a binary file: give --output FILE")
                             .format(format=args.format))
    with Store(config.database) as store:
        found = equipment.from_store(inventory, store, time.time(),
                                     config.readiness_max_age_seconds)
    if args.working_group:
        found = found.only(args.working_group)
    body = renderer(args.format, config)(found, config.zone)
    if args.output is None:
        # The byte-order mark is for Excel opening a file, not for a pipe into a script.
        text = body if isinstance(body, str) else body.decode()
        sys.stdout.write(text.removeprefix(BOM))
        return 0
    try:
        if isinstance(body, str):
            args.output.write_text(body, encoding="utf-8", newline="")
        else:
            args.output.write_bytes(body)
    except OSError as exc:
        raise WardreadyError(_("cannot write {file}: {error}").format(
            file=args.output, error=exc.strerror)) from None
    lines, wards = len(found.lines), len({x.ward.id for x in found.lines})
    silent = len(found.no_data)
    print(_("{file}: {lines} for {wards}, {total} (+{unpriced}); {silent}").format(
        file=args.output, lines=ngettext("{count} line", "{count} lines", lines).format(
            count=lines),
        wards=ngettext("{count} ward", "{count} wards", wards).format(count=wards),
        total=money_text(found.total_vnd),
        unpriced=lines_needing_a_quote(found.unpriced_lines),
        silent=ngettext("{count} ward with no data", "{count} wards with no data",
                        silent).format(count=silent)), file=sys.stderr)
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
