"""Windows facts through PowerShell (CIM and PnP cmdlets) as JSON, or replayed from recordings.

Checks that read Windows name each query; with `recorded` set, the query's output is read
from `<recorded>/<name>.json` instead (a file saved from a real machine with the same
command), so the Windows code paths are tested on any OS. A missing recording behaves like
a query that failed: the caller reports "unknown", never "zero".
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from wardready.core.errors import QueryFailed

PREAMBLE = ("$ProgressPreference = 'SilentlyContinue'; "
            "[Console]::OutputEncoding = [Text.Encoding]::UTF8; ")


def query(name: str, command: str, *, recorded: Path | None = None,
          timeout: float = 30.0) -> list[dict[str, Any]]:
    """The objects a PowerShell pipeline returns, as dicts.

    `command` must end in `ConvertTo-Json`; one object and no object are normalised to a
    list, as PowerShell 5.1 returns a bare object for one result and nothing for none.
    """
    if recorded is not None:
        path = recorded / f"{name}.json"
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise QueryFailed(f"{name}: no recorded output ({exc.strerror or exc})") from None
    else:
        text = _run(name, command, timeout)
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise QueryFailed(f"{name}: output is not JSON ({exc})") from None
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


def _run(name: str, command: str, timeout: float) -> str:
    shell = shutil.which("powershell") or shutil.which("pwsh")
    if shell is None:
        raise QueryFailed(f"{name}: PowerShell not found")
    try:
        done = subprocess.run([shell, "-NoProfile", "-NonInteractive", "-Command",
                               PREAMBLE + command], capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise QueryFailed(f"{name}: no answer within {timeout:g} s") from None
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        raise QueryFailed(f"{name}: exit {done.returncode}: {error[0] if error else ''}")
    return done.stdout.decode("utf-8", "replace")
