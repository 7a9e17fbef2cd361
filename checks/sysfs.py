"""Reading what the OS says of its devices (Linux sysfs and procfs under an injectable root,
Windows queries), and saying so when a source cannot be read: a count nobody could take is
unknown, never zero; firmware placeholder strings are no facts either. Shared by the host,
peripherals and devices checks."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any, Literal

from wardready.checks import oswin
from wardready.checks.base import CheckConfig, ResultModel

OsChoice = Literal["auto", "linux", "windows"]
OsFamily = Literal["linux", "windows", "other"]


class OsSources(CheckConfig):
    """Where a check reads the OS from: tests point these at recorded machines."""

    os: OsChoice = "auto"
    """Which OS's readers to use; `linux` or `windows` lets tests drive either anywhere."""
    proc_root: str = "/proc"
    windows_recorded: str | None = None
    """A directory of recorded query outputs (see `checks.oswin`) to read instead of asking
    PowerShell."""


class Unreadable(ResultModel):
    """A source the check could not read, and why; the counts it feeds are unknown."""

    source: str
    reason: str


def attr(path: Path) -> str | None:
    """A sysfs or procfs attribute as text, stripped; None when absent, unreadable or empty.

    Attributes hold one value and a newline; some (DMI serials) are root-only.
    """
    try:
        value = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    return value or None


def attr_int(path: Path, base: int = 10) -> int | None:
    """An integer attribute (base 16 for USB ids and classes); None when absent or not a number."""
    value = attr(path)
    try:
        return int(value, base) if value is not None else None
    except ValueError:
        return None


def tree_problem(root: Path, *parts: str) -> str | None:
    """Why `root` (and each of `parts` below it) is not a readable directory, or None if it is."""
    for path in (root, *(root / part for part in parts)):
        try:
            if not path.is_dir():
                return f"{path} is not a directory" if path.exists() else f"{path} is missing"
            next(path.iterdir(), None)
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
    return None


def entries(directory: Path) -> list[Path]:
    """The entries of a directory, sorted; empty when it is missing (a class with no device)."""
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def os_family(choice: OsChoice) -> OsFamily:
    """Which readers to use: the configured family, or this machine's."""
    if choice != "auto":
        return choice
    system = platform.system()
    return "linux" if system == "Linux" else "windows" if system == "Windows" else "other"


def windows_query(name: str, command: str, recorded: str | None, timeout: float,
                  unreadable: list[Unreadable]) -> list[dict[str, Any]] | None:
    """The objects of one Windows query, or None (noted in `unreadable`) when it failed."""
    try:
        return oswin.query(name, command, recorded=Path(recorded) if recorded else None,
                           timeout=timeout)
    except oswin.QueryFailed as exc:
        unreadable.append(Unreadable(source=name, reason=str(exc)))
        return None


def text(value: object) -> str | None:
    """A JSON field as stripped text; None for null or blank (CIM pads some strings)."""
    if value is None:
        return None
    stripped = str(value).strip()
    return stripped or None


PLACEHOLDERS = frozenset(s.casefold() for s in (
    "To be filled by O.E.M.", "To Be Filled By O.E.M.", "Default string", "System Serial Number",
    "System Product Name", "System manufacturer", "System Version", "0123456789", "Not Specified",
    "Not Applicable", "None", "N/A", "NA", "OEM", "O.E.M.", "Unknown", "Invalid",
    "Chassis Serial Number", "Base Board Serial Number", "SerialNumber", "Type1ProductConfigId",
))
"""What firmware writes in DMI fields its maker never filled in (AMI and Insyde templates,
ASUS and Gigabyte boards): reporting them would make every such machine share one serial."""
_REPEATED = re.compile(r"^(.)\1*$")
"""A serial of one repeated character (`0000000000`, `FFFFFFFF`) is a placeholder too."""


def firmware_text(value: object) -> str | None:
    """A firmware string, or None when it is blank or a placeholder."""
    cleaned = text(value)
    if cleaned is None or cleaned.casefold() in PLACEHOLDERS or _REPEATED.match(cleaned):
        return None
    return cleaned
