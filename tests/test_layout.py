"""The layout: one installed package whose layers import only downward, and a wheel that
carries wardready and nothing else."""

from __future__ import annotations

import ast
import itertools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import REPO
from tests.conftest import load_file

LAYERS = ("wardready.core", "wardready.checks", "wardready.model",
          "wardready.agent", "wardready.server")
"""Bottom up. A module may import its own layer and those below it, except that the agent
and the server, side by side at the top, never import each other."""
NOT_SHIPPED = ("lab", "tests", "bench", "agent", "server", "checks")
"""Repository folders and the top-level names of an earlier layout: no shipped module may
import them."""


FOLDERS: dict[str, Path] = load_file(REPO / "scripts" / "typecheck.py",
                                     "typecheck").package_folders()
"""Each shipped package and its folder, as setuptools maps them (pyproject.toml)."""


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for file in sorted(folder.glob("*.py")):
            found[package if file.stem == "__init__" else f"{package}.{file.stem}"] = file
    return found


MODULES = modules()


def test_every_package_folder_ships() -> None:
    """A package folder left out of pyproject's list would be missing from the wheel."""
    folders = {folder.resolve() for folder in FOLDERS.values()}
    for folder in list(folders):
        for init in folder.rglob("__init__.py"):
            assert init.parent.resolve() in folders, f"{init.parent} is not in pyproject's packages"


def imported(name: str, file: Path) -> Iterator[tuple[str, int]]:
    """The modules `file` imports, anywhere in it (in functions too), with their lines. `from
    package import submodule` imports the submodule; a relative import is resolved."""
    package = name if file.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            yield from ((m, node.lineno) for m in submodules or [base])


def layer_of(module: str) -> str | None:
    return next((layer for layer in LAYERS
                 if module == layer or module.startswith(layer + ".")), None)


def test_the_layers_import_only_downward() -> None:
    wrong = []
    for name, file in MODULES.items():
        own = layer_of(name)
        for target, line in imported(name, file):
            top = target.split(".")[0]
            where = f"{file.relative_to(REPO)}:{line} imports {target}"
            if top in NOT_SHIPPED:
                wrong.append(f"{where}, which does not ship")
                continue
            other = layer_of(target)
            if own is None or other is None:
                continue  # the package's __init__, or a library
            if LAYERS.index(other) > LAYERS.index(own) or {own, other} == {
                    "wardready.agent", "wardready.server"}:
                wrong.append(f"{where}: {own} may not import {other}")
    assert wrong == []


def test_the_walk_sees_the_imports_it_forbids() -> None:
    """The walk above finds imports inside functions and `from package import module`."""
    checks_init = dict(imported("wardready.checks", MODULES["wardready.checks"]))
    assert "wardready.checks.bandwidth" in checks_init
    child = dict(imported("wardready.agent.child", MODULES["wardready.agent.child"]))
    assert "wardready.checks.base" in child
    assert "wardready.server.store" in dict(imported(
        "wardready.server.cli", MODULES["wardready.server.cli"]))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    counter = itertools.count()

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_loop() -> None:
    """Imports inside functions count: deferring one is how a loop is hidden, not removed.
    A package's __init__ importing its own modules is not a loop."""
    graph = {name: {m for m, _ in imported(name, file) if m in MODULES and m != name
                    and not name.startswith(m + ".")}
             for name, file in MODULES.items()}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the working tree: setuptools builds in the source's build/, where
    a module removed since an earlier build would linger and ship."""
    source, out = tmp_path_factory.mktemp("source") / "wardready", tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", ".demo", "*.egg-info", "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(source)], check=True, capture_output=True,
                   timeout=300)
    [built] = out.glob("wardready-*.whl")
    return built


def test_the_wheel_holds_the_wardready_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"wardready", f"{wheel.name.split('-py')[0]}"
                                                ".dist-info"}
    for module in ("wardready/agent/child.py", "wardready/server/app.py",
                   "wardready/checks/media.py", "wardready/core/inventory.py",
                   "wardready/model/readiness.py", "wardready/checks/devices/session.py",
                   "wardready/checks/host/windows.py", "wardready/core/echo.py"):
        assert module in names
    assert not [n for n in names if "stack" in n or "demo" in n or "/lab/" in n]


def test_the_wheel_installed_in_a_clean_environment_runs_agent_and_server(
        wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True
                               ).stdout.strip())
    before = set(os.listdir(site))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    assert set(os.listdir(site)) - before == {"wardready",
                                              wheel.name.split("-py")[0] + ".dist-info"}
    # The dependencies come from this test's own environment, behind the installed package.
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "site"
    work.mkdir()
    (work / "server.yml").write_text(f"inventory: {REPO / 'inventory.yml'}\n")
    (work / "agent.token").write_text("wr-not-a-real-token\n")
    (work / "agent.token").chmod(0o600)
    (work / "agent.yml").write_text(
        "server_url: http://127.0.0.1:9\nward: sai-gon\nhost: counter-01\n"
        f"token_file: agent.token\ninventory: {REPO / 'inventory.yml'}\n"
        "checks:\n  latency: {enabled: false}\n  bandwidth: {enabled: false}\n"
        "  media: {enabled: false}\n  probe: {enabled: false}\n  platforms: {enabled: false}\n"
        "  neighbours: {method: neighbour-table}\n")
    server = subprocess.run([env_dir / "bin" / "wardready-server", "check-config", "--config",
                             "server.yml"], cwd=work, capture_output=True, text=True,
                            timeout=120)
    assert server.returncode == 0, server.stderr
    # An isolated check as the agent runs it: a child `python -m wardready.agent.child`,
    # which must come from the installed package.
    request = json.dumps({"check": "neighbours", "config": {"method": "neighbour-table"},
                          "context": {"server": None, "platforms": [], "devices": []}})
    child = subprocess.run([python, "-c", "import runpy, sys, wardready.agent.child as c; "
                            "print(c.__file__, file=sys.stderr); "
                            "runpy.run_module('wardready.agent.child', run_name='__main__')"],
                           input=request, cwd=work, capture_output=True, text=True,
                           timeout=120)
    assert Path(child.stderr.splitlines()[0]).is_relative_to(site), child.stderr
    assert "networks" in json.loads(child.stdout)["result"], child.stdout
    # `check` runs the host and peripherals checks (the link checks are off here); the
    # server is a closed loopback port, so the verdict is judged against the local inventory.
    agent = subprocess.run([env_dir / "bin" / "wardready-agent", "check", "--json",
                            "--config", "agent.yml"], cwd=work, capture_output=True,
                           text=True, timeout=300)
    assert agent.returncode in (0, 1), agent.stderr
    assert "(host): ok" in agent.stderr and "peripherals: ok" in agent.stderr, agent.stderr
    assert "server unreachable" in json.loads(agent.stdout)["profile_source"]
