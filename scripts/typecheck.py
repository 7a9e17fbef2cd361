"""Type-check wardready as it installs: mypy cannot follow the editable install's import
hook, which maps the repository's agent/, server/ and checks/ into the `wardready` package.
This links each package folder (pyproject.toml's package-dir) into build/typecheck/, laid out
as the wheel lays them out, then runs mypy on it. Errors name the linked paths, e.g.
build/typecheck/wardready/agent/spool.py is agent/spool.py.

    .venv/bin/python scripts/typecheck.py [mypy arguments]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "build" / "typecheck"


def package_folders() -> dict[str, Path]:
    """Each package the wheel ships, and the repository folder it comes from, as setuptools
    finds it: the longest `package-dir` prefix of its name, then the rest of the name."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped: dict[str, str] = setuptools.get("package-dir", {})
    folders = {}
    for package in setuptools["packages"]:
        parts = package.split(".")
        cut = next(n for n in range(len(parts), -1, -1)
                   if n == 0 or ".".join(parts[:n]) in mapped)
        base = REPO / mapped[".".join(parts[:cut])] if cut else REPO
        folders[package] = base.joinpath(*parts[cut:])
    return folders


def link_tree() -> None:
    """build/typecheck/<package path>: the top package gets a folder of linked modules, every
    other package a link to its folder (unless its parent's link holds it already)."""
    shutil.rmtree(TREE, ignore_errors=True)
    for package, source in package_folders().items():
        target = TREE / package.replace(".", "/")
        if "." not in package:
            target.mkdir(parents=True)
            for module in source.glob("*.py"):
                (target / module.name).symlink_to(os.path.relpath(module, target))
        elif not target.exists():  # else inside its parent's link already (server/store)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.path.relpath(source, target.parent), target_is_directory=True)


def main() -> int:
    link_tree()
    return subprocess.call([sys.executable, "-m", "mypy", *sys.argv[1:]], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
