"""Bearer tokens (agents and administrators), stored only hashed, and the single-use
enrollment codes an agent trades for its token."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wardready.core import enrollment
from wardready.core.errors import EnrollmentRefused

Role = Literal["agent", "admin"]
TOKEN_PREFIX = "wrt_"


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


@dataclass(frozen=True)
class Enrolled:
    """A redeemed enrollment code: the new agent token (shown once) and whom it is for."""

    code_id: str
    token: str
    ward: str
    host: str


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random_chars(n: int) -> str:
    return "".join(secrets.choice(enrollment.ALPHABET) for _ in range(n))


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


class TokenStore:
    """The `Store`'s tokens and enrollment codes."""

    db: sqlite3.Connection

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

    def active_agents(self) -> set[tuple[str, str]]:
        rows = self.db.execute("SELECT DISTINCT ward, host FROM tokens"
                               " WHERE role = 'agent' AND revoked_at IS NULL")
        return {(w, h) for w, h in rows}

    # enrollment codes

    def issue_enrollment(self, ward: str, host: str | None, hours: float) -> tuple[str, float]:
        """A single-use code for one agent of `ward` (and `host`, if given) valid for `hours`;
        returns the code (shown once, stored only hashed) and when it expires."""
        secret = _random_chars(enrollment.SECRET_CHARS)
        now = time.time()
        expires_at = now + hours * 3600
        while True:  # ids are short so they can be typed; retry the rare collision
            code_id = _random_chars(enrollment.ID_CHARS)
            try:
                self.db.execute(
                    "INSERT INTO enrollments (id, ward, host, secret_sha256, created_at,"
                    " expires_at) VALUES (?,?,?,?,?,?)",
                    (code_id, ward, host, _sha256(secret), now, expires_at))
            except sqlite3.IntegrityError:
                continue
            break
        return enrollment.format_code(code_id, secret), expires_at

    def redeem_enrollment(self, code: str, host: str, ward: str | None,
                          ward_exists: Callable[[str], bool]) -> Enrolled:
        """Use a code once: mark it used and issue the agent token in one transaction, so of
        two concurrent redeems (even from two processes) exactly one wins. Raises
        EnrollmentRefused, changing nothing, for an unknown, used or expired code, a ward gone
        from the inventory, or a `ward`/`host` other than the code's."""
        parts = enrollment.normalise_code(code)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = None
            if parts is not None:
                row = self.db.execute(
                    "SELECT ward, host, secret_sha256, expires_at, used_at FROM enrollments"
                    " WHERE id = ?", (parts[0],)).fetchone()
            # Hash and compare even for an unknown id, so timing does not tell ids apart.
            stored = row[2] if row is not None else _sha256("")
            given = _sha256(parts[1] if parts is not None else code)
            if not secrets.compare_digest(stored, given) or row is None or parts is None:
                raise EnrollmentRefused("unknown", "unknown enrollment code")
            code_ward, code_host, _, expires_at, used_at = row
            if used_at is not None:
                raise EnrollmentRefused("used", "enrollment code already used; ask the city's "
                                        "operators for a new one")
            if time.time() >= expires_at:
                raise EnrollmentRefused("expired", "enrollment code expired; ask the city's "
                                        "operators for a new one")
            if not ward_exists(code_ward):
                raise EnrollmentRefused("ward", f"ward {code_ward!r} is no longer in the "
                                        "inventory")
            if ward is not None and ward != code_ward:
                raise EnrollmentRefused("ward", f"this code is for ward {code_ward!r}, "
                                        f"not {ward!r}")
            if code_host is not None and host != code_host:
                raise EnrollmentRefused("host", f"this code is for host {code_host!r}, "
                                        f"not {host!r}")
            token = self.issue_token(code_ward, host)
            token_id = token.removeprefix(TOKEN_PREFIX).split(".")[0]
            cur = self.db.execute(
                "UPDATE enrollments SET used_at = ?, used_host = ?, token_id = ?"
                " WHERE id = ? AND used_at IS NULL", (time.time(), host, token_id, parts[0]))
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; never issue twice
                raise EnrollmentRefused("used", "enrollment code already used")
        return Enrolled(parts[0], token, code_ward, host)
