"""Shared fixtures. Under CI=true a skipped test is a failure: CI must run everything."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lab import REPO, stack
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


# Secrets in the run's logs. Every log file the session wrote (the server, agents, Prometheus,
# sshd under pytest's base temporary folder, and every lab.stack.Process log wherever it is)
# is read at the session's end for a bearer token or an enrollment code with its secret, and
# for each known secret verbatim: the SSH peers' passwords, the passwords test modules define,
# and the token secrets the run handed to agents (their token files). A token's or a code's
# id alone may be logged; its secret may not. Under CI=true a secret found fails the session.

TOKEN_SECRET = re.compile(r"wrt_([0-9A-Za-z]+)\.([A-Za-z0-9_-]{8,})")
"""A bearer token with its secret: `wrt_` (server.store.tokens.TOKEN_PREFIX), id, dot, secret."""
_CODE_CHAR = "[0-9a-hjkmnp-tv-z]"  # wardready.core.enrollment.ALPHABET, Crockford's base32
ENROLLMENT_CODE = re.compile(rf"wre[- ]?({_CODE_CHAR}{{5}})[- ]?((?:{_CODE_CHAR}{{5}}[- ]?){{4}}"
                             rf"{_CODE_CHAR}{{5}})", re.IGNORECASE)
"""An enrollment code with its secret: `wre`, the id's five characters, then 25 secret ones,
grouped by dashes or spaces as shown, or not at all."""
MIN_KNOWN_SECRET = 8
"""Shorter known secrets (a unit test's password "a") would be found in any log by chance."""


@dataclass(frozen=True)
class Leak:
    """A secret found in a log: where, what kind, and the secret redacted."""

    path: Path
    line: int
    kind: str
    shown: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind} {self.shown}"


def redacted(secret: str) -> str:
    """A secret as it may be printed: its length and its first two characters at most."""
    return f"{secret[:2]}<redacted, {len(secret)} chars>" if len(secret) >= 8 else \
        f"<redacted, {len(secret)} chars>"


def find_secrets(files: Iterable[Path], known: Iterable[str] = ()) -> list[Leak]:
    """Every token or enrollment code with its secret, and every known secret verbatim, in
    `files` (read as bytes, decoded leniently: a log may hold anything a client sent)."""
    exact = sorted({k for k in known if len(k) >= MIN_KNOWN_SECRET}, key=len, reverse=True)
    leaks = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for m in TOKEN_SECRET.finditer(line):
                leaks.append(Leak(path, number, "bearer token",
                                  f"wrt_{m[1]}.{redacted(m[2])}"))
            for m in ENROLLMENT_CODE.finditer(line):
                leaks.append(Leak(path, number, "enrollment code",
                                  f"wre-{m[1]}-{redacted(m[2])}"))
            for secret in exact:
                if secret in line:
                    leaks.append(Leak(path, number, "known secret", redacted(secret)))
    return leaks


def log_files(basetemp: Path | None, started: Iterable[Path]) -> list[Path]:
    """The run's log files: `*.log` (and rotated `*.log.N`) under `basetemp`, and the logs of
    the processes started (`started`) that still exist, wherever they are."""
    found: set[Path] = set()
    if basetemp is not None and basetemp.is_dir():
        found.update(p for p in basetemp.rglob("*.log*")
                     if p.is_file() and re.fullmatch(r".*\.log(\.\d+)?", p.name))
    found.update(p for p in started if p.is_file())
    return sorted(found)


def known_secrets(basetemp: Path | None) -> set[str]:
    """The secrets the run used that may be recognised only verbatim: the SSH peers'
    passwords (lab.sshpeers), the PASSWORD and SECRET constants of the test modules loaded,
    and the secret half of every token written to an agent's token file under `basetemp`."""
    known: set[str] = set()
    peers = sys.modules.get("lab.sshpeers")
    known.update(getattr(peers, "PASSWORDS", ()))
    for name, module in list(sys.modules.items()):
        if name.startswith("tests.") or name.startswith("test_"):
            known.update(value for attr, value in vars(module).items()
                         if isinstance(value, str) and re.search(r"PASSWORD|SECRET", attr))
    if basetemp is not None and basetemp.is_dir():
        for token_file in basetemp.rglob("token"):
            if token_file.is_file() and token_file.stat().st_size < 4096:
                _, dot, secret = token_file.read_text(errors="replace").strip().partition(".")
                if dot:
                    known.add(secret)
    return known


_BASETEMP: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _remember_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Where this session's temporary folders are, for the scan at its end."""
    _BASETEMP.append(tmp_path_factory.getbasetemp())
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No token, enrollment code or password in any log the run wrote (fails under CI=true)."""
    basetemp = _BASETEMP[0] if _BASETEMP else None
    files = log_files(basetemp, stack.LOGS)
    leaks = find_secrets(files, known_secrets(basetemp))
    problems = [str(leak) for leak in leaks]
    if stack.LOGS and not any(log in files for log in stack.LOGS):
        problems.append(f"{len(stack.LOGS)} processes were started but none of their logs "
                        f"could be read (first: {stack.LOGS[0]}): the scan would pass unseen")
    _SCAN_LINES[:] = [f"{len(files)} log files ({sum(f.stat().st_size for f in files):,} bytes) "
                      f"from {len(stack.LOGS)} processes started, {len(problems)} problems",
                      *problems[:50]]
    if len(problems) > 50:
        _SCAN_LINES.append(f"... and {len(problems) - 50} more")
    if problems and IN_CI:
        _SCAN_LINES.append("the session fails: a secret in a log, or nothing scanned (CI=true)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SCAN_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the scan at the session's end found (it runs before this summary)."""
    if _SCAN_LINES:
        terminalreporter.write_sep("-", "secrets in the run's logs")
        for line in _SCAN_LINES:
            terminalreporter.write_line(line)


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


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount takes it: 256k, 4m) at `mount`: a real disk that can be
    filled up. Mounting needs root: skipped without it (a failure under CI=true)."""
    mount.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs under CI: {made.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (see `tmpfs`)."""
    with tmpfs(tmp_path / "full", "256k") as mount:
        yield mount


def fill_up(disk: Path, limit: int = 64 << 20) -> Path:
    """Write zeros under `disk` until it is full (`small_disk` fills long before `limit`
    bytes); returns the file written, whose removal frees the disk again."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        for _ in range(limit // 4096):
            out.write(b"\0" * 4096)
    return filler


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
