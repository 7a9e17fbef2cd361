"""Exceptions shared by the agent and the server."""

from __future__ import annotations

from typing import Literal


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


# -- checks --

class ResolutionError(WardreadyError):
    """A latency target's name gave no usable address."""


class MediaError(WardreadyError):
    """A check over the server's UDP echo (media, probe) could not run (no server, session
    refused): a failed run, not a finding."""


class QueryFailed(WardreadyError):
    """A Windows query could not be run or its output was not JSON; the message says why."""


class CredentialsError(WardreadyError, ValueError):
    """The device secrets file is unsafe or malformed; str() is one line naming the file."""


PollReason = Literal["refused", "timeout", "auth", "host-key", "unreachable", "no-credentials",
                     "protocol", "parse", "unsupported"]
"""How a device poll fails: the bounded values of the devices check's `reason` label."""


class PollError(WardreadyError):
    """A router or switch failed in one of the known ways; the message holds no secret."""

    def __init__(self, reason: PollReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- agent --

class AttemptFailed(WardreadyError):
    """A report's delivery failed before the server answered; `reason` is one of
    `agent.delivery.FAILURE_REASONS`."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.reason = reason


class ChildError(WardreadyError, RuntimeError):
    """An isolated check's child process ran but did not deliver a result; the message says
    why."""


class EnrollError(WardreadyError):
    """Enrollment failed: the server refused, or could not be reached or trusted."""


# -- server --

RefusalReason = Literal["unknown", "used", "expired", "ward", "host"]
"""Why an enrollment code is refused; each is answered with its own HTTP status."""


class EnrollmentRefused(WardreadyError):
    """An enrollment code that cannot be redeemed; nothing was changed."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SessionsFull(WardreadyError):
    """The UDP echo's `max_sessions` sessions are open."""
