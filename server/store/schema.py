"""The database's tables, and the in-place upgrade of a database an older version wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

REPORTS_TABLE = """CREATE TABLE IF NOT EXISTS reports (
    id TEXT NOT NULL,
    ward TEXT NOT NULL,
    host TEXT NOT NULL,
    generated_at REAL NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (ward, host, id)
)"""
"""A report id is its agent's own: another agent's report with the same id is not a replay."""
REPORTS_INDEX = "CREATE INDEX IF NOT EXISTS reports_by_agent ON reports (ward, host, generated_at)"

SCHEMA = f"""
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
{REPORTS_TABLE};
{REPORTS_INDEX};
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
CREATE TABLE IF NOT EXISTS port_errors (
    ward TEXT NOT NULL,
    device TEXT NOT NULL,
    interface TEXT NOT NULL,
    at REAL NOT NULL,
    crc REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS port_errors_by_time ON port_errors (at);
CREATE TABLE IF NOT EXISTS remote_write (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sent_rowid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollments (
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

ENROLLMENT_COLUMNS = ("id, ward, host, secret_sha256, created_at, expires_at, used_at,"
                      " used_host, token_id")


def connect(path: Path) -> sqlite3.Connection:
    """The server's database, created or brought up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged report survives power loss, not only a killed process.
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    _scope_report_ids(db)
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(agents)")}
    for added in ("role", "agent_version"):  # a database from before these columns
        if added not in columns:
            db.execute(f"ALTER TABLE agents ADD COLUMN {added} TEXT")
    _move_old_enrollments(db)
    return db


def _scope_report_ids(db: sqlite3.Connection) -> None:
    """A database from before report ids were each agent's own (`id` alone was the key, so
    an id one agent used made another's report with that id a replay) gets the new key.
    The table is copied, in one transaction, once."""
    keys = [row[1] for row in db.execute("PRAGMA table_info(reports)") if row[5]]
    if keys != ["id"]:
        return  # new, or upgraded already
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ALTER TABLE reports RENAME TO reports_before_scoped_ids")
        db.execute("DROP INDEX IF EXISTS reports_by_agent")
        db.execute(REPORTS_TABLE)
        db.execute(REPORTS_INDEX)
        db.execute("INSERT INTO reports (id, ward, host, generated_at, received_at, body)"
                   " SELECT id, ward, host, generated_at, received_at, body"
                   " FROM reports_before_scoped_ids")
        db.execute("DROP TABLE reports_before_scoped_ids")


def _has_old_enrollments(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                      " AND name = 'enrolments'").fetchone() is not None


def _move_old_enrollments(db: sqlite3.Connection) -> None:
    """The codes of a database from before the one spelling (table `enrolments`) move to
    `enrollments`, and the old table goes. Copied rather than renamed: a server of the old
    version run on a database already upgraded makes the old table anew, and its codes must
    not be stranded there."""
    if not _has_old_enrollments(db):  # the common case costs one read, no write lock
        return
    with db:
        db.execute("BEGIN IMMEDIATE")
        if _has_old_enrollments(db):  # not moved meanwhile by another process
            db.execute(f"INSERT OR IGNORE INTO enrollments ({ENROLLMENT_COLUMNS})"
                       f" SELECT {ENROLLMENT_COLUMNS} FROM enrolments")
            db.execute("DROP TABLE enrolments")
