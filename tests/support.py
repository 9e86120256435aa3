"""What the template's tests share: the variant matrix, the environment a rendered project's
commands run in, running them, and small helpers for git, PostgreSQL and README commands."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import copier
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
# Variables that would make a rendered project's tools look somewhere else than the project
# (and every PYTEST_*: ours, xdist's worker ids, are not the rendered suite's).
_DROPPED_ENV = {
    *("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"),
    *("MYPYPATH", "MYPY_CACHE_DIR", "PYTHONDONTWRITEBYTECODE", "FORCE_COLOR"),
    *("UV_PROJECT", "UV_PROJECT_ENVIRONMENT", "UV_PYTHON", "UV_SYSTEM_PYTHON", "UV_NO_DEV"),
    *("UV_NO_DEFAULT_GROUPS", "UV_FROZEN", "UV_LOCKED", "UV_NO_SYNC", "UV_ISOLATED"),
    *("NOX_CURRENT_SESSION", "DATABASE_URL", "TEST_DATABASE_URL"),
}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "template tests",
    "GIT_AUTHOR_EMAIL": "template-tests@localhost",
    "GIT_COMMITTER_NAME": "template tests",
    "GIT_COMMITTER_EMAIL": "template-tests@localhost",
}


@dataclass(frozen=True)
class Settings:
    template_src: Path
    template_ref: str | None  # None: copier picks (the latest tag)
    database_url: str  # TEST_DATABASE_URL of the rendered suites
    env: dict[str, str]  # the environment of a rendered project's commands
    renders_dir: Path  # this run's scratch directory, readable by every user


# --- environment ------------------------------------------------------------------------------


def pyenv_version() -> str | None:
    """A PYENV_VERSION under which pyenv's shims expose every installed CPython (exported and
    global first, so ``python3`` stays; then every ``X.Y.Z``, newest first, for uv)."""
    order = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    if shutil.which("pyenv"):
        with contextlib.suppress(OSError, AssertionError):  # pyenv failed: keep what we have
            ask = ["pyenv", "global"], ["pyenv", "versions", "--bare", "--skip-aliases"]
            glob, bare = (run(cmd, Path("/"), os.environ).stdout.split() for cmd in ask)
            cpythons = [v for v in bare if re.fullmatch(r"\d+\.\d+\.\d+", v)]
            cpythons.sort(key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)
            order += [*(v for v in glob if v != "system"), *cpythons]
    return ":".join(dict.fromkeys(order)) or None


def find_uv() -> str:
    """The real uv binary (a pyenv shim breaks inside a project's .python-version)."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]

        return str(find_uv_bin())
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError("uv is not installed: `pip install uv`")
    return found


def base_env() -> dict[str, str]:
    """The environment of a rendered project's commands (no database URL in it)."""
    env = {
        k: v for k, v in os.environ.items() if k not in _DROPPED_ENV and not k.startswith("PYTEST_")
    }
    if pyenv := pyenv_version():
        env["PYENV_VERSION"] = pyenv
    env["PATH"] = os.pathsep.join([str(Path(find_uv()).parent), env.get("PATH", "")])
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.setdefault("UV_LINK_MODE", "hardlink")
    env.update(UV_NO_PROGRESS="1", NO_COLOR="1", PY_COLORS="0")
    return {**GIT_IDENTITY, **env}  # copier commits a dirty template in its clone


# --- questions and variants -------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One set of answers, given as data; copier's defaults fill the rest."""

    id: str
    answers: Mapping[str, Any]
    embedded: bool = False  # its suite also runs on the PostgreSQL 18 it starts itself


def load_questions(template_src: Path) -> dict[str, dict[str, Any]]:
    """The questions of copier.yml (settings starting with '_' left out)."""
    data = yaml.safe_load((template_src / "copier.yml").read_text(encoding="utf-8")) or {}
    return {
        k: (v if isinstance(v, dict) else {"default": v})
        for k, v in data.items()
        if not k.startswith("_")
    }


def choice_values(question: Mapping[str, Any]) -> list[Any]:
    choices = question.get("choices", [])
    if isinstance(choices, dict):  # {label: value} or {label: {value: ..., validator: ...}}
        return [v["value"] if isinstance(v, dict) else v for v in choices.values()]
    return list(choices)


def build_matrix(questions: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    """The full product of MATRIX_AXES, plus the bare skeleton (examples=false) with each api.

    python_version follows the parity of the other four answers (a half fraction of a 2^5
    design), so each Python meets every value, and every pair of values, of the other axes.
    The first variant of each api, and each bare one, also runs on the embedded PostgreSQL.
    """
    pythons = sorted(
        (str(v) for v in choice_values(questions["python_version"])),
        key=lambda v: tuple(int(p) for p in v.split(".")),
    )
    variants: list[Variant] = []
    for combo in itertools.product(*(enumerate(values) for values in MATRIX_AXES.values())):
        answers = {name: value for name, (_, value) in zip(MATRIX_AXES, combo, strict=True)}
        answers["python_version"] = pythons[sum(index for index, _ in combo) % len(pythons)]
        soft = "soft" if answers["soft_delete"] else "hard"
        vid = f"{answers['primary_key']}-{soft}-{answers['repository_style']}-{answers['api']}"
        first = all(v.answers["api"] != answers["api"] for v in variants)
        python = "py" + answers["python_version"].replace(".", "")
        variants.append(Variant(f"{vid}-{python}", answers, embedded=first))
    for api, python in zip(choice_values(questions["api"]), reversed(pythons), strict=False):
        answers = {"examples": False, "api": api, "python_version": python}
        variants.append(Variant(f"bare-{api}-py{python.replace('.', '')}", answers, True))
    return variants


def select_variants(spec: str, questions: Mapping[str, Mapping[str, Any]]) -> list[Variant]:
    """``all`` (the matrix), ``default`` (copier's defaults only) or comma-separated ids."""
    matrix = build_matrix(questions)
    if spec in ("", "all"):
        return matrix
    by_id = {v.id: v for v in matrix}
    chosen = []
    for part in (p.strip() for p in spec.split(",")):
        if part in ("default", "defaults"):
            chosen.append(Variant("defaults", {}))
        elif part in by_id:
            chosen.append(by_id[part])
        else:
            raise ValueError(f"unknown variant {part!r}; known: default, {', '.join(by_id)}")
    return chosen


def read_answers(project: Path) -> dict[str, Any]:
    path = project / ".copier-answers.yml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def render(settings: Settings, dst: Path, **data: Any) -> Path:
    """`copier copy --defaults` in-process: ``data`` answers, copier's defaults the rest."""
    copier.run_copy(
        str(settings.template_src),
        str(dst),
        data=data,
        defaults=True,
        unsafe=False,
        vcs_ref=settings.template_ref,
        quiet=True,
    )
    return dst


def copier_cli(settings: Settings, dst: Path, *args: str) -> list[str]:
    """`copier copy --defaults [args] SRC DST` as a user types it (no --trust)."""
    ref = ["--vcs-ref", settings.template_ref] if settings.template_ref else []
    src = str(settings.template_src)
    return [sys.executable, "-m", "copier", "copy", "--defaults", *ref, *args, src, str(dst)]


# --- commands ---------------------------------------------------------------------------------


def tail(text: str, lines: int = 60) -> str:
    rows = text.rstrip("\n").splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    return "\n".join([f"[... {len(rows) - lines} lines above ...]", *rows[-lines:]])


def run(
    cmd: Sequence[str] | str,
    cwd: Path,
    env: Mapping[str, str],
    *,
    check: bool = True,
    timeout: float = 900,
    stderr_apart: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a command (a string goes to ``bash -eo pipefail``, like a README or workflow step),
    stderr merged into stdout unless ``stderr_apart``; with ``check`` it must exit 0, else
    the test fails with the output's end."""
    argv = (
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", cmd]
        if isinstance(cmd, str)
        else list(cmd)
    )
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        output = tail(proc.stdout + (proc.stderr or ""))
        raise AssertionError(f"`{shown}` in {cwd} exited {proc.returncode}:\n{output}")
    return proc


_COUNT_RE = re.compile(
    r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)"
)


def parse_pytest_summary(output: str) -> dict[str, int]:
    """Counts from pytest's closing line ("=== 40 passed, 2 skipped in 3.1s ===")."""
    for line in reversed(output.splitlines()):
        if re.search(r"\bin \d+(?:\.\d+)?s\b", line) and (
            _COUNT_RE.search(line) or "no tests ran" in line
        ):
            counts: dict[str, int] = {}
            for number, word in _COUNT_RE.findall(line):
                key = {"error": "errors", "warning": "warnings"}.get(word, word)
                counts[key] = counts.get(key, 0) + int(number)
            return counts
    return {}


_FENCE_RE = re.compile(
    r"^[ \t]*```[ \t]*(?:bash|sh|shell|console|shell-session)[ \t]*\n(.*?)^[ \t]*```",
    re.MULTILINE | re.DOTALL,
)


def readme_blocks(markdown: str) -> list[list[str]]:
    """The commands of each ```bash block of a README (comments and prompts stripped,
    continuation lines joined), one list per block."""
    blocks = []
    for block in _FENCE_RE.findall(markdown):
        commands: list[str] = []
        pending = ""
        for raw in block.splitlines():
            line = raw.strip().removeprefix("$ ").strip()
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


# --- git --------------------------------------------------------------------------------------


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    cmd = ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args]
    return run(cmd, repo, env if env is not None else {**os.environ, **GIT_IDENTITY}).stdout


def commit_all(repo: Path, message: str, env: Mapping[str, str] | None = None) -> None:
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "--allow-empty", "-m", message, env=env)


def status(repo: Path) -> str:
    return git(repo, "status", "--porcelain", "--untracked-files=all")


def template_repository(settings: Settings, dst: Path) -> Path:
    """The template's working tree (uncommitted changes included) as a git repository with
    one commit and, like a clone of this repository, no tags."""
    listed = git(
        settings.template_src, "ls-files", "-z", "--cached", "--others", "--exclude-standard"
    )
    for rel in (f for f in listed.split("\0") if f and (settings.template_src / f).is_file()):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(settings.template_src / rel, dst / rel, follow_symlinks=False)
    git(dst, "init", "-q", env=settings.env)
    commit_all(dst, "template: the tree under test", settings.env)
    return dst


LATER_CHANGE = "A later template change."


def commit_template_change(repo: Path, env: Mapping[str, str]) -> None:
    """A later commit of the template: one line at the end of the generated README."""
    readme = repo / "template" / "README.md.jinja"
    readme.write_text(readme.read_text() + f"\n{LATER_CHANGE}\n")
    commit_all(repo, "template: a later change", env)


# --- PostgreSQL and servers -------------------------------------------------------------------


def database_problem(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be reached, or None (sockets not probed)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.hostname.startswith("/"):
        return None
    try:
        with socket.create_connection((parts.hostname, parts.port or 5432), timeout=5):
            return None
    except OSError as exc:
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432} is not reachable: {exc}"


@contextlib.contextmanager
def database(settings: Settings, prefix: str) -> Iterator[str]:
    """A new, empty database on the test server; yields its URL, drops it afterwards."""
    name = f"{prefix}_{os.urandom(6).hex()}"
    psql = ["psql", "-v", "ON_ERROR_STOP=1", settings.database_url, "-c"]
    run([*psql, f'CREATE DATABASE "{name}"'], Path.cwd(), settings.env)
    try:
        yield settings.database_url.partition("?")[0].rsplit("/", 1)[0] + f"/{name}"
    finally:
        run([*psql, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], Path.cwd(), settings.env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], url: str
) -> Iterator[subprocess.Popen[str]]:
    """A server process, once ``url`` answers (any HTTP status); stopped with SIGTERM after.
    Its output is on ``proc.stdout`` once the block is left."""
    server = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise AssertionError(f"`{shlex.join(argv)}` exited:\n{tail(server.stdout.read())}")  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"`{shlex.join(argv)}` never answered {url}") from None
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
