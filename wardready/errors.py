"""Exceptions shared by the agent and the server."""

from __future__ import annotations


class WardreadyError(Exception):
    """Base of every error wardready reports to a user."""


class ConfigError(WardreadyError):
    """A configuration or inventory file is wrong; str() is one line naming file and line."""

    def __init__(self, file: str, line: int, where: str, message: str) -> None:
        self.file = file
        self.line = line
        self.where = where
        self.message = message
        place = f"{file}:{line}" if line else file
        super().__init__(f"{place}: {where}: {message}" if where else f"{place}: {message}")


def output_closed() -> int:
    """The reader of stdout went away (`... | head`): stop quietly instead of a traceback,
    and keep the interpreter's final flush from failing too. Returns the exit code."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1
