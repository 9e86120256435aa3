"""A rendered project reads its environment the way its README and `.env.example` say:
TEST_DATABASE_URL from `.env`, a quiet embedded PostgreSQL, and a benchmark that says what
to do on a database that is not migrated yet. One project (examples, api=none), synced once.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support

pytestmark = [pytest.mark.project, pytest.mark.xdist_group("project-env")]


def uv(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A uv command whose stdout and stderr are kept apart."""
    return support.run(["uv", *args], project, env, check=False, stderr_apart=True)


@pytest.fixture(scope="module")
def project(settings: support.Settings) -> Path:
    dst = settings.renders_dir / "project-env"
    support.run(["uv", "sync"], support.render(settings, dst, api="none"), settings.env)
    return dst


@pytest.fixture
def dotenv(project: Path) -> Iterator[Path]:
    path = project / ".env"
    yield path
    path.unlink(missing_ok=True)


def test_test_database_url_in_dotenv_is_used(
    project: Path, settings: support.Settings, dotenv: Path
) -> None:
    """`.env` names a server that refuses connections: the suite must try it (and fail)
    instead of starting its own PostgreSQL."""
    dotenv.write_text("TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:9/postgres\n")
    run = uv(project, settings.env, "run", "pytest", "-x", "-q", "tests/test_migrations.py")
    output = run.stdout + run.stderr
    assert run.returncode != 0, f"the suite ignored TEST_DATABASE_URL in .env:\n{output[-3000:]}"
    assert "127.0.0.1" in output, output[-3000:]


def test_the_embedded_server_starts_without_warnings(
    project: Path, settings: support.Settings
) -> None:
    env = {k: v for k, v in settings.env.items() if k != "XDG_RUNTIME_DIR"}
    run = uv(project, env, "run", "pytest", "-q", "tests/test_migrations.py")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "XDG_RUNTIME_DIR" not in output, output[-3000:]


@pytest.fixture
def empty_database(settings: support.Settings, database_url: str) -> Iterator[str]:
    with support.database(settings, "bench") as url:
        yield url


def test_benchmark_on_an_unmigrated_database_says_to_migrate(
    project: Path, settings: support.Settings, empty_database: str
) -> None:
    bench = f"{support.read_answers(project)['package_name']}-bench".replace("_", "-")
    env = {**settings.env, "DATABASE_URL": empty_database}
    run = uv(project, env, "run", bench, "--rows", "10", "--repeat", "1")
    assert run.returncode != 0
    assert "run `uv run alembic upgrade head` first" in run.stderr, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
