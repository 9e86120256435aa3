"""Machinery for testing the Copier template.

Renders variants of the template, runs each rendered project's own checks (the contract:
``uv sync``, ``uv run ruff format --check .``, ``uv run ruff check .``, ``uv run mypy``,
``uv run pytest``), checks the rendered text for hygiene, and schedules the variant matrix on
a small pool of worker threads (every step is a subprocess, so threads are enough).

Sharing, so that the matrix stays fast on 2 cores:

* renders: one long-lived ``render_server.py`` process imports copier once and renders every
  variant (``copier.run_copy``), instead of paying ~2 s of imports per ``copier`` command;
* installs: uv's one cache (hard links, ``UV_LINK_MODE=hardlink``); and by default one
  environment per worker and Python version (``UV_PROJECT_ENVIRONMENT``) that ``uv sync``
  re-syncs *exactly* for each variant, so that installs are incremental and byte code is
  compiled once per worker, not once per variant (``--fresh-venvs`` gives each its own
  ``.venv``);
* mypy: seeded caches (see ``MypySeeds``): third-party packages are analysed once per Python
  version (and kept between runs), the project's own modules every time. No two processes
  ever write to the same cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
import tomllib
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# The axes of the variant matrix. Question names are the template's public contract.
MATRIX_AXES: dict[str, tuple[Any, ...]] = {
    "primary_key": ("uuid", "dual_id"),
    "soft_delete": (True, False),
    "repository_style": ("generic", "functions"),
    "api": ("fastapi", "none"),
}

# Steps of one variant, in the order they run. A step listed in BLOCKED_BY does not run when
# one of the steps named there did not pass.
# "embedded": the suite again with no TEST_DATABASE_URL, on the PostgreSQL 18 it starts itself
# (the new user's path), for the variants marked ``embedded``: one per (examples, api) family.
VARIANT_STEPS = ("render", "hygiene", "sync", "format", "lint", "mypy", "pytest", "embedded")
BLOCKED_BY: dict[str, tuple[str, ...]] = {
    "hygiene": ("render",),
    "sync": ("render",),
    "format": ("render", "sync"),
    "lint": ("render", "sync"),
    "mypy": ("render", "sync"),
    "pytest": ("render", "sync"),
    "embedded": ("render", "sync"),
}

# Variables that would make a rendered project's tools look somewhere else than the project.
_DROPPED_ENV = (
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_CURRENT_TEST",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "MYPYPATH",
    "MYPY_CACHE_DIR",
    "PYTHONDONTWRITEBYTECODE",
    "FORCE_COLOR",
    "UV_PROJECT",
    "UV_PROJECT_ENVIRONMENT",
    "UV_PYTHON",
    "UV_SYSTEM_PYTHON",
    "UV_NO_DEV",
    "UV_NO_DEFAULT_GROUPS",
    "UV_FROZEN",
    "UV_LOCKED",
    "UV_NO_SYNC",
    "UV_ISOLATED",
    "NOX_CURRENT_SESSION",
    "DATABASE_URL",
    "TEST_DATABASE_URL",
)

_SKIP_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
}
_EMPTY_OK = {"__init__.py", "py.typed", ".gitkeep", ".keep"}


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def pyenv_version() -> str | None:
    """A PYENV_VERSION under which pyenv's shims expose every installed CPython.

    The global version(s) come first, so ``python3`` stays what it was; every other installed
    ``X.Y.Z`` follows, newest first, so ``python3.12``/``python3.13`` resolve and uv finds them.
    Returns None where there is no pyenv. Versions of an already exported PYENV_VERSION
    come first (pyenv's own shims, e.g. for `uvx`, export a single version).
    """
    exported = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return ":".join(exported) or None
    try:
        bare = subprocess.run(
            [pyenv, "versions", "--bare", "--skip-aliases"],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout.split()
        glob = subprocess.run(
            [pyenv, "global"], capture_output=True, text=True, check=True, cwd="/"
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return ":".join(exported) or None
    cpythons = [v for v in bare if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    cpythons.sort(key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)
    order = [*exported, *(v for v in glob if v != "system"), *cpythons]
    return ":".join(dict.fromkeys(order)) or None


def find_uv() -> str:
    """The real uv binary (not a pyenv shim, which breaks inside a project's .python-version)."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]

        return str(find_uv_bin())
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError("uv is not installed: `pip install uv`")
    if "/shims/" in found and shutil.which("pyenv"):
        with contextlib.suppress(subprocess.CalledProcessError):
            return subprocess.run(
                ["pyenv", "which", "uv"], capture_output=True, text=True, check=True
            ).stdout.strip()
    return found


RUNS_ROOT = Path(tempfile.gettempdir()) / "copier-template-tests"
KEEP_RUNS = 3


def new_run_dir(template_src: Path) -> Path:
    """A fresh directory for this run's renders and logs, outside any repository and outside
    pytest's own temporary directories (which the variants' test suites rotate away). The
    last KEEP_RUNS runs of the same template are kept for inspection; ``latest`` links here.
    """
    digest = hashlib.sha256(str(template_src).encode()).hexdigest()[:8]
    base = RUNS_ROOT / f"{template_src.name or 'template'}-{digest}"
    base.mkdir(parents=True, exist_ok=True)
    run = base / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run.mkdir()
    (run / "pid").write_text(f"{os.getpid()}\n")
    runs = sorted(p for p in base.glob("run-*") if p.is_dir())
    for old in runs[:-KEEP_RUNS]:
        try:
            pid = int((old / "pid").read_text())
            os.kill(pid, 0)
            if pid != os.getpid():
                continue  # still running
        except (OSError, ValueError):
            pass
        shutil.rmtree(old, ignore_errors=True)
    latest = base / "latest"
    with contextlib.suppress(OSError):
        tmp = base / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run.name)
        tmp.replace(latest)
    return run


def base_env(uv: str, pyenv: str | None) -> dict[str, str]:
    """The environment every rendered project's commands run in (without any database URL)."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    if pyenv:
        env["PYENV_VERSION"] = pyenv
    env["PATH"] = os.pathsep.join([str(Path(uv).parent), env.get("PATH", "")])
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_LINK_MODE", "hardlink")
    env["UV_NO_PROGRESS"] = "1"
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    # copier commits a dirty template into its temporary clone: it needs an identity.
    for var, value in (
        ("GIT_AUTHOR_NAME", "template tests"),
        ("GIT_AUTHOR_EMAIL", "template-tests@localhost"),
        ("GIT_COMMITTER_NAME", "template tests"),
        ("GIT_COMMITTER_EMAIL", "template-tests@localhost"),
    ):
        env.setdefault(var, value)
    return env


# --------------------------------------------------------------------------------------------
# Questions and variants
# --------------------------------------------------------------------------------------------


def load_questions(template_src: Path) -> dict[str, dict[str, Any]]:
    """The questions of copier.yml (settings starting with '_' left out)."""
    for name in ("copier.yml", "copier.yaml"):
        path = template_src / name
        if path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            return {
                k: (v if isinstance(v, dict) else {"default": v})
                for k, v in data.items()
                if not k.startswith("_")
            }
    raise FileNotFoundError(f"no copier.yml in {template_src}")


def choice_values(question: Mapping[str, Any]) -> list[Any]:
    choices = question.get("choices", [])
    if isinstance(choices, dict):  # {label: value} or {label: {value: ..., validator: ...}}
        return [v["value"] if isinstance(v, dict) else v for v in choices.values()]
    return [c[1] if isinstance(c, list | tuple) else c for c in choices]


@dataclass(frozen=True)
class Variant:
    """One set of answers. ``answers`` are passed as data; copier's defaults fill the rest."""

    id: str
    answers: Mapping[str, Any]
    python: str | None  # the python_version answer, where known before rendering
    embedded: bool = False  # its suite also runs on the self-provisioned PostgreSQL 18

    @property
    def api(self) -> str | None:
        return self.answers.get("api")


def build_matrix(questions: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    """The full product of MATRIX_AXES, plus the bare skeleton (examples=false).

    python_version is not an axis of the product: it follows the parity of the other four
    answers (a half fraction of a 2^5 design), so each python version meets every value, and
    every pair of values, of the other axes.
    """
    pythons = sorted(
        (str(v) for v in choice_values(questions["python_version"])),
        key=lambda v: tuple(int(p) for p in v.split(".")),
    )
    variants: list[Variant] = []
    families: set[Any] = set()
    for combo in itertools.product(*(enumerate(vals) for vals in MATRIX_AXES.values())):
        parity = sum(index for index, _ in combo)
        answers: dict[str, Any] = {
            name: value for name, (_, value) in zip(MATRIX_AXES, combo, strict=True)
        }
        answers["python_version"] = pythons[parity % len(pythons)]
        vid = "-".join(
            [
                str(answers["primary_key"]),
                "soft" if answers["soft_delete"] else "hard",
                str(answers["repository_style"]),
                str(answers["api"]),
                "py" + answers["python_version"].replace(".", ""),
            ]
        )
        embedded = answers["api"] not in families
        families.add(answers["api"])
        variants.append(Variant(vid, answers, answers["python_version"], embedded))
    # The bare skeleton (examples=false) with each api, both PostgreSQL paths.
    for api, python in zip(choice_values(questions["api"]), reversed(pythons), strict=False):
        variants.append(
            Variant(
                f"bare-{api}-py" + python.replace(".", ""),
                {"examples": False, "api": api, "python_version": python},
                python,
                embedded=True,
            )
        )
    return variants


def defaults_variant(questions: Mapping[str, Mapping[str, Any]]) -> Variant:
    """The variant a user gets from `copier copy --defaults`: no data at all."""
    default = questions.get("python_version", {}).get("default")
    return Variant(
        "defaults", {}, str(default) if default is not None and "{" not in str(default) else None
    )


def select_variants(spec: str, questions: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    """``all`` (the matrix), ``default`` (copier's defaults only) or comma-separated ids."""
    matrix = build_matrix(questions)
    if spec in ("", "all"):
        return matrix
    chosen: list[Variant] = []
    by_id = {v.id: v for v in matrix}
    for part in (p.strip() for p in spec.split(",")):
        if part in ("default", "defaults"):
            chosen.append(defaults_variant(questions))
        elif part in by_id:
            chosen.append(by_id[part])
        else:
            raise ValueError(f"unknown variant {part!r}; known: default, {', '.join(by_id)}")
    return chosen


# --------------------------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    status: str  # passed | failed | skipped
    seconds: float = 0.0
    message: str = ""
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclass
class Outcome:
    """Everything one variant's job produced."""

    id: str
    steps: dict[str, StepResult] = field(default_factory=dict)
    project: Path | None = None
    python: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps.values())

    @property
    def test_counts(self) -> dict[str, int]:
        for step in self.steps.values():
            if "counts" in step.extra:
                return dict(step.extra["counts"])
        return {}


class Cancelled(Exception):
    pass


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Wait for a process asked to stop; kill its process group if it does not."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class ProcessPool:
    """Keeps track of running child processes so that they can be stopped on cancel."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self.cancelled = threading.Event()

    def run(
        self,
        cmd: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        timeout: float,
    ) -> tuple[int | None, float, str]:
        """Run cmd, output to ``log``; returns (exit code or None on timeout, seconds, output)."""
        if self.cancelled.is_set():
            raise Cancelled
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with log.open("wb") as out:
            out.write(f"$ (cd {cwd} && {shlex.join(cmd)})\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._lock:
                self._procs.add(proc)
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                rc = None
            finally:
                with self._lock:
                    self._procs.discard(proc)
        seconds = time.monotonic() - start
        text = log.read_text(encoding="utf-8", errors="replace")
        if rc is None:
            text += f"\n[harness] timed out after {timeout:.0f}s and was killed\n"
        if self.cancelled.is_set():
            raise Cancelled
        return rc, seconds, text

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        wait_or_kill(proc)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            self._kill(proc)


# `python -c EXECUTE_SQL <url> <statement>`: one statement with the project's own asyncpg
# (for CREATE/DROP DATABASE from inside a rendered project's environment).
EXECUTE_SQL = (
    "import asyncio, sys, asyncpg\n"
    "async def main():\n"
    "    connection = await asyncpg.connect(sys.argv[1])\n"
    "    await connection.execute(sys.argv[2])\n"
    "    await connection.close()\n"
    "asyncio.run(main())\n"
)


def database_problem(url: str) -> str | None:
    """Why the PostgreSQL server at `url` cannot be used, or None (sockets are not probed)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.hostname.startswith("/"):
        return None
    try:
        with socket.create_connection((parts.hostname, parts.port or 5432), timeout=5):
            return None
    except OSError as exc:
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432} is not reachable: {exc}"


def report(outcome: Outcome, step: str, label: str) -> None:
    """Turn one step of a background job into this pytest item's result."""
    if "harness" in outcome.steps:
        pytest.fail(f"{label}harness error:\n{outcome.steps['harness'].message}")
    result = outcome.steps.get(step)
    if result is None:
        pytest.fail(f"{label}{step}: did not run ({'; '.join(outcome.notes)})")
    if result.status == "skipped":
        pytest.skip(f"{label}{step}: {result.message}")
    if result.status == "failed":
        where = f"\nlog: {result.log}" if result.log else ""
        pytest.fail(f"{label}{step}: {result.message}{where}", pytrace=False)


def tail(text: str, lines: int = 60) -> str:
    rows = text.rstrip("\n").splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    return "\n".join([f"[... {len(rows) - lines} lines above ...]", *rows[-lines:]])


_COUNT_RE = re.compile(
    r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)"
)
_SUMMARY_LINE_RE = re.compile(r"\bin \d+(?:\.\d+)?s\b")


def parse_pytest_summary(output: str) -> dict[str, int]:
    """Counts from pytest's closing line ("=== 40 passed, 2 skipped in 3.1s ===")."""
    for line in reversed(output.splitlines()):
        if _SUMMARY_LINE_RE.search(line) and (_COUNT_RE.search(line) or "no tests ran" in line):
            counts: dict[str, int] = {}
            for number, word in _COUNT_RE.findall(line):
                key = {"error": "errors", "warning": "warnings"}.get(word, word)
                counts[key] = counts.get(key, 0) + int(number)
            return counts
    return {}


def format_counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return "-"
    order = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "deselected")
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


# --------------------------------------------------------------------------------------------
# Hygiene of rendered text
# --------------------------------------------------------------------------------------------

_JINJA_RE = re.compile(r"(?<!\$)\{\{|\{%|\{#")


def iter_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _blank_after_opener(source: str) -> list[int]:
    """Line numbers (1-based) of blank lines right after a def/class header.

    Token-based rather than ast-based, so that the harness (Python 3.11) can judge sources
    written for a newer Python (PEP 695 generics and the like).
    """
    lines = source.splitlines()
    found: list[int] = []
    opener = False  # inside the logical line of a def/class header
    at_line_start = True
    last = None  # last significant token of the current logical line
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                continue
            if tok.type == tokenize.NEWLINE:
                row = tok.start[0]  # 1-based row where the logical line ends
                header = opener and last is not None and last.string == ":"
                if header and row < len(lines) and not lines[row].strip():
                    found.append(row + 1)
                opener, at_line_start, last = False, True, None
                continue
            if at_line_start:
                opener = tok.type == tokenize.NAME and tok.string in ("def", "class", "async")
                at_line_start = False
            elif opener and last is not None and last.string == "async":
                opener = tok.string == "def"
            last = tok
    except (tokenize.TokenError, SyntaxError):
        return found  # ruff reports syntax errors
    return found


def check_text_file(path: Path, rel: str, text: str) -> list[str]:
    problems: list[str] = []
    if text == "":
        if path.name not in _EMPTY_OK:
            problems.append(f"{rel}: empty file (a conditional file rendered empty?)")
        return problems
    if not text.strip():
        problems.append(f"{rel}: file holds only whitespace")
        return problems
    if "\r" in text:
        problems.append(f"{rel}: carriage return (CRLF line endings?)")
    lines = text.split("\n")
    blank_run = 0
    for number, line in enumerate(lines, start=1):
        match = _JINJA_RE.search(line)
        if match:
            problems.append(f"{rel}:{number}: Jinja leftover {match.group()!r}: {line.strip()}")
        if line != line.rstrip(" \t"):
            problems.append(f"{rel}:{number}: trailing whitespace")
        if line.strip():
            blank_run = 0
        else:
            blank_run += 1
            if blank_run == 3 and number < len(lines):
                problems.append(f"{rel}:{number - 2}: 3 or more consecutive blank lines")
    if not text.endswith("\n"):
        problems.append(f"{rel}: no newline at end of file")
    elif text.endswith("\n\n"):
        problems.append(f"{rel}: blank line(s) at end of file")
    suffix = path.suffix
    try:
        if suffix in (".py", ".pyi"):
            for number in _blank_after_opener(text):
                problems.append(f"{rel}:{number}: blank line right after a def/class line")
        elif suffix == ".toml":
            tomllib.loads(text)
        elif suffix in (".yml", ".yaml"):
            list(yaml.safe_load_all(text))
        elif suffix == ".json":
            json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError) as exc:
        problems.append(f"{rel}: does not parse as {suffix or path.name}: {exc}")
    return problems


def check_tree(root: Path) -> list[str]:
    """Hygiene problems in a freshly rendered project, as 'path:line: what' strings."""
    problems: list[str] = []
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            if _JINJA_RE.search(name):
                rel = (Path(dirpath) / name).relative_to(root)
                problems.append(f"{rel}/: Jinja leftover in a directory name")
    for path in iter_files(root):
        rel = str(path.relative_to(root))
        if _JINJA_RE.search(path.name):
            problems.append(f"{rel}: Jinja leftover in a file name")
        if path.name.endswith(".jinja"):
            problems.append(f"{rel}: template suffix left in a file name")
        if path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{rel}: not UTF-8")
            continue
        problems.extend(check_text_file(path, rel, text))
    return problems


_FASTAPI_RE = re.compile(r"^\s*(?:from|import)\s+fastapi\b|\"fastapi\b", re.MULTILINE)


def check_no_http_layer(root: Path) -> list[str]:
    """With api=none, no module imports FastAPI and pyproject.toml does not depend on it."""
    files = [*root.rglob("*.py"), root / "pyproject.toml"]
    return [
        f"{path.relative_to(root)}: mentions fastapi although api=none"
        for path in files
        if ".venv" not in path.parts and _FASTAPI_RE.search(path.read_text())
    ]


# --------------------------------------------------------------------------------------------
# README commands
# --------------------------------------------------------------------------------------------

_FENCE_RE = re.compile(
    r"^[ \t]*```[ \t]*(?:bash|sh|shell|console|shell-session)[ \t]*\n(.*?)^[ \t]*```",
    re.MULTILINE | re.DOTALL,
)


def readme_blocks(markdown: str) -> list[list[str]]:
    """The commands of each ```bash block of a README (comments and prompts stripped,
    continuation lines joined), one list per block."""
    blocks: list[list[str]] = []
    for block in _FENCE_RE.findall(markdown):
        commands: list[str] = []
        pending = ""
        for raw in block.splitlines():
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:].strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            commands.append((pending + line).strip())
            pending = ""
        if pending.strip():
            commands.append(pending.strip())
        blocks.append(commands)
    return blocks


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def copier_cli(
    template_src: Path, dst: Path, ref: str | None, data_file: Path | None = None
) -> list[str]:
    cmd = [sys.executable, "-m", "copier", "copy", "--defaults"]
    if ref:
        cmd += ["--vcs-ref", ref]
    if data_file is not None:
        cmd += ["--data-file", str(data_file)]
    return [*cmd, str(template_src), str(dst)]


class RenderServer:
    """A long-lived ``render_server.py`` process: copier is imported once, not per render."""

    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        self._env = dict(env)
        self._cwd = cwd
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("render_server.py"))],
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        return self._proc

    def render(
        self,
        template_src: Path,
        dst: Path,
        data: Mapping[str, Any],
        ref: str | None,
        log: Path,
    ) -> tuple[bool, float, str]:
        """Render; returns (ok, seconds, log text)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(
            f"copier.run_copy({str(template_src)!r}, {str(dst)!r}, data={dict(data)!r}, "
            f"defaults=True, unsafe=False, vcs_ref={ref!r})\n",
            encoding="utf-8",
        )
        request = {
            "src": str(template_src),
            "dst": str(dst),
            "data": dict(data),
            "ref": ref,
            "log": str(log),
            "cwd": str(self._cwd),
        }
        with self._lock:
            start = time.monotonic()
            proc = self._ensure()
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                line = json.dumps({"ok": False, "error": f"render server: {exc}"})
            seconds = time.monotonic() - start
        response = json.loads(line) if line else {"ok": False, "error": "render server died"}
        text = log.read_text(encoding="utf-8", errors="replace")
        if not response["ok"]:
            text += f"\n{response['error']}\n"
        return bool(response["ok"]), seconds, text

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        wait_or_kill(proc)
        if proc.stdout:
            proc.stdout.close()


def read_answers(project: Path) -> dict[str, Any]:
    path = project / ".copier-answers.yml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def mypy_cache_dir(project: Path) -> Path:
    try:
        config = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        config = {}
    cache = config.get("tool", {}).get("mypy", {}).get("cache_dir", ".mypy_cache")
    return project / cache


# --------------------------------------------------------------------------------------------
# The scheduler
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    template_src: Path
    template_ref: str | None
    renders_dir: Path
    database_url: str
    workers: int
    mypy_seed: bool
    env: dict[str, str]
    mypy_seed_keep: Path | None = None
    shared_envs: bool = True
    timeouts: dict[str, float] = field(
        default_factory=lambda: {
            "render": 180,
            "sync": 900,
            "format": 120,
            "lint": 120,
            "mypy": 900,
            "pytest": 900,
        }
    )


class MypySeeds:
    """Warm mypy caches, one per Python version, that each variant starts from.

    A seed is a directory holding a copy of a project's mypy cache. It is written once (to a
    temporary name, then renamed) and never changed: a variant copies it into its own project
    before running mypy, so no cache is ever written by two processes. Per Python version one
    variant is the *producer*: it starts from the seed kept by the previous run, if any (else
    cold), and publishes its cache as this run's seed; the others wait for it. With ``keep``
    set, the seed is also kept there for the next run (third-party packages rarely change, the
    project's own modules are re-checked whenever their source differs).
    """

    def __init__(self, root: Path, enabled: bool, keep: Path | None) -> None:
        self.root = root
        self.enabled = enabled
        self.keep = keep if enabled else None
        self._lock = threading.Lock()
        self._published: dict[str, Path] = {}
        self._producers: dict[str, str] = {}  # python -> job id that publishes
        self._events: dict[str, threading.Event] = {}
        self.origin: dict[str, str] = {}  # python -> where this run's first seed came from

    def plan(self, jobs: Sequence[VariantJob]) -> None:
        """Pick one producer per Python version, preferring a FastAPI variant (most deps)."""
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        by_python: dict[str, list[VariantJob]] = {}
        for job in jobs:
            if job.variant.python is not None:
                by_python.setdefault(job.variant.python, []).append(job)
        for python, candidates in by_python.items():
            fastapi = [j for j in candidates if j.variant.api == "fastapi"]
            self._producers[python] = (fastapi or candidates)[0].id
            self._events[python] = threading.Event()
            kept = self.keep / python if self.keep else None
            if kept is not None and kept.is_dir():  # snapshot: another run may replace it
                with contextlib.suppress(OSError, shutil.Error):
                    snapshot = self.root / f"{python}-kept"
                    shutil.copytree(kept, snapshot, symlinks=True)
                    self._published[python] = snapshot
                    self.origin[python] = f"kept from an earlier run ({kept})"
                    self._events[python].set()  # nobody needs to wait for the producer

    def is_producer(self, job_id: str) -> bool:
        return job_id in self._producers.values()

    def ready(self, python: str | None) -> bool:
        if not self.enabled or python is None or python not in self._events:
            return True
        return self._events[python].is_set()

    def prime(self, python: str, cache: Path, job_id: str, timeout: float = 900) -> str:
        """Copy the latest seed into ``cache`` (waiting for the producer, unless this job is
        the producer). Returns how mypy starts: 'seeded', 'kept' or 'cold'."""
        if not self.enabled:
            return "cold"
        event = self._events.get(python)
        if event is not None and self._producers.get(python) != job_id:
            event.wait(timeout)
        with self._lock:
            seed = self._published.get(python)
        if seed is None:
            return "cold"
        if cache.exists():
            shutil.rmtree(cache)
        shutil.copytree(seed, cache, symlinks=True)
        return "kept" if seed.name.endswith("-kept") else "seeded"

    def publish(self, python: str, cache: Path, job_id: str) -> None:
        """The producer publishes its cache; so does any job while there is no seed at all."""
        if not self.enabled or not cache.is_dir():
            return
        with self._lock:
            if self._producers.get(python) != job_id and python in self._published:
                return
        tmp = self.root / f".{python}.{uuid.uuid4().hex}"
        shutil.copytree(cache, tmp, symlinks=True)
        with self._lock:
            final = self.root / f"{python}-{uuid.uuid4().hex[:8]}"
            tmp.rename(final)
            self._published[python] = final
        if self.keep is not None:
            self._keep(python, final)

    def _keep(self, python: str, seed: Path) -> None:
        assert self.keep is not None
        with contextlib.suppress(OSError, shutil.Error):
            self.keep.mkdir(parents=True, exist_ok=True)
            tmp = self.keep / f".{python}.{uuid.uuid4().hex}"
            old = self.keep / f".{python}.old.{uuid.uuid4().hex}"
            shutil.copytree(seed, tmp, symlinks=True)
            target = self.keep / python
            if target.exists():
                target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)

    def release(self, python: str | None) -> None:
        """Called when a job is done with mypy (published or not): wake those waiting."""
        if python is not None and python in self._events:
            self._events[python].set()


class Job:
    id: str
    python: str | None = None

    def run(self, runner: Runner, slot: int) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError


class VariantJob(Job):
    def __init__(self, variant: Variant) -> None:
        self.variant = variant
        self.id = variant.id
        self.python = variant.python

    def run(self, runner: Runner, slot: int) -> Outcome:
        s = runner.settings
        outcome = Outcome(self.id, python=self.python)
        work = s.renders_dir / self.id
        if work.exists():
            shutil.rmtree(work)
        logs = work / "logs"
        project = work / "project"
        outcome.project = project
        logs.mkdir(parents=True)
        steps = outcome.steps
        env = dict(s.env)
        mypy_released = False

        def blocked(step: str) -> str | None:
            for dep in BLOCKED_BY.get(step, ()):
                if dep in steps and not steps[dep].ok:
                    return f"not run: step {dep!r} did not pass"
            return None

        def command(
            step: str, cmd: Sequence[str], extra_env: Mapping[str, str] | None = None
        ) -> StepResult:
            reason = blocked(step)
            if reason:
                steps[step] = StepResult(step, "skipped", message=reason)
                return steps[step]
            log = logs / f"{step}.log"
            rc, seconds, text = runner.procs.run(
                cmd,
                cwd=project,
                env={**env, **(extra_env or {})},
                log=log,
                timeout=s.timeouts.get(step, 600),
            )
            status = "passed" if rc == 0 else "failed"
            message = "" if rc == 0 else f"`{shlex.join(cmd)}` exited {rc}:\n{tail(text)}"
            steps[step] = StepResult(step, status, seconds, message, log)
            return steps[step]

        try:
            # render ---------------------------------------------------------------------
            if runner.procs.cancelled.is_set():
                raise Cancelled
            ok, seconds, text = runner.renderer.render(
                s.template_src, project, self.variant.answers, s.template_ref, logs / "render.log"
            )
            result = steps["render"] = StepResult(
                "render",
                "passed" if ok else "failed",
                seconds,
                "" if ok else f"copier could not render the variant:\n{tail(text)}",
                logs / "render.log",
            )
            if result.ok:
                answers = read_answers(project)
                wrong = {
                    k: (v, answers.get(k))
                    for k, v in self.variant.answers.items()
                    if answers.get(k) != v
                }
                if wrong:
                    result.status = "failed"
                    result.message = "answers not recorded as given (given, recorded): " + repr(
                        wrong
                    )
                python = answers.get("python_version")
                outcome.python = self.python = str(python) if python else self.python
                result.extra["answers"] = answers

            # hygiene --------------------------------------------------------------------
            if reason := blocked("hygiene"):
                steps["hygiene"] = StepResult("hygiene", "skipped", message=reason)
            else:
                start = time.monotonic()
                problems = check_tree(project)
                if self.variant.api == "none":
                    problems.extend(check_no_http_layer(project))
                python_file = project / ".python-version"
                if not python_file.is_file():
                    problems.append(".python-version: missing")
                elif python_file.read_text().strip() != outcome.python:
                    problems.append(
                        f".python-version: names {python_file.read_text().strip()!r}, "
                        f"the answer was {outcome.python!r}"
                    )
                (logs / "hygiene.log").write_text("\n".join(problems) + "\n")
                steps["hygiene"] = StepResult(
                    "hygiene",
                    "failed" if problems else "passed",
                    time.monotonic() - start,
                    f"{len(problems)} hygiene problem(s):\n" + "\n".join(problems[:80])
                    if problems
                    else "",
                    logs / "hygiene.log",
                )

            # install --------------------------------------------------------------------
            venv = project / ".venv"
            if s.shared_envs and outcome.python:
                # One environment per worker and Python version, re-synced (exactly) for each
                # variant: installs are incremental and byte-code compiled once, not per variant.
                venv = s.renders_dir / "_envs" / f"worker{slot}-py{outcome.python}"
                env["UV_PROJECT_ENVIRONMENT"] = str(venv)
            result = command("sync", [runner.uv, "sync"])
            if result.ok:
                cfg = venv / "pyvenv.cfg"
                version = ""
                if cfg.is_file():
                    match = re.search(r"^version(?:_info)?\s*=\s*(\S+)", cfg.read_text(), re.M)
                    version = match.group(1) if match else ""
                result.extra["python"] = version
                if outcome.python and not version.startswith(outcome.python + "."):
                    result.status = "failed"
                    result.message = (
                        f".venv runs Python {version or '?'}, "
                        f"the python_version answer was {outcome.python}"
                    )

            # checks ---------------------------------------------------------------------
            command("format", [runner.uv, "run", "ruff", "format", "--check", "."])
            command("lint", [runner.uv, "run", "ruff", "check", "."])

            how = "cold"
            if outcome.python and not blocked("mypy"):
                how = runner.seeds.prime(outcome.python, mypy_cache_dir(project), self.id)
            result = command("mypy", [runner.uv, "run", "mypy"])
            result.extra["cache"] = how
            if outcome.python and result.status != "skipped":
                runner.seeds.publish(outcome.python, mypy_cache_dir(project), self.id)
            runner.seeds.release(outcome.python)
            mypy_released = True

            result = command(
                "pytest",
                [runner.uv, "run", "pytest"],
                # A shorter schemathesis run per variant; the new-user walk-through keeps the
                # default.
                {"TEST_DATABASE_URL": s.database_url, "FUZZ_EXAMPLES": "10"},
            )
            if result.status != "skipped":
                text = result.log.read_text(errors="replace") if result.log else ""
                counts = parse_pytest_summary(text)
                result.extra["counts"] = counts
                if result.ok and not counts.get("passed"):
                    result.status = "failed"
                    result.message = f"pytest passed no test:\n{tail(text)}"

            if self.variant.embedded:  # no TEST_DATABASE_URL: the suite starts PostgreSQL 18
                result = command("embedded", [runner.uv, "run", "pytest"], {"FUZZ_EXAMPLES": "10"})
                if result.ok and not parse_pytest_summary(result.log.read_text()).get("passed"):
                    result.status, result.message = "failed", "pytest passed no test"
            else:
                steps["embedded"] = StepResult(
                    "embedded", "skipped", message="one variant per family runs it"
                )
        finally:
            if not mypy_released:
                runner.seeds.release(self.python)
        for step in VARIANT_STEPS:
            steps.setdefault(step, StepResult(step, "skipped", message="not reached"))
        return outcome


class Runner:
    """Runs jobs on ``settings.workers`` threads; ``outcome(id)`` waits for one of them."""

    def __init__(self, settings: Settings, jobs: Sequence[Job]) -> None:
        self.settings = settings
        self.uv = find_uv()
        self.procs = ProcessPool()
        self.renderer = RenderServer(settings.env, settings.renders_dir)
        self.seeds = MypySeeds(
            settings.renders_dir / "_mypy_seeds", settings.mypy_seed, settings.mypy_seed_keep
        )
        variant_jobs = [j for j in jobs if isinstance(j, VariantJob)]
        self.seeds.plan(variant_jobs)

        # Longest first: the mypy seed producers, the FastAPI variants (most tests), then the
        # rest in given order.
        def rank(job: Job) -> int:
            if self.seeds.is_producer(job.id):
                return 0
            return 2 if isinstance(job, VariantJob) and job.variant.api == "fastapi" else 3

        self._pending: list[Job] = sorted(jobs, key=rank)
        self.order = [job.id for job in self._pending]
        self._all = {j.id: j for j in jobs}
        self._outcomes: dict[str, Outcome] = {}
        self._done: dict[str, threading.Event] = {j.id: threading.Event() for j in jobs}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        for n in range(max(1, min(self.settings.workers, len(self._pending)))):
            thread = threading.Thread(target=self._work, args=(n,), name=f"matrix-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _next(self) -> Job | None:
        with self._lock:
            if not self._pending:
                return None
            for job in self._pending:  # prefer a job whose mypy seed is ready
                if self.seeds.is_producer(job.id) or self.seeds.ready(job.python):
                    break
            else:
                job = self._pending[0]
            self._pending.remove(job)
            return job

    def _work(self, slot: int) -> None:
        while (job := self._next()) is not None:
            start = time.monotonic()
            try:
                if self.procs.cancelled.is_set():
                    raise Cancelled
                outcome = job.run(self, slot)
            except Cancelled:
                outcome = Outcome(job.id, notes=["cancelled"])
            except Exception:
                outcome = Outcome(job.id)
                outcome.steps["harness"] = StepResult(
                    "harness", "failed", message=traceback.format_exc()
                )
            outcome.seconds = time.monotonic() - start
            with self._lock:
                self._outcomes[job.id] = outcome
                if len(self._outcomes) == len(self._all):
                    self.finished_at = time.monotonic()
            self._done[job.id].set()

    def outcome(self, job_id: str) -> Outcome:
        event = self._done[job_id]
        while not event.wait(1.0):
            pass
        return self._outcomes[job_id]

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return [self._outcomes[j] for j in self._all if j in self._outcomes]

    def close(self) -> None:
        if any(t.is_alive() for t in self._threads):
            self.procs.cancel()
            self.renderer.kill()
            with self._lock:
                self._pending.clear()
        for thread in self._threads:
            thread.join(timeout=30)
        self.renderer.close()


# --------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------


def summary_table(outcomes: Sequence[Outcome]) -> list[str]:
    def cell(outcome: Outcome, step: str) -> str:
        result = outcome.steps.get(step)
        if result is None:
            return ""
        mark = {"passed": "ok", "failed": "FAIL", "skipped": "-"}[result.status]
        if result.status == "skipped" or result.seconds < 0.05:
            return mark
        extra = {"cold": "*", "kept": "+"}.get(result.extra.get("cache", ""), "")
        return f"{mark} {result.seconds:.0f}s{extra}"

    header = ["job", "py", *VARIANT_STEPS, "tests", "total"]
    rows = [header]
    for outcome in outcomes:
        if "harness" in outcome.steps:
            cells = ["HARNESS ERROR", *[""] * (len(VARIANT_STEPS) - 1)]
        else:
            cells = [cell(outcome, step) for step in VARIANT_STEPS]
        rows.append(
            [
                outcome.id,
                outcome.python or "",
                *cells,
                format_counts(outcome.test_counts),
                f"{outcome.seconds:.0f}s",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
