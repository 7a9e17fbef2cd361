"""The enrollment code an operator hands a technician.

Defined once, below both ends: `wardready.server` issues and redeems codes,
`wardready.agent.enroll` checks a typed code before sending it (a mistyped code then never
counts as a guess). The agent redeems it at `wardready.core.api.ENROLL_PATH`.
"""

from __future__ import annotations

PREFIX = "wre"
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
"""Crockford's base32: no i, l, o or u, so a code read off paper is typed right."""
ID_CHARS, SECRET_CHARS = 5, 25
"""A code is `wre-` and six groups of five: the first group is its id (not secret, shown in
logs like a token id), the other five its 125-bit secret."""


def format_code(code_id: str, secret: str) -> str:
    """The code as it is shown: `wre-` and groups of five."""
    body = code_id + secret
    return "-".join([PREFIX, *(body[i:i + ID_CHARS] for i in range(0, len(body), ID_CHARS))])


def normalise_code(code: str) -> tuple[str, str] | None:
    """(id, secret) of a code as typed (any case, dashes or spaces, o for 0, i or l for 1);
    None if it cannot be one."""
    chars = "".join(code.split()).replace("-", "").lower()
    if not chars.startswith(PREFIX):
        return None
    chars = chars[len(PREFIX):].translate(str.maketrans("oil", "011"))
    if len(chars) != ID_CHARS + SECRET_CHARS or not set(chars) <= set(ALPHABET):
        return None
    return chars[:ID_CHARS], chars[ID_CHARS:]
