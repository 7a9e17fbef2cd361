"""Shared fixtures. Under CI=true a skipped test is a failure: CI must run everything."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lab import REPO
from wardready.core.inventory import Inventory, load_inventory
from wardready.core.metrics import MetricSpec, Sample, SampleCollector
from wardready.server.config import ServerConfig

DATA = Path(__file__).parent / "data"
IN_CI = os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true, which must run every test: {reason}"


def load_file(path: Path, name: str) -> ModuleType:
    """A script that is not a package module (a generator, a setup script) imported from its
    file, registered under `name` (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_binary(name: str) -> str:
    """The path of a binary the test needs; skip on a laptop without it (fails under CI)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it as root)")
    return path


NOBODY = 65534

# Run as root by `as_nobody`: in a mount namespace of its own, cover each folder nobody may not
# enter with an empty tmpfs nobody may enter, bind what the command needs back at its own path,
# then exec the rest of argv (setpriv ...). argv[1] is the plan: {cover: [needed paths]}.
_OPEN_THE_WAY = """
import ctypes, json, os, sys
plan = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p)
def check(rc, what):
    if rc != 0:
        errno = ctypes.get_errno()
        sys.exit(f"as_nobody: {what}: {os.strerror(errno)}")
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 4096, 16384, 1 << 18
check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")  # never mount in the caller's view
check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
os.umask(0o022)
needed = {path: os.open(path, os.O_PATH) for paths in plan.values() for path in paths}
for cover in plan:
    check(libc.mount(b"tmpfs", cover.encode(), b"tmpfs", 0, b"mode=0755"), f"tmpfs on {cover}")
for path, fd in needed.items():
    os.makedirs(path, exist_ok=True)
    check(libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC,
                     None), f"binding {path}")
    os.close(fd)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _nobody_may_enter(folder: Path) -> bool:
    """By the mode bits, as nobody (uid and gid 65534, no other group) is judged; ACLs aside."""
    st = folder.stat()
    if st.st_uid == NOBODY:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == NOBODY:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def as_nobody(argv: Sequence[str]) -> list[str]:
    """`argv` run as nobody: uid and gid 65534, no groups, no capabilities (needs root).

    The Python running the tests and the repository it imports may sit in folders only root
    may enter: CI clones into `mktemp -d` (mode 700), pyenv installs under /root. Then nobody
    could not even start that Python. So the command first passes through a root step that,
    in a mount namespace of its own (nothing leaks out), covers each such folder with an
    empty tmpfs that others may enter, holding bind mounts of just the repository and the
    interpreter's folders, at their own paths; then it drops to nobody. A needed folder that
    is itself closed to others cannot be opened this way: the test fails saying so."""
    drop = [require_binary("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}",
            "--clear-groups", "--inh-caps=-all"]
    wanted = {Path(p).resolve() for p in (REPO, sys.prefix, sys.exec_prefix, sys.base_prefix,
                                          sys.base_exec_prefix)}
    wanted.add(Path(sys.executable).resolve().parent)
    # the outermost folders only: the others are inside them
    needed = [p for p in wanted if not any(o != p and o in p.parents for o in wanted)]
    plan: dict[str, list[str]] = {}
    for path in sorted(needed):
        if not _nobody_may_enter(path):
            pytest.fail(f"nobody (uid {NOBODY}) may not enter {path} (mode "
                        f"{path.stat().st_mode & 0o777:o}), which it needs to run Python "
                        f"from this checkout: give others search permission (chmod o+x)")
        closed = [a for a in reversed(path.parents) if not _nobody_may_enter(a)]
        if closed:
            plan.setdefault(str(closed[0]), []).append(str(path))
    if not plan:
        return [*drop, *argv]
    return [sys.executable, "-c", _OPEN_THE_WAY, json.dumps(plan), *drop, *argv]


def promtool_check_metrics(exposition: bytes) -> str:
    """Run `promtool check metrics`; returns its complaints ('' when clean)."""
    out = subprocess.run([require_binary("promtool"), "check", "metrics"], input=exposition,
                         capture_output=True, check=False)
    return (out.stdout + out.stderr).decode().strip() if out.returncode else ""


def series(samples: Iterable[Sample]) -> dict[tuple[str, tuple[str, ...]], float]:
    """Samples by (metric name, label values); a repeated series would be a scrape error."""
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for sample in samples:
        key = (sample.spec.name, sample.labels)
        assert key not in out, f"duplicate series {key}"
        out[key] = sample.value
    return out


def exposition(specs: Sequence[MetricSpec], samples: Iterable[Sample]) -> bytes:
    """The text exposition of one check's metrics, as an agent would serve them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(specs, lambda: samples))
    return generate_latest(registry)


@pytest.fixture(scope="session")
def inventory_path() -> Path:
    return REPO / "inventory.yml"


@pytest.fixture(scope="session")
def inventory(inventory_path: Path) -> Inventory:
    return load_inventory(inventory_path)


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    """A server config with a fresh database and the small test inventory."""
    return ServerConfig(database=tmp_path / "w.db", inventory=DATA / "inventory-small.yml")
