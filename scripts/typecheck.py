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


def link_tree() -> None:
    """build/typecheck/<package path>: one symlink a package folder, to the folder the
    package comes from; the top package gets its own folder of linked modules."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped: dict[str, str] = setuptools.get("package-dir", {})
    shutil.rmtree(TREE, ignore_errors=True)
    for package in setuptools["packages"]:
        source = REPO / mapped.get(package, package.replace(".", "/"))
        target = TREE / package.replace(".", "/")
        if target.exists():  # a subpackage (server/store): inside its parent's link already
            continue
        if "." not in package and package not in mapped:  # the top: its modules only
            target.mkdir(parents=True)
            for module in source.glob("*.py"):
                (target / module.name).symlink_to(os.path.relpath(module, target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.path.relpath(source, target.parent), target_is_directory=True)


def main() -> int:
    link_tree()
    return subprocess.call([sys.executable, "-m", "mypy", *sys.argv[1:]], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
