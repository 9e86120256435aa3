"""pytest plumbing for the template's tests: options, the shared matrix runner, the summary.

The variant matrix and the new-user walk-through are run by one ``harness.Runner`` that is
started as soon as collection is over, on ``--matrix-workers`` threads (default: one per
core). Each test item then waits for the step it reports on, so quick tests (validators, CLI)
run meanwhile. pytest-xdist is not needed and not supported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import copier
import pytest

import harness as h

DEFAULT_SEED_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "copier-template-tests"
    / "mypy-seeds"
)
SETTINGS = pytest.StashKey[h.Settings]()
VARIANTS = pytest.StashKey[list[h.Variant]]()
RUNNER = pytest.StashKey["h.Runner | None"]()
PROBLEM = pytest.StashKey["str | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("template", "Copier template tests")
    group.addoption(
        "--template-src",
        default=os.environ.get("TEMPLATE_SRC") or str(h.REPO_ROOT),
        help="template to render (default: this repository; env TEMPLATE_SRC)",
    )
    group.addoption(
        "--template-ref",
        default=os.environ.get("TEMPLATE_REF", "HEAD"),
        help="git ref to render; HEAD (default) includes uncommitted changes of a local "
        "template; an empty value lets copier pick (the latest tag). Env TEMPLATE_REF",
    )
    group.addoption(
        "--renders-dir",
        default=os.environ.get("TEMPLATE_RENDERS_DIR"),
        help="where rendered projects and their logs go (default: a new directory under "
        f"{h.RUNS_ROOT}, which keeps the last {h.KEEP_RUNS} runs). Env TEMPLATE_RENDERS_DIR",
    )
    group.addoption(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL") or h.DEFAULT_TEST_DATABASE_URL,
        help="TEST_DATABASE_URL given to each variant's test suite (default: the env var "
        f"TEST_DATABASE_URL, else {h.DEFAULT_TEST_DATABASE_URL})",
    )
    group.addoption(
        "--variants",
        default=os.environ.get("TEMPLATE_VARIANTS", "all"),
        help="'all' (the matrix), 'default' (copier's defaults only) or comma-separated "
        "variant ids. Env TEMPLATE_VARIANTS",
    )
    group.addoption(
        "--matrix-workers",
        type=int,
        default=int(os.environ.get("MATRIX_WORKERS") or os.cpu_count() or 2),
        help="variants run at once (default: one per core). Env MATRIX_WORKERS",
    )
    group.addoption(
        "--mypy-seed-dir",
        default=os.environ.get("MYPY_SEED_DIR", str(DEFAULT_SEED_DIR)),
        help="where the warm mypy cache of each Python version is kept between runs "
        f"('' = not kept). Default {DEFAULT_SEED_DIR}; env MYPY_SEED_DIR",
    )
    group.addoption(
        "--fresh-venvs",
        action="store_true",
        default=os.environ.get("FRESH_VENVS", "0") == "1",
        help="give every variant its own .venv instead of one environment per worker and "
        "Python version re-synced for each variant (slower). Env FRESH_VENVS=1",
    )
    group.addoption(
        "--no-mypy-seed",
        action="store_true",
        default=os.environ.get("MYPY_SEED", "1") == "0",
        help="type-check every variant from a cold mypy cache (slow). Env MYPY_SEED=0",
    )


def pytest_configure(config: pytest.Config) -> None:
    src = Path(config.getoption("--template-src")).resolve()
    ref = config.getoption("--template-ref") or None
    try:
        questions = h.load_questions(src)
        variants = h.select_variants(config.getoption("--variants"), questions)
    except (OSError, ValueError, KeyError) as exc:
        raise pytest.UsageError(f"cannot build the variant matrix from {src}: {exc}") from exc
    for var, value in (
        ("GIT_AUTHOR_NAME", "template tests"),
        ("GIT_AUTHOR_EMAIL", "template-tests@localhost"),
        ("GIT_COMMITTER_NAME", "template tests"),
        ("GIT_COMMITTER_EMAIL", "template-tests@localhost"),
    ):
        os.environ.setdefault(var, value)  # copier commits a dirty template in its clone
    config.stash[VARIANTS] = variants
    seed_dir = config.getoption("--mypy-seed-dir")
    config.stash[RUNNER] = None
    config.stash[PROBLEM] = None
    config.stash[SETTINGS] = h.Settings(
        template_src=src,
        template_ref=ref,
        renders_dir=Path(),  # set once pytest's temporary directory exists
        database_url=config.getoption("--database-url"),
        workers=max(1, config.getoption("--matrix-workers")),
        mypy_seed=not config.getoption("--no-mypy-seed"),
        env={},
        mypy_seed_keep=Path(seed_dir).expanduser() if seed_dir else None,
        shared_envs=not config.getoption("--fresh-venvs"),
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if {"variant", "step"} <= set(metafunc.fixturenames):
        variants = metafunc.config.stash[VARIANTS]
        params = [
            (v, step)
            for v in variants
            for step in h.VARIANT_STEPS
            if step != "embedded" or v.embedded
        ]
        ids = [f"{v.id}-{step}" for v, step in params]
        metafunc.parametrize(("variant", "step"), params, ids=ids)


def _prepare(config: pytest.Config) -> h.Settings:
    """Fill in the settings that need a run directory or a uv binary (once)."""
    settings = config.stash[SETTINGS]
    if settings.env:
        return settings
    renders = config.getoption("--renders-dir")
    if renders:
        settings.renders_dir = Path(renders).resolve()
        settings.renders_dir.mkdir(parents=True, exist_ok=True)
    else:
        settings.renders_dir = h.new_run_dir(settings.template_src)
    settings.env = h.base_env(h.find_uv(), h.pyenv_version())
    return settings


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or getattr(config, "workerinput", None) is not None:
        return
    variants: dict[str, h.Variant] = {}
    new_user = False
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "variant" in callspec.params:
            variant = callspec.params["variant"]
            variants.setdefault(variant.id, variant)
        if item.get_closest_marker("new_user"):
            new_user = True
    if not variants and not new_user:
        return

    settings = _prepare(config)
    if variants:
        problem = h.database_problem(settings.database_url)
        if problem:
            config.stash[PROBLEM] = problem
            variants.clear()
            if not new_user:
                return
    jobs: list[h.Job] = [h.VariantJob(v) for v in variants.values()]
    if new_user:
        jobs.append(h.NewUserJob())
    runner = h.Runner(settings, jobs)
    config.stash[RUNNER] = runner
    runner.start()

    # Report in the order the runner works: quick tests first (they run meanwhile), then each
    # job's items as it is scheduled, so that progress shows and -x stops early.
    position = {job_id: n for n, job_id in enumerate(runner.order)}

    def key(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "variant" in callspec.params:
            return 1 + position.get(callspec.params["variant"].id, len(position))
        if item.get_closest_marker("new_user"):
            return 1 + position.get(h.NewUserJob.id, len(position))
        return 0

    session.items.sort(key=key)


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> h.Settings:
    return _prepare(pytestconfig)


Render = Callable[..., Path]


@pytest.fixture
def render(settings: h.Settings, tmp_path: Path) -> Render:
    """Render the template under test in-process: ``render(**answers)`` -> the project, a
    directory under the test's ``tmp_path`` (copier's defaults fill the other answers)."""

    def render(name: str = "project", **data: Any) -> Path:
        dst = tmp_path / name
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

    return render


@pytest.fixture(scope="session")
def matrix(pytestconfig: pytest.Config) -> h.Runner:
    runner = pytestconfig.stash[RUNNER]
    if runner is None:
        pytest.fail(
            pytestconfig.stash[PROBLEM] or "the matrix runner was not started", pytrace=False
        )
    return runner


@pytest.fixture(scope="session")
def database_problem(pytestconfig: pytest.Config) -> str | None:
    """Why the variants' test suites cannot reach TEST_DATABASE_URL (None when they can)."""
    return pytestconfig.stash[PROBLEM]


def pytest_sessionfinish(session: pytest.Session) -> None:
    runner = session.config.stash.get(RUNNER, None)
    if runner is not None:
        runner.close()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    runner = config.stash.get(RUNNER, None)
    problem = config.stash.get(PROBLEM, None)
    if problem:
        terminalreporter.write_sep("=", "template matrix", red=True)
        terminalreporter.write_line(problem)
    if runner is None:
        return
    outcomes = runner.outcomes()
    if not outcomes:
        return
    terminalreporter.write_sep("=", "template matrix")
    for line in h.summary_table(outcomes):
        terminalreporter.write_line(line)
    end = runner.finished_at or time.monotonic()
    terminalreporter.write_line("")
    terminalreporter.write_line(
        f"{len(outcomes)} job(s) on {runner.settings.workers} worker(s) in "
        f"{end - runner.started_at:.0f}s wall; mypy cache: * cold, + kept from an earlier "
        "run, else seeded in this run"
    )
    terminalreporter.write_line(f"renders and logs: {runner.settings.renders_dir}")
    failed = [o.id for o in outcomes if not o.ok]
    if failed:
        terminalreporter.write_line(f"jobs with failures: {', '.join(failed)}", red=True)
