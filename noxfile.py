"""Sessions for the template repository.

    uvx nox -s tests   # the full variant matrix, validators, CLI and the new-user walk-through
    uvx nox -s smoke   # copier's defaults only (one variant), validators and CLI: quick
    uvx nox -s lint    # ruff on the template's tests and this file

Arguments after `--` go to pytest, e.g. `uvx nox -s tests -- --variants default -n 1`.
TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres) is the PostgreSQL
server the variants' test suites create their databases on.
"""

from __future__ import annotations

import os

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _env() -> dict[str, str]:
    # PYENV_VERSION: tests/support.py adds every installed CPython for pyenv's shims.
    env = {"UV_PYTHON_DOWNLOADS": os.environ.get("UV_PYTHON_DOWNLOADS", "never")}
    env["TEST_DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    return env


def _install(session: nox.Session, *groups: str) -> None:
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """The full variant matrix plus validators, CLI and the new-user walk-through."""
    _install(session, "test")
    session.run("pytest", *session.posargs, env=_env())


@nox.session
def smoke(session: nox.Session) -> None:
    """Copier's defaults only (one variant), validators and CLI; no new-user walk-through and
    no update scenarios, no production replay."""
    _install(session, "test")
    session.run(
        "pytest",
        "--variants=default",
        "-m",
        "not new_user and not update and not project and not production",
        *session.posargs,
        env=_env(),
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the template's tests and this file."""
    _install(session, "lint")
    session.run("ruff", "format", "--check", "tests", "noxfile.py")
    session.run("ruff", "check", "tests", "noxfile.py")
