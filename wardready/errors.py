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
