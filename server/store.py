"""Durable storage in SQLite (WAL, synchronous=FULL): tokens, reports, each agent's latest state.

The class is synchronous and not thread-safe by design: the server drives it from one
dedicated thread (see `server.app`), the command line drives it directly.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import secrets
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wardready.checks import REGISTRY
from wardready.checks.base import InventoryItem
from wardready.core.errors import EnrolmentRefused
from wardready.model.report import Outcome, Report
from wardready.server import assets

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('agent', 'admin')),
    ward TEXT,
    host TEXT,
    name TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    generated_at REAL NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_agent ON reports (ward, host, generated_at);
CREATE TABLE IF NOT EXISTS latest (
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    check_name TEXT NOT NULL,
    started_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (ward, host, check_name)
);
CREATE TABLE IF NOT EXISTS agents (
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    last_report_at REAL NOT NULL,
    reports_total INTEGER NOT NULL,
    dropped_reports_total INTEGER NOT NULL DEFAULT 0,
    clock_offset_seconds REAL,
    role TEXT,
    agent_version TEXT,
    PRIMARY KEY (ward, host)
);
CREATE TABLE IF NOT EXISTS assets (
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    facts TEXT NOT NULL,
    first_seen REAL NOT NULL,
    changed_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    removed_at REAL,
    PRIMARY KEY (ward, host, kind, key)
);
CREATE TABLE IF NOT EXISTS asset_changes (
    id INTEGER PRIMARY KEY,
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    at REAL NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('added', 'removed', 'changed')),
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS asset_changes_by_ward ON asset_changes (ward, at);
CREATE INDEX IF NOT EXISTS asset_changes_by_time ON asset_changes (at);
CREATE TABLE IF NOT EXISTS asset_change_counts (
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    kind TEXT NOT NULL,
    change TEXT NOT NULL,
    total INTEGER NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (ward, host, kind, change)
);
CREATE TABLE IF NOT EXISTS ward_link (
    ward TEXT NOT NULL,
    criterion TEXT NOT NULL,
    at REAL NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS ward_link_by_time ON ward_link (at);
CREATE TABLE IF NOT EXISTS enrolments (
    id TEXT PRIMARY KEY,
    ward TEXT NOT NULL,
    host TEXT,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    used_host TEXT,
    token_id TEXT
);
"""

Role = Literal["agent", "admin"]
TOKEN_PREFIX = "wrt_"
FRESH_SECONDS = 30.0
ENROL_PREFIX = "wre"
CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
"""Crockford's base32: no i, l, o or u, so a code read off paper is typed right."""
CODE_ID_CHARS, CODE_SECRET_CHARS = 5, 25
"""A code is `wre-` and six groups of five: the first group is its id (not secret, shown in
logs like a token id), the other five its 125-bit secret."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: an agent (ward and host) or an administrator (name)."""

    token_id: str
    role: Role
    ward: str = ""
    host: str = ""
    name: str = ""


@dataclass(frozen=True)
class TokenRow:
    id: str
    role: Role
    ward: str | None
    host: str | None
    name: str | None
    created_at: float
    revoked_at: float | None


@dataclass
class AgentState:
    """What the server knows of one agent: its counters and each check's latest outcome."""

    last_report_at: float = 0.0
    reports_total: int = 0
    dropped_reports_total: int = 0
    clock_offset_seconds: float | None = None
    role: str | None = None
    """The PC's role, as its latest report gave it."""
    agent_version: str | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def newer_outcomes(self, report: Report) -> dict[str, Outcome]:
        """Each check's latest outcome once `report` is applied (a late replay of an older
        run does not replace a newer one)."""
        outcomes = dict(self.outcomes)
        for outcome in report.outcomes:
            current = outcomes.get(outcome.check)
            if current is None or outcome.started_at >= current.started_at:
                outcomes[outcome.check] = outcome
        return outcomes

    def apply(self, report: Report, received_at: float) -> None:
        """Account for a newly stored report, as `Store.add_report` does on disk."""
        self.reports_total += 1
        self.role = report.role
        self.agent_version = report.agent_version
        self.last_report_at = max(self.last_report_at, received_at)
        self.dropped_reports_total = max(self.dropped_reports_total,
                                         report.dropped_reports_total)
        if received_at - report.generated_at < FRESH_SECONDS:
            # Only a report sent as soon as it was made tells how far the agent's clock is off.
            self.clock_offset_seconds = report.generated_at - received_at
        self.outcomes = self.newer_outcomes(report)


@dataclass(frozen=True)
class Enrolled:
    """A redeemed enrolment code: the new agent token (shown once) and whom it is for."""

    code_id: str
    token: str
    ward: str
    host: str


def normalise_code(code: str) -> tuple[str, str] | None:
    """(id, secret) of a code as typed (any case, dashes or spaces, o for 0, i or l for 1);
    None if it cannot be one."""
    chars = "".join(code.split()).replace("-", "").lower()
    if not chars.startswith(ENROL_PREFIX):
        return None
    chars = chars[len(ENROL_PREFIX):].translate(str.maketrans("oil", "011"))
    if len(chars) != CODE_ID_CHARS + CODE_SECRET_CHARS or not set(chars) <= set(CODE_ALPHABET):
        return None
    return chars[:CODE_ID_CHARS], chars[CODE_ID_CHARS:]


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random_chars(n: int) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(n))


def _authenticate(db: sqlite3.Connection, token: str) -> Identity | None:
    body = token.removeprefix(TOKEN_PREFIX)
    token_id, dot, secret = body.partition(".")
    if body == token or not dot or not secret:
        return None
    row = db.execute("SELECT role, ward, host, name, secret_sha256 FROM tokens"
                     " WHERE id = ? AND revoked_at IS NULL", (token_id,)).fetchone()
    if row is None or not secrets.compare_digest(row[4], _sha256(secret)):
        return None
    return Identity(token_id, row[0], row[1] or "", row[2] or "", row[3] or "")


class TokenReader:
    """Looks tokens up in a read-only connection of its own, on the event loop's thread.

    A lookup is one primary-key read of a small table that stays cached, cheaper than a
    round trip to the store's thread, which costs each request two thread switches. In WAL
    mode a reader does not wait for the writer, and what another connection committed (a
    `tokens revoke` from the command line) is seen at once. Should SQLite still find the
    database busy (recovering after a crash), `authenticate` raises `sqlite3.OperationalError`
    at once instead of waiting, and the caller asks the store instead.
    """

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                  isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=0")

    def authenticate(self, token: str) -> Identity | None:
        """As `Store.authenticate`."""
        return _authenticate(self.db, token)

    def close(self) -> None:
        self.db.close()


class Store:
    """The server's database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged report survives power loss, not only a killed process.
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(agents)")}
        for added in ("role", "agent_version"):  # a database from before these columns
            if added not in columns:
                self.db.execute(f"ALTER TABLE agents ADD COLUMN {added} TEXT")
        self._scrape_inputs: tuple[tuple[int, int], set[tuple[str, str]],
                                   list[tuple[str, str, str, str, int, float]]] | None = None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # tokens

    def issue_token(self, ward: str, host: str) -> str:
        """Create an agent token; the secret is returned once and stored only hashed."""
        return self._issue("agent", ward, host, None)

    def issue_admin_token(self, name: str) -> str:
        """Create an administrator token (admin endpoints only, never reports)."""
        return self._issue("admin", None, None, name)

    def _issue(self, role: Role, ward: str | None, host: str | None, name: str | None) -> str:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        self.db.execute(
            "INSERT INTO tokens (id, role, ward, host, name, secret_sha256, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (token_id, role, ward, host, name, _sha256(secret), time.time()))
        return f"{TOKEN_PREFIX}{token_id}.{secret}"

    def tokens(self) -> list[TokenRow]:
        rows = self.db.execute("SELECT id, role, ward, host, name, created_at, revoked_at"
                               " FROM tokens ORDER BY created_at")
        return [TokenRow(*row) for row in rows]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False if no active token has that id."""
        cur = self.db.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time(), token_id))
        return cur.rowcount == 1

    def authenticate(self, token: str) -> Identity | None:
        """The identity behind a bearer token, or None (unknown, malformed or revoked)."""
        return _authenticate(self.db, token)

    # enrolment codes

    def issue_enrolment(self, ward: str, host: str | None, hours: float) -> tuple[str, float]:
        """A single-use code for one agent of `ward` (and `host`, if given) valid for `hours`;
        returns the code (shown once, stored only hashed) and when it expires."""
        secret = _random_chars(CODE_SECRET_CHARS)
        now = time.time()
        expires_at = now + hours * 3600
        while True:  # ids are short so they can be typed; retry the rare collision
            code_id = _random_chars(CODE_ID_CHARS)
            try:
                self.db.execute(
                    "INSERT INTO enrolments (id, ward, host, secret_sha256, created_at,"
                    " expires_at) VALUES (?,?,?,?,?,?)",
                    (code_id, ward, host, _sha256(secret), now, expires_at))
            except sqlite3.IntegrityError:
                continue
            break
        body = code_id + secret
        groups = [body[i:i + CODE_ID_CHARS] for i in range(0, len(body), CODE_ID_CHARS)]
        return "-".join([ENROL_PREFIX, *groups]), expires_at

    def redeem_enrolment(self, code: str, host: str, ward: str | None,
                         ward_exists: Callable[[str], bool]) -> Enrolled:
        """Use a code once: mark it used and issue the agent token in one transaction, so of
        two concurrent redeems (even from two processes) exactly one wins. Raises
        EnrolmentRefused, changing nothing, for an unknown, used or expired code, a ward gone
        from the inventory, or a `ward`/`host` other than the code's."""
        parts = normalise_code(code)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = None
            if parts is not None:
                row = self.db.execute(
                    "SELECT ward, host, secret_sha256, expires_at, used_at FROM enrolments"
                    " WHERE id = ?", (parts[0],)).fetchone()
            # Hash and compare even for an unknown id, so timing does not tell ids apart.
            stored = row[2] if row is not None else _sha256("")
            given = _sha256(parts[1] if parts is not None else code)
            if not secrets.compare_digest(stored, given) or row is None or parts is None:
                raise EnrolmentRefused("unknown", "unknown enrolment code")
            code_ward, code_host, _, expires_at, used_at = row
            if used_at is not None:
                raise EnrolmentRefused("used", "enrolment code already used; ask the city's "
                                       "operators for a new one")
            if time.time() >= expires_at:
                raise EnrolmentRefused("expired", "enrolment code expired; ask the city's "
                                       "operators for a new one")
            if not ward_exists(code_ward):
                raise EnrolmentRefused("ward", f"ward {code_ward!r} is no longer in the "
                                       "inventory")
            if ward is not None and ward != code_ward:
                raise EnrolmentRefused("ward", f"this code is for ward {code_ward!r}, "
                                       f"not {ward!r}")
            if code_host is not None and host != code_host:
                raise EnrolmentRefused("host", f"this code is for host {code_host!r}, "
                                       f"not {host!r}")
            token = self.issue_token(code_ward, host)
            token_id = token.removeprefix(TOKEN_PREFIX).split(".")[0]
            cur = self.db.execute(
                "UPDATE enrolments SET used_at = ?, used_host = ?, token_id = ?"
                " WHERE id = ? AND used_at IS NULL", (time.time(), host, token_id, parts[0]))
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; never issue twice
                raise EnrolmentRefused("used", "enrolment code already used")
        return Enrolled(parts[0], token, code_ward, host)

    def scrape_inputs(self) -> tuple[set[tuple[str, str]],
                                     list[tuple[str, str, str, str, int, float]]]:
        """`active_agents()` and `asset_change_counts()`, read again only when the database
        changed since the last call (here or in another process, such as `tokens revoke`):
        the same objects otherwise, so a scrape can tell nothing changed at a glance."""
        version = (self.db.execute("PRAGMA data_version").fetchone()[0],
                   self.db.total_changes)
        if self._scrape_inputs is None or self._scrape_inputs[0] != version:
            self._scrape_inputs = (version, self.active_agents(), self.asset_change_counts())
        return self._scrape_inputs[1], self._scrape_inputs[2]

    def active_agents(self) -> set[tuple[str, str]]:
        rows = self.db.execute("SELECT DISTINCT ward, host FROM tokens"
                               " WHERE role = 'agent' AND revoked_at IS NULL")
        return {(w, h) for w, h in rows}

    # reports

    def add_report(self, report: Report, received_at: float,
                   ward_link: Mapping[str, float | None] | None = None) -> bool:
        """Commit a report (and the agent's latest state) durably; False if its id was stored.

        `ward_link`: the ward's best link figures as they changed with this report (None for a
        figure no PC has any more), kept for the window the shortfall rules judge over.
        """
        return self.add_reports([(report, received_at, ward_link or {})])[0]

    def add_reports(self, batch: Sequence[tuple[Report, float, Mapping[str, float | None]]]
                    ) -> list[bool]:
        """Commit several reports in one transaction (one fsync: group commit); for each,
        False if its id was already stored. All or none are stored."""
        with self.db:  # one transaction, committed before the callers reply
            self.db.execute("BEGIN IMMEDIATE")
            return [self._insert_report(*item) for item in batch]

    def _insert_report(self, report: Report, received_at: float,
                       ward_link: Mapping[str, float | None]) -> bool:
        ward, host = report.ward, report.host
        cur = self.db.execute(
            "INSERT OR IGNORE INTO reports (id, ward, host, generated_at, received_at, body)"
            " VALUES (?,?,?,?,?,?)",
            (str(report.id), ward, host, report.generated_at, received_at,
             report.model_dump_json()))
        if cur.rowcount == 0:
            return False
        self.db.executemany("INSERT INTO ward_link (ward, criterion, at, value)"
                            " VALUES (?,?,?,?)",
                            [(ward, c, received_at, v) for c, v in ward_link.items()])
        for outcome in report.outcomes:
            cur = self.db.execute(
                "INSERT INTO latest (ward, host, check_name, started_at, outcome)"
                " VALUES (?,?,?,?,?) ON CONFLICT (ward, host, check_name) DO UPDATE"
                " SET started_at = excluded.started_at, outcome = excluded.outcome"
                " WHERE excluded.started_at >= latest.started_at",
                (ward, host, outcome.check, outcome.started_at, outcome.model_dump_json()))
            found = assets.items_of(outcome)
            if found is not None and cur.rowcount == 1:
                # Only the newest count is compared: a late replay is history already.
                self._record_assets(ward, host, outcome.check, outcome.started_at, found)
        state = AgentState()
        state.apply(report, received_at)
        self.db.execute(
            "INSERT INTO agents (ward, host, last_report_at, reports_total,"
            " dropped_reports_total, clock_offset_seconds, role, agent_version)"
            " VALUES (?,?,?,1,?,?,?,?)"
            " ON CONFLICT (ward, host) DO UPDATE SET reports_total = reports_total + 1,"
            " last_report_at = max(last_report_at, excluded.last_report_at),"
            " dropped_reports_total = max(dropped_reports_total,"
            " excluded.dropped_reports_total),"
            " clock_offset_seconds = coalesce(excluded.clock_offset_seconds,"
            " clock_offset_seconds), role = excluded.role,"
            " agent_version = excluded.agent_version",
            (ward, host, received_at, state.dropped_reports_total,
             state.clock_offset_seconds, report.role, report.agent_version))
        return True

    def _record_assets(self, ward: str, host: str, source: str, at: float,
                       found: Mapping[str, Iterable[InventoryItem]]) -> None:
        current = {(kind, key): json.loads(facts) for kind, key, facts in self.db.execute(
            "SELECT kind, key, facts FROM assets WHERE ward = ? AND host = ? AND source = ?"
            " AND removed_at IS NULL", (ward, host, source))}
        for c in assets.diff(current, found):
            after = json.dumps(c.after, sort_keys=True) if c.after is not None else None
            before = json.dumps(c.before, sort_keys=True) if c.before is not None else None
            if c.change == "removed":
                self.db.execute("UPDATE assets SET removed_at = ?, changed_at = ? WHERE ward = ?"
                                " AND host = ? AND kind = ? AND key = ?",
                                (at, at, ward, host, c.kind, c.key))
            else:
                self.db.execute(
                    "INSERT INTO assets (ward, host, kind, key, source, facts, first_seen,"
                    " changed_at, last_seen) VALUES (?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (ward, host, kind, key) DO UPDATE SET source = excluded.source,"
                    " facts = excluded.facts, changed_at = excluded.changed_at,"
                    " removed_at = NULL", (ward, host, c.kind, c.key, source, after, at, at, at))
            self.db.execute(
                "INSERT INTO asset_changes (ward, host, at, change, kind, key, before, after)"
                " VALUES (?,?,?,?,?,?,?,?)", (ward, host, at, c.change, c.kind, c.key, before,
                                              after))
            self.db.execute(
                "INSERT INTO asset_change_counts (ward, host, kind, change, total, last_at)"
                " VALUES (?,?,?,?,1,?) ON CONFLICT (ward, host, kind, change) DO UPDATE"
                " SET total = total + 1, last_at = max(last_at, excluded.last_at)",
                (ward, host, c.kind, c.change, at))
        self.db.execute("UPDATE assets SET last_seen = ? WHERE ward = ? AND host = ?"
                        " AND source = ? AND removed_at IS NULL", (at, ward, host, source))

    def assets(self, ward: str | None, host: str | None, kind: str | None,
               include_removed: bool, limit: int) -> list[dict[str, Any]]:
        """Items the agents counted (by default only those still present)."""
        where, params = self._filters(ward, host, kind)
        if not include_removed:
            where.append("removed_at IS NULL")
        rows = self.db.execute(
            "SELECT ward, host, kind, key, source, facts, first_seen, changed_at, last_seen,"
            f" removed_at FROM assets WHERE {' AND '.join(where) or '1'}"
            " ORDER BY ward, host, kind, key LIMIT ?", (*params, limit))
        names = ("ward", "host", "kind", "key", "source", "facts", "first_seen", "changed_at",
                 "last_seen", "removed_at")
        return [{**dict(zip(names, row, strict=True)), "facts": json.loads(row[5])}
                for row in rows]

    def asset_changes(self, ward: str | None, host: str | None, kind: str | None,
                      since: float, until: float, limit: int) -> list[dict[str, Any]]:
        """The change log between `since` and `until` (agent clock), oldest first."""
        where, params = self._filters(ward, host, kind)
        rows = self.db.execute(
            "SELECT ward, host, at, change, kind, key, before, after FROM asset_changes"
            f" WHERE {' AND '.join([*where, 'at >= ?', 'at < ?'])} ORDER BY at, id LIMIT ?",
            (*params, since, until, limit))
        names = ("ward", "host", "at", "change", "kind", "key", "before", "after")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def asset_change_counts(self) -> list[tuple[str, str, str, str, int, float]]:
        """(ward, host, kind, change, total, last change time) for every agent's assets."""
        return list(self.db.execute("SELECT ward, host, kind, change, total, last_at"
                                    " FROM asset_change_counts"))

    @staticmethod
    def _filters(ward: str | None, host: str | None, kind: str | None
                 ) -> tuple[list[str], list[str]]:
        pairs = [(column, value) for column, value in
                 (("ward", ward), ("host", host), ("kind", kind)) if value is not None]
        return [f"{column} = ?" for column, _ in pairs], [value for _, value in pairs]

    def ward_link_points(self, since: float
                         ) -> dict[tuple[str, str], list[tuple[float, float | None]]]:
        """(ward, criterion) -> the ward's best link figure over time from `since`, starting
        with the value it had then."""
        points: dict[tuple[str, str], list[tuple[float, float | None]]] = defaultdict(list)
        for ward, criterion, at, value in self.db.execute(
                "SELECT ward, criterion, max(at), value FROM ward_link WHERE at < ?"
                " GROUP BY ward, criterion", (since,)):
            points[ward, criterion].append((at, value))
        for ward, criterion, at, value in self.db.execute(
                "SELECT ward, criterion, at, value FROM ward_link WHERE at >= ? ORDER BY at",
                (since,)):
            points[ward, criterion].append((at, value))
        return points

    def ward_link_latest(self) -> dict[str, dict[str, float | None]]:
        """Each ward's latest recorded link figures."""
        latest: dict[str, dict[str, float | None]] = defaultdict(dict)
        for ward, criterion, _at, value in self.db.execute(
                "SELECT ward, criterion, max(at), value FROM ward_link GROUP BY ward, criterion"):
            latest[ward][criterion] = value
        return latest

    def prune_ward_link(self, before: float) -> int:
        """Forget link figures older than `before`, but for the one each ward had then."""
        with self.db:
            cur = self.db.execute(
                "DELETE FROM ward_link WHERE at < ? AND rowid NOT IN (SELECT rowid FROM"
                " (SELECT rowid, max(at) FROM ward_link WHERE at < ? GROUP BY ward, criterion))",
                (before, before))
        return cur.rowcount

    def report_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM reports").fetchone()[0])

    def agent_states(self) -> dict[tuple[str, str], AgentState]:
        """Every agent's counters and latest outcomes, to rebuild the server's view at start."""
        states = {
            (w, h): AgentState(last, total, dropped, offset, role, version)
            for w, h, last, total, dropped, offset, role, version in self.db.execute(
                "SELECT ward, host, last_report_at, reports_total, dropped_reports_total,"
                " clock_offset_seconds, role, agent_version FROM agents")
        }
        # Tens of thousands of freshly built models would make the cyclic collector rescan
        # them all, again and again, while nothing here is garbage; once loaded they live
        # long, so they are frozen out of its scans (they are still freed when replaced).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for ward, host, check, outcome in self.db.execute(
                    "SELECT ward, host, check_name, outcome FROM latest"):
                state = states.get((ward, host))
                if state is None:
                    continue
                try:
                    state.outcomes[check] = _stored_outcome(check, outcome)
                except (ValueError, KeyError) as exc:  # a check or field this version lacks
                    log.warning("ignoring stored %s outcome of %s/%s: %s", check, ward, host,
                                exc)
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        return states


def _stored_outcome(check: str, text: str) -> Outcome:
    """An outcome this server validated before storing it: only its result is validated
    again, against this version's model of that check's result."""
    raw = json.loads(text)
    result = raw.pop("result", None)
    typed = None if result is None else REGISTRY[check].result_model.model_validate(result)
    return Outcome.model_construct(**raw, result=typed)
