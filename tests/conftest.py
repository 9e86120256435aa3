"""Options and fixtures of the template's tests.

Runs under pytest-xdist (``-n auto --dist loadgroup``, see pyproject.toml): every test that
takes a ``variant`` is in that variant's xdist group, so one worker renders the variant once
and runs its checks in order, and the slow groups are scheduled first.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import support

RUNS_ROOT = Path("/tmp/copier-template-tests")  # readable by the embedded PostgreSQL's user
RUN_DIR_VAR = "TEMPLATE_TESTS_RUN_DIR"
VARIANTS = pytest.StashKey[list[support.Variant]]()
# Scheduled first, in this order (the longest groups), so that no long test starts last.
SLOW_FIRST = ("new-user", "update-defaults", "production", "update-dual_id", "variant-")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("template", "Copier template tests")
    group.addoption(
        "--variants",
        default=os.environ.get("TEMPLATE_VARIANTS", "all"),
        help="'all' (the matrix, default), 'default' (copier's defaults only) or "
        "comma-separated variant ids. Env TEMPLATE_VARIANTS",
    )
    group.addoption(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL") or support.DEFAULT_TEST_DATABASE_URL,
        help="the PostgreSQL server the rendered suites create their databases on (default: "
        f"env TEST_DATABASE_URL, else {support.DEFAULT_TEST_DATABASE_URL})",
    )


def pytest_configure(config: pytest.Config) -> None:
    questions = support.load_questions(support.REPO_ROOT)
    try:
        config.stash[VARIANTS] = support.select_variants(config.getoption("--variants"), questions)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    for var, value in support.GIT_IDENTITY.items():
        os.environ.setdefault(var, value)  # copier commits a dirty template in its clone
    if RUN_DIR_VAR not in os.environ:  # the controller; xdist's workers inherit it
        RUNS_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        for old in sorted(RUNS_ROOT.glob("run-*"))[:-2]:  # keep the last runs for inspection
            shutil.rmtree(old, ignore_errors=True)
        run = RUNS_ROOT / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        run.mkdir(mode=0o755)
        os.environ[RUN_DIR_VAR] = str(run)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" in metafunc.fixturenames:
        variants = metafunc.config.stash[VARIANTS]
        if metafunc.definition.get_closest_marker("embedded"):
            variants = [v for v in variants if v.embedded]
        params = [
            pytest.param(v, id=v.id, marks=pytest.mark.xdist_group(f"variant-{v.id}"))
            for v in variants
        ]
        metafunc.parametrize("variant", params, scope="session")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than there are cores. A rendered suite waits on
    PostgreSQL, servers and subprocesses much of the time, so a third worker on 2 cores keeps
    them busy (measured: 675 s for the whole run with 2 workers)."""
    return (os.cpu_count() or 1) + 1


@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by variant
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest groups first; within a group, the tests in the order of their files."""

    def group(item: pytest.Item) -> str:
        marker = item.get_closest_marker("xdist_group")
        return str(marker.args[0]) if marker and marker.args else item.nodeid

    first: dict[str, int] = {}
    for n, item in enumerate(items):
        first.setdefault(group(item), n)

    def key(item: pytest.Item) -> tuple[int, int, str, int]:
        name = group(item)
        slow = [n for n, prefix in enumerate(SLOW_FIRST) if name.startswith(prefix)]
        return (slow[0] if slow else len(SLOW_FIRST), first[name], *item.location[:2])

    items.sort(key=key)  # stable: parametrized cases of one test keep their order


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> support.Settings:
    return support.Settings(
        template_src=support.REPO_ROOT,
        template_ref="HEAD",  # HEAD with the working tree's uncommitted changes
        database_url=pytestconfig.getoption("--database-url"),
        env=support.base_env(),
        renders_dir=Path(os.environ[RUN_DIR_VAR]) / os.environ.get("PYTEST_XDIST_WORKER", "gw"),
    )


@pytest.fixture(scope="session")
def database_url(settings: support.Settings) -> str:
    """The test server's URL, once it is known to be reachable."""
    if problem := support.database_problem(settings.database_url):
        pytest.fail(problem, pytrace=False)
    return settings.database_url


@pytest.fixture(scope="session")
def worker_dir(settings: support.Settings) -> Iterator[Path]:
    """Where this worker keeps its environments and mypy caches, between runs too (as long as
    /tmp lasts): a later run re-syncs them exactly and re-checks only what changed. A second
    run at the same time gets fresh ones."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    kept = RUNS_ROOT / "workers" / worker
    kept.mkdir(parents=True, exist_ok=True)
    with (kept / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            kept = settings.renders_dir / "worker"
        yield kept


@pytest.fixture
def render(settings: support.Settings, tmp_path: Path) -> Callable[..., Path]:
    """``render(name, **answers)`` renders the template in-process under the test's
    ``tmp_path`` (copier's defaults fill the other answers) and returns the project."""

    def render(name: str = "project", **data: Any) -> Path:
        return support.render(settings, tmp_path / name, **data)

    return render


@pytest.fixture(scope="session")
def rendered(variant: support.Variant, settings: support.Settings) -> Path:
    """The variant, rendered once (in a directory every user can read: the embedded
    PostgreSQL runs as another user when the tests run as root)."""
    dst = settings.renders_dir / variant.id
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    return support.render(settings, dst, **variant.answers)


@dataclass(frozen=True)
class Synced:
    path: Path
    python: str  # the python_version answer
    env: dict[str, str]  # the project's commands run with this environment


@pytest.fixture(scope="session")
def synced(rendered: Path, settings: support.Settings, worker_dir: Path) -> Synced:
    """The rendered variant after ``uv sync``, into this worker's environment for its Python,
    synced exactly: installs are incremental and byte code is compiled once per worker."""
    python = str(support.read_answers(rendered)["python_version"])
    venv = worker_dir / f"env-py{python}"
    env = {**settings.env, "UV_PROJECT_ENVIRONMENT": str(venv)}
    support.run(["uv", "sync"], rendered, env)
    return Synced(rendered, python, env)
