"""The front door: README.md stays short, draws the flow, and its Layout table matches the
tree (every top-level folder, every module of the code folders, nothing that is not there);
the links and module names in README.md and docs/ resolve; the two commands are the ones
scripts/ has and CI runs; docs/api.md lists exactly the server's routes.

Each check is a function returning what is wrong, so the tests at the bottom can show that
each one catches the drift it is there for."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import REPO
from wardready.core.inventory import load_inventory
from wardready.server.app import create_app
from wardready.server.config import ServerConfig

README = REPO / "README.md"
MAX_BYTES = 10_000
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "grafana" / "README.md"]
"""Where a newcomer reads; their links and module names must resolve."""
CODE_FOLDERS = ("agent", "server", "checks", "wardready", "wardready/core", "wardready/model",
                "lab", "bench", "scripts")
"""Layout rows that name every module (`x.py`, `x.sh`) and subpackage (`x/`) in their folder."""
NOT_CODE = ("tests",)
"""Packages whose modules the table does not list one by one."""
IGNORED = re.compile(r"\..*|__pycache__|.*\.egg-info|build")
"""Outside git: the folders .gitignore leaves out, roughly (and dot-folders)."""


def tree() -> set[str]:
    """The repository's files, tracked or not ignored, as relative POSIX paths."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True, check=True,
                             timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk it
        found = set()
        for folder, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if not IGNORED.fullmatch(d)]
            found |= {(Path(folder) / f).relative_to(REPO).as_posix() for f in files}
        return found
    return {line for line in out.splitlines() if (REPO / line).is_file()}


FILES = tree()


# -- the Layout table --

def layout(readme: str) -> dict[str, str]:
    """The Layout table's rows: path (without backticks) -> the row's description."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def tokens(text: str) -> list[str]:
    """The inline code spans of Markdown text (fenced blocks left out: their fences would
    pair the backticks wrongly)."""
    prose = re.sub(r"(?ms)^```.*?^```", "", text)
    return [t.replace("\n", " ") for t in re.findall(r"`([^`]+)`", prose)]


def named(text: str) -> set[str]:
    """The modules and subpackages a row names: `x.py`, `x.sh`, `x/`."""
    return {t for t in tokens(text) if re.fullmatch(r"[\w.-]+\.(py|sh)|[\w-]+/", t)}


def members(folder: str, files: set[str]) -> set[str]:
    """The module files and subpackages directly in `folder`, as a row names them."""
    found = set()
    for path in files:
        parent, _, name = path.rpartition("/")
        if parent == folder and re.fullmatch(r"[\w.-]+\.(py|sh)", name) and name != "__init__.py":
            found.add(name)
        elif parent.rpartition("/")[0] == folder and name == "__init__.py":
            found.add(parent.rpartition("/")[2] + "/")
    return found


def missing_paths(rows: dict[str, str]) -> list[str]:
    """Each row's path, and each path it names, that does not exist (a path it names is
    looked up in the row's folder, then from the top)."""
    wrong = []
    for path, what in rows.items():
        if not (REPO / path).exists():
            wrong.append(path)
        folder = REPO / path if path.endswith("/") else REPO
        for token in tokens(what):
            if " " in token or token.startswith("/") or not (
                    "/" in token or re.search(r"\.(py|sh|ya?ml|json|md|toml|service)$", token)):
                continue
            if not ((folder / token).exists() or (REPO / token).exists()):
                wrong.append(f"{path}: {token}")
    return wrong


def unlisted_folders(rows: dict[str, str], files: set[str]) -> list[str]:
    """Top-level folders (dot-folders aside) without a row of their own."""
    tops = {f.split("/")[0] for f in files if "/" in f and not f.startswith(".")}
    return sorted(t for t in tops if f"{t}/" not in rows)


def module_drift(rows: dict[str, str], files: set[str]) -> dict[str, dict[str, list[str]]]:
    """For each code folder: modules and subpackages its row leaves out, and names in its
    row that are not there."""
    wrong = {}
    for folder in CODE_FOLDERS:
        have, said = members(folder, files), named(rows.get(f"{folder}/", ""))
        if have != said:
            wrong[folder] = {"unnamed": sorted(have - said), "not there": sorted(said - have)}
    return wrong


def packages_not_listed(files: set[str]) -> list[str]:
    """Top-level packages, and subpackages of wardready, that are not code folders of the
    table: a new one would otherwise escape the module check."""
    found = {path.rpartition("/")[0] for path in files if path.endswith("__init__.py")}
    wanted = {p for p in found if p.count("/") == 0 or (p.count("/") == 1
                                                         and p.startswith("wardready/"))}
    return sorted(wanted - set(CODE_FOLDERS) - set(NOT_CODE))


# -- the flow picture --

def fenced_blocks(markdown: str) -> list[str]:
    return re.findall(r"(?ms)^```[\w-]*\n(.*?)^```", markdown)


COMPONENTS = ("checks", "agent", "spool", "server", "Prometheus", "rules", "Alertmanager",
              "Grafana", "equipment request list")
ARROW = r"\s*-+>\s*"
DOWN = re.compile(r"(^|\s)v(\s|$)")


def flow_problems(readme: str) -> list[str]:
    """What the flow picture lacks: a code block with every component, the agent's chain
    on one line, then down from the server to Prometheus and its rules, then down to
    Alertmanager and Grafana, and an arrow to the equipment request list."""
    blocks = [b for b in fenced_blocks(readme) if all(c in b for c in COMPONENTS)]
    if not blocks:
        return [f"no code block shows all of {', '.join(COMPONENTS)}"]
    lines = blocks[0].splitlines()

    def first(pattern: str) -> int | None:
        return next((i for i, line in enumerate(lines) if re.search(pattern, line)), None)

    def goes_down(above: int, below: int) -> bool:
        return above < below and any(DOWN.search(line) for line in lines[above + 1:below])

    wrong = []
    chain = first(rf"checks{ARROW}agent{ARROW}spool\b.*-+>.*\bserver\b")
    if chain is None:
        wrong.append("no line 'checks --> agent --> spool --> server'")
    if first(rf"{ARROW}equipment request list") is None:
        wrong.append("no arrow to the equipment request list")
    prometheus = first(rf"Prometheus{ARROW}rules")
    if prometheus is None:
        wrong.append("no line 'Prometheus --> rules'")
    elif chain is None or not goes_down(chain, prometheus):
        wrong.append("no arrow down from the server to Prometheus")
    alerting = first(r"Alertmanager.*Grafana|Grafana.*Alertmanager")
    if alerting is None:
        wrong.append("Alertmanager and Grafana are not side by side")
    elif prometheus is None or not goes_down(prometheus, alerting):
        wrong.append("no arrow down from the rules to Alertmanager and Grafana")
    return wrong


# -- links and names in the docs --

def broken_links(path: Path, text: str) -> list[str]:
    """Relative links that carry an anchor or point at no file."""
    wrong = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        if "#" in target:
            wrong.append(f"{target}: no anchors (a heading renamed breaks them unseen)")
        elif not (path.parent / target).resolve().is_file():
            wrong.append(f"{target}: no such file")
    return wrong


REPO_PATH = re.compile(r"(?:agent|server|checks|wardready|lab|bench|tests|scripts|prometheus"
                       r"|grafana|packaging)/[\w./-]*")
"""Backticked paths into the repository (docs/ aside: its links are checked as links, and
video-presets.md quotes other projects' docs/ paths)."""


MAPPED = ("agent", "server", "checks")
"""Folders installed as wardready.agent, .server, .checks: from the repository's top they
import under their folder's name too, but that name is not the module."""


def findable(module: str) -> bool:
    if module.split(".")[0] in MAPPED:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def missing_names(text: str) -> list[str]:
    """Repository paths in backticks that do not exist, and `python -m X` or
    `from X import` modules that cannot be found."""
    wrong = []
    for token in tokens(text):
        path = token.split("::")[0]
        if REPO_PATH.fullmatch(path) and not (REPO / path).exists():
            wrong.append(path)
    for match in re.finditer(r"python -m ([a-z_][\w.]*)|^from ([a-z_][\w.]*) import\b", text,
                             re.MULTILINE):
        module = match[1] or match[2]
        if not findable(module):
            wrong.append(f"module {module}")
    return wrong


# -- the two commands --

def two_commands(readme: str) -> list[str]:
    """The commands of the README's "Two commands" code block, comments left out."""
    section = readme.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    [block] = fenced_blocks(section)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


# -- the API reference --

def documented_routes(text: str) -> set[str]:
    return {re.sub(r"\?.*", "", t) for t in tokens(text)
            if re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE) /\S*", t)}


def server_routes() -> set[str]:
    app = create_app(ServerConfig(), load_inventory(REPO / "inventory.yml"))
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = re.sub(r"\{[^}]+\}", "ID", route.resource.canonical if route.resource else "")
        routes.add(f"{route.method} {path}")
    return routes


# -- the tests --

def test_readme_is_short() -> None:
    assert len(README.read_bytes()) <= MAX_BYTES


def test_readme_draws_the_flow() -> None:
    assert flow_problems(README.read_text(encoding="utf-8")) == []


def test_every_path_in_the_layout_table_exists() -> None:
    rows = layout(README.read_text(encoding="utf-8"))
    assert len(rows) >= 15
    assert missing_paths(rows) == []


def test_every_top_level_folder_is_in_the_layout_table() -> None:
    assert unlisted_folders(layout(README.read_text(encoding="utf-8")), FILES) == []


def test_each_code_folder_row_names_every_module_and_only_those() -> None:
    rows = layout(README.read_text(encoding="utf-8"))
    assert [f for f in CODE_FOLDERS if f"{f}/" not in rows] == []
    assert module_drift(rows, FILES) == {}
    assert packages_not_listed(FILES) == []


def test_links_in_readme_and_docs_point_at_files() -> None:
    wrong = {str(p.relative_to(REPO)): found for p in DOCS
             if (found := broken_links(p, p.read_text(encoding="utf-8")))}
    assert wrong == {}


def test_paths_and_modules_named_in_readme_and_docs_exist() -> None:
    wrong = {str(p.relative_to(REPO)): found for p in DOCS
             if (found := missing_names(p.read_text(encoding="utf-8")))}
    assert wrong == {}


def test_the_two_commands_are_the_scripts_and_ci_runs_the_tests() -> None:
    assert two_commands(README.read_text(encoding="utf-8")) == [
        "bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("demo.sh", "test.sh"):
        assert "bash scripts/setup.sh" in (REPO / "scripts" / script).read_text()
    assert (REPO / "scripts" / "setup.sh").is_file()
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if not line.lstrip().startswith("#")]
    assert any(re.fullmatch(r"\s*(exec\s+)?bash scripts/test\.sh\b.*", line) for line in ci)
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert missing_names(demo) == [] and "python -m lab.demo" in demo


def test_the_api_reference_lists_every_route_and_only_those() -> None:
    documented = documented_routes((REPO / "docs" / "api.md").read_text(encoding="utf-8"))
    routes = server_routes()
    assert len(routes) > 20
    assert {"undocumented": sorted(routes - documented),
            "not served": sorted(documented - routes)} == {"undocumented": [], "not served": []}


# -- each check catches what it is there for --

def test_the_layout_checks_catch_a_drifted_table() -> None:
    readme = README.read_text(encoding="utf-8")
    rows = layout(readme)
    dropped = {**rows, "agent/": rows["agent/"].replace("`spool.py`", "spool")}
    assert module_drift(dropped, FILES) == {"agent": {"unnamed": ["spool.py"], "not there": []}}
    ghost = {**rows, "checks/": rows["checks/"] + "; `ghost.py` and `gone/`"}
    assert module_drift(ghost, FILES) == {
        "checks": {"unnamed": [], "not there": ["ghost.py", "gone/"]}}
    assert module_drift(rows, FILES | {"server/newcomer.py", "checks/new/__init__.py"}) == {
        "checks": {"unnamed": ["new/"], "not there": []},
        "server": {"unnamed": ["newcomer.py"], "not there": []}}
    assert unlisted_folders({k: v for k, v in rows.items() if k != "lab/"}, FILES) == ["lab"]
    assert sorted(missing_paths({**rows, "tools/": "`x.py`",
                                 "grafana/": "`dashboards/old.json`"})) == [
        "grafana/: dashboards/old.json", "tools/", "tools/: x.py"]
    assert packages_not_listed(FILES | {"tools/__init__.py", "wardready/io/__init__.py"}) == [
        "tools", "wardready/io"]


def test_the_flow_check_catches_a_broken_picture() -> None:
    readme = README.read_text(encoding="utf-8")
    assert flow_problems(readme.replace("Grafana", "Grafama")) == [
        "no code block shows all of " + ", ".join(COMPONENTS)]
    assert flow_problems(readme.replace("agent --> spool", "agent     spool")) == [
        "no line 'checks --> agent --> spool --> server'",
        "no arrow down from the server to Prometheus"]
    assert flow_problems(readme.replace("--> equipment request list",
                                        "    equipment request list")) == [
        "no arrow to the equipment request list"]
    block = next(b for b in fenced_blocks(readme) if "Alertmanager" in b)
    flat = "\n".join(line for line in block.splitlines() if not DOWN.search(line))
    assert flow_problems(readme.replace(block, flat)) == [
        "no arrow down from the server to Prometheus",
        "no arrow down from the rules to Alertmanager and Grafana"]


def test_the_link_and_name_checks_catch_what_moved() -> None:
    page = REPO / "docs" / "install.md"
    assert broken_links(page, "[a](api.md) [b](nope.md) [c](api.md#tokens) [d](https://x.org)"
                        ) == ["nope.md: no such file",
                              "api.md#tokens: no anchors (a heading renamed breaks them unseen)"]
    assert missing_names("`wardready/emodel.py`, `tests/netlab.py`, `lab/netlab.py`, "
                         "`tests/test_spool.py::test_x`\npython -m checks latency\n"
                         "from wardready.emodel import predict\npython -m wardready.checks"
                         ) == ["wardready/emodel.py", "tests/netlab.py", "module checks",
                               "module wardready.emodel"]


def test_the_command_and_api_checks_catch_a_change() -> None:
    readme = README.read_text(encoding="utf-8")
    assert two_commands(readme.replace("bash scripts/test.sh", "make test")) == [
        "bash scripts/demo.sh", "make test"]
    api = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    assert "GET /api/v1/whoami" in server_routes() - documented_routes(
        api.replace("`GET /api/v1/whoami`", "whoami"))
