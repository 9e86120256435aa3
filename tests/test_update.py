"""`copier update` works for real projects.

The template's working tree (uncommitted changes included) is committed to a scratch git
repository and tagged ``0.1.0``; a small but real change to template-owned files (a line in
``db.py``'s docstring and in the README) is committed on top and tagged ``0.2.0``. For each
case a project is copied from ``0.1.0``, committed, and edited the way a user would: a
module of their own, a paragraph in the README, a new model imported from
``models/__init__.py`` with its own Alembic revision after ``0001_initial``, and a test of
their own. Then:

* ``copier update --defaults --vcs-ref 0.2.0`` carries the template change, keeps every user
  edit, leaves no conflict and no ``.rej``, records ``_commit: 0.2.0``, and the updated
  project passes its own ruff, mypy and test suite (run as the matrix runs a variant);
* updating again to the same revision changes nothing;
* changing a structural answer (``primary_key``, ``soft_delete``) is refused and changes
  nothing;
* a code-only answer may change (``repository_style`` and ``api``, one case only): the
  project follows and its suite still passes.

Three rendered-suite runs in all. The steps of one case depend on each other, so they run
in this module's order on one project per case (a module-scoped fixture); logs and projects
are kept under ``<renders dir>/update/``.
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

import support
from support import commit_all, git, status, tail, template_repository
from test_rendering import check_text_file, iter_files

pytestmark = pytest.mark.update

OLD, NEW = "0.1.0", "0.2.0"
# What revision 0.2.0 of the scratch template adds (checked for in updated projects).
DB_LINE = "Sessions never outlive the unit of work that opened them (template 0.2.0)."
README_LINE = (
    "Each template version is a git tag; `_commit` in `.copier-answers.yml` names yours "
    "(template 0.2.0)."
)
# The user's paragraph in the README's "Tests" section, far from the template's change.
USER_README = (
    "Our CI runs this suite nightly against a copy of production (user edit, kept by "
    "`copier update`)."
)
README_ANCHOR = "\nWith `TEST_DATABASE_URL` the suite"
MIGRATION_FILE = "2026-11-26_0930_5d1e2b3c4a6f_add_invoice_table.py"
MIGRATION_REVISION = "5d1e2b3c4a6f"


@dataclass(frozen=True)
class Case:
    id: str
    data: Mapping[str, Any]  # answers given at the first copy (copier's defaults fill the rest)
    code_change: Mapping[str, str] | None = None  # code-only answers changed on update


CASES = [
    Case("defaults", {}, {"repository_style": "functions", "api": "none"}),
    Case(
        "dual_id-hard-functions",
        {"primary_key": "dual_id", "soft_delete": False, "repository_style": "functions"},
    ),
]


# --------------------------------------------------------------------------------------------
# Commands and the scratch template with two tagged revisions
# --------------------------------------------------------------------------------------------


def copier(args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> CompletedProcess[str]:
    return support.run([sys.executable, "-m", "copier", *args], cwd, env, check=False)


def describe(result: CompletedProcess[str]) -> str:
    return f"`{shlex.join(result.args[1:])}` exited {result.returncode}:\n{tail(result.stdout)}"


def insert_before_docstring_end(text: str, line: str) -> str:
    """Add ``line`` as the last line of a module docstring that closes on a line of its own."""
    end = text.find('\n"""\n')
    assert end > 0, "db.py's docstring does not close on a line of its own: update this test"
    return text[: end + 1] + line + text[end:]


def make_template(settings: support.Settings, dst: Path) -> None:
    env = settings.env
    template_repository(settings, dst)
    git(dst, "tag", OLD, env=env)

    subdir = dst / (yaml.safe_load((dst / "copier.yml").read_text()).get("_subdirectory", ""))
    db = subdir / "src" / "{{package_name}}" / "db.py"
    db.write_text(insert_before_docstring_end(db.read_text(), DB_LINE))
    readme = subdir / "README.md.jinja"
    readme.write_text(readme.read_text().rstrip("\n") + f"\n\n{README_LINE}\n")
    commit_all(dst, "template 0.2.0: a change that updates must carry", env)
    git(dst, "tag", NEW, env=env)


# --------------------------------------------------------------------------------------------
# The user's edits
# --------------------------------------------------------------------------------------------

REPORTS = '''"""Reports: a module of the project's own, not from the template."""

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Invoice


async def invoiced_total(session: AsyncSession) -> Decimal:
    """The sum of every invoice's amount (0 when there is none)."""
    total = await session.scalar(select(func.sum(Invoice.amount)))
    return total if total is not None else Decimal(0)
'''

INVOICE_MODEL = '''"""Invoices: a model of the project's own, next to the template's."""

from decimal import Decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, TimestampMixin
from .keys import KeyMixin


class Invoice(KeyMixin, TimestampMixin, Base):
    __tablename__ = "invoice"

    number: Mapped[str] = mapped_column(String(40), unique=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
'''

TEST_REPORTS = '''"""The project's own test of its own model, migration and module."""

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from {package}.models import Invoice
from {package}.reports import invoiced_total


async def test_invoiced_total(session: AsyncSession) -> None:
    assert await invoiced_total(session) == Decimal(0)
    session.add_all(
        [
            Invoice(number="2026-0001", amount=Decimal("10.50")),
            Invoice(number="2026-0002", amount=Decimal("4.25")),
        ]
    )
    await session.flush()
    assert await invoiced_total(session) == Decimal("14.75")
'''

UUID_KEY = """\
        sa.Column("id", sa.Uuid(), nullable=False),
"""
DUAL_KEY = """\
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("public_id", sa.Uuid(), nullable=False),
"""
DUAL_KEY_CONSTRAINT = """\
        sa.UniqueConstraint("public_id", name=op.f("invoice_public_id_key")),
"""

MIGRATION = '''"""Add invoice table.

Revision ID: {revision}
Revises: {down_revision}
Create Date: 2026-11-26 09:00:00.000000+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "{revision}"
down_revision: str | Sequence[str] | None = "{down_revision}"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice",
{key_columns}\
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("invoice_pkey")),
{key_constraints}\
        sa.UniqueConstraint("number", name=op.f("invoice_number_key")),
    )


def downgrade() -> None:
    op.drop_table("invoice")
'''


def models_init_with_invoice(text: str) -> str:
    """models/__init__.py importing Invoice, ``__all__`` sorted and one name a line."""
    anchor = "from .base import Base\n"
    assert anchor in text, "models/__init__.py no longer imports Base first: update this test"
    text = text.replace(anchor, anchor + "from .invoice import Invoice\n", 1)
    match = re.search(r"^__all__ = (\[[^\]]*\])\n", text, re.MULTILINE)
    assert match, "models/__init__.py has no one-line __all__: update this test"
    names = sorted([*ast.literal_eval(match.group(1)), "Invoice"])
    listing = "".join(f'    "{name}",\n' for name in names)
    return text[: match.start()] + f"__all__ = [\n{listing}]\n" + text[match.end() :]


def migration_head(project: Path) -> str:
    """The one revision of the project's migrations that no other revises: a user's new
    migration goes on top of it (as `alembic revision` would put it)."""
    found = {
        match.group(1): match.group(2)
        for path in (project / "migrations" / "versions").glob("*.py")
        if (
            match := re.search(
                r'^revision[^=]*= "([^"]+)"\n^down_revision[^=]*= "?([^"\n]*)"?$',
                path.read_text(),
                re.MULTILINE,
            )
        )
    }
    heads = set(found) - set(found.values())
    assert len(heads) == 1, f"the rendered project has {len(heads)} migration heads: {heads}"
    return heads.pop()


def user_edits(project: Path, package: str, primary_key: str) -> dict[str, str]:
    """Edit the project as a user would; returns {path: text} of every file written."""
    pkg = f"src/{package}"
    readme = (project / "README.md").read_text()
    assert README_ANCHOR in readme, "README.md has no 'With `TEST_DATABASE_URL`' paragraph"
    dual = primary_key == "dual_id"
    files = {
        f"{pkg}/reports.py": REPORTS,
        f"{pkg}/models/invoice.py": INVOICE_MODEL,
        f"{pkg}/models/__init__.py": models_init_with_invoice(
            (project / pkg / "models" / "__init__.py").read_text()
        ),
        f"migrations/versions/{MIGRATION_FILE}": MIGRATION.format(
            revision=MIGRATION_REVISION,
            down_revision=migration_head(project),
            key_columns=DUAL_KEY if dual else UUID_KEY,
            key_constraints=DUAL_KEY_CONSTRAINT if dual else "",
        ),
        "tests/test_reports.py": TEST_REPORTS.format(package=package),
        "README.md": readme.replace(README_ANCHOR, f"\n{USER_README}\n{README_ANCHOR}", 1),
    }
    for rel, text in files.items():
        (project / rel).write_text(text)
    return files


# --------------------------------------------------------------------------------------------
# Checks of an updated project
# --------------------------------------------------------------------------------------------


def leftovers(project: Path) -> list[str]:
    """``*.rej``/``*.orig`` files and conflict markers anywhere in the project."""
    found = []
    for path in iter_files(project):
        rel = str(path.relative_to(project))
        if path.suffix in (".rej", ".orig"):
            found.append(f"{rel}: rejected hunks file")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if line.startswith(("<<<<<<<", ">>>>>>>")):
                found.append(f"{rel}:{number}: conflict marker: {line}")
    return found


def tracked_hygiene(project: Path) -> list[str]:
    """The rendering's hygiene rules on the files git tracks (tools' caches left out)."""
    problems = []
    for rel in git(project, "ls-files", "-z").split("\0"):
        path = project / rel
        if not rel or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            problems.extend(check_text_file(path, rel, data.decode("utf-8", errors="replace")))
    return problems


def run_project_checks(project: Path, python: str, settings: support.Settings, kept: Path) -> None:
    """A variant's checks on the updated project: hygiene, ``uv sync``, ruff format and check,
    mypy and its suite against TEST_DATABASE_URL, in this worker's environment and mypy cache.
    ``uv.lock`` is committed like a user would (it is theirs), so that the work tree stays
    clean for the next update."""
    problems = tracked_hygiene(project)
    assert not problems, "hygiene of the updated project:\n" + "\n".join(problems[:80])
    env = {
        **settings.env,
        "UV_PROJECT_ENVIRONMENT": str(kept / f"env-py{python}"),
        "MYPY_CACHE_DIR": str(kept / f"mypy-py{python}"),
        "TEST_DATABASE_URL": settings.database_url,
    }
    support.run(["uv", "sync"], project, env)
    if status(project):
        commit_all(project, "uv.lock", settings.env)
    support.run(["uv", "run", "ruff", "format", "--check", "."], project, env)
    support.run(["uv", "run", "ruff", "check", "."], project, env)
    support.run(["uv", "run", "mypy"], project, env)
    output = support.run(["uv", "run", "pytest"], project, env).stdout
    assert support.parse_pytest_summary(output).get("passed"), tail(output)
    assert re.search(r"^tests/test_reports\.py \.", output, re.MULTILINE), (
        "the user's own test did not run and pass:\n" + tail(output)
    )
    assert not status(project), f"the checks left changes behind:\n{status(project)}"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(settings: support.Settings) -> Path:
    """A git repository of the template with tags 0.1.0 (the tree under test) and 0.2.0."""
    dst = settings.renders_dir / "update" / "template"
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.mkdir(parents=True)
    make_template(settings, dst)
    return dst


@dataclass
class Project:
    case: Case
    path: Path
    template: Path
    package: str
    python: str
    answers_before: dict[str, Any]
    user_files: dict[str, str]
    update: CompletedProcess[str]
    changed_by_update: list[str]  # `git status --porcelain` right after the update


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(f"update-{c.id}")) for c in CASES
    ],
)
def project(request: pytest.FixtureRequest, settings: support.Settings, template: Path) -> Project:
    """Copied from 0.1.0, edited and committed by the user, then updated to 0.2.0 and the
    update committed (whatever its outcome: the tests below judge it)."""
    case: Case = request.param
    env = settings.env
    path = template.parent / case.id

    data = [arg for k, v in case.data.items() for arg in ("--data", f"{k}={str(v).lower()}")]
    copy = copier(
        ["copy", "--vcs-ref", OLD, "--defaults", *data, str(template), str(path)],
        template.parent,
        env,
    )
    assert copy.returncode == 0, describe(copy)
    git(path, "init", "-q", env=env)
    commit_all(path, f"copier copy {OLD}", env)

    answers = support.read_answers(path)
    package, python = str(answers["package_name"]), str(answers["python_version"])
    user_files = user_edits(path, package, str(answers["primary_key"]))
    commit_all(path, "user edits: reports, invoice model and migration, README", env)

    update = copier(["update", "--defaults", "--vcs-ref", NEW, str(path)], path, env)
    changed = status(path).splitlines()
    commit_all(path, f"copier update {NEW}", env)
    return Project(case, path, template, package, python, answers, user_files, update, changed)


# --------------------------------------------------------------------------------------------
# Tests, in the order they run on each project
# --------------------------------------------------------------------------------------------


def test_update_carries_the_template_change_and_keeps_user_edits(project: Project) -> None:
    update = project.update
    assert "--trust" not in update.args
    assert update.returncode == 0, describe(update)
    found = leftovers(project.path)
    assert not found, "\n".join(found)

    for rel, text in project.user_files.items():
        if rel != "README.md":
            assert (project.path / rel).read_text() == text, f"{rel}: the user's edit changed"
    readme = (project.path / "README.md").read_text()
    assert f"\n{USER_README}\n{README_ANCHOR}" in readme, "the user's README paragraph was lost"
    assert readme.rstrip("\n").endswith(README_LINE), "the template's README change is missing"
    db = (project.path / "src" / project.package / "db.py").read_text()
    assert DB_LINE in db, "the template's db.py change did not arrive"

    pkg = f"src/{project.package}"
    paths = sorted(line[3:] for line in project.changed_by_update)
    assert paths == sorted([".copier-answers.yml", "README.md", f"{pkg}/db.py"]), (
        "the update changed other files than the template did:\n"
        + "\n".join(project.changed_by_update)
    )
    answers = support.read_answers(project.path)
    assert answers["_commit"] == NEW
    assert answers["_src_path"] == str(project.template)
    assert Path(answers["_src_path"]).is_absolute()
    unchanged = {k: v for k, v in project.answers_before.items() if k != "_commit"}
    assert {k: answers.get(k) for k in unchanged} == unchanged


def test_updated_project_passes_its_checks(
    project: Project, settings: support.Settings, database_url: str, worker_dir: Path
) -> None:
    assert project.update.returncode == 0, describe(project.update)
    run_project_checks(project.path, project.python, settings, worker_dir)


def test_update_to_the_same_revision_changes_nothing(
    project: Project, settings: support.Settings
) -> None:
    assert not status(project.path), "precondition: a clean work tree"
    head = git(project.path, "rev-parse", "HEAD")
    again = copier(
        ["update", "--defaults", "--vcs-ref", NEW, str(project.path)], project.path, settings.env
    )
    assert again.returncode == 0, describe(again)
    assert not status(project.path), f"a second update changed:\n{status(project.path)}"
    assert git(project.path, "rev-parse", "HEAD") == head


@pytest.mark.parametrize("question", ["primary_key", "soft_delete"])
def test_structural_answer_cannot_change(
    project: Project, settings: support.Settings, question: str
) -> None:
    assert not status(project.path), "precondition: a clean work tree"
    head = git(project.path, "rev-parse", "HEAD")
    current = support.read_answers(project.path)[question]
    other = {"uuid": "dual_id", "dual_id": "uuid", True: "false", False: "true"}[current]
    args = ["update", "--defaults", "--data", f"{question}={other}", str(project.path)]
    refused = copier(args, project.path, settings.env)
    try:
        assert refused.returncode != 0, f"changing {question} was accepted:\n{describe(refused)}"
        assert f"{question} is chosen once" in refused.stdout, describe(refused)
        assert not status(project.path), f"the refused update changed:\n{status(project.path)}"
        assert git(project.path, "rev-parse", "HEAD") == head
        assert support.read_answers(project.path)[question] == current
    finally:  # keep the project usable for the tests that follow
        git(project.path, "reset", "-q", "--hard", head.strip())
        git(project.path, "clean", "-q", "-fd")


def test_code_only_answer_may_change(
    project: Project, settings: support.Settings, database_url: str, worker_dir: Path
) -> None:
    change = project.case.code_change
    if not change:
        pytest.skip("code-only answer changes are tested on one case only (time)")
    assert not status(project.path), "precondition: a clean work tree"
    data = [arg for k, v in change.items() for arg in ("--data", f"{k}={v}")]
    update = copier(["update", "--defaults", *data, str(project.path)], project.path, settings.env)
    assert update.returncode == 0, describe(update)
    found = leftovers(project.path)
    assert not found, "\n".join(found)
    answers = support.read_answers(project.path)
    assert {k: answers[k] for k in change} == dict(change)
    assert answers["_commit"] == NEW
    for rel, text in project.user_files.items():
        if rel != "README.md":
            assert (project.path / rel).read_text() == text, f"{rel}: the user's edit changed"
    assert USER_README in (project.path / "README.md").read_text()
    if change.get("api") == "none":
        pkg = project.path / "src" / project.package
        survivors = sorted(str(f.relative_to(pkg)) for f in pkg.glob("api/**/*.py"))
        assert not survivors, f"api/ survived api=none: {survivors}"  # __pycache__ may stay
        assert not (pkg / "main.py").exists(), "main.py survived api=none"
    commit_all(
        project.path,
        "copier update: " + ", ".join(f"{k}={v}" for k, v in change.items()),
        settings.env,
    )
    run_project_checks(project.path, project.python, settings, worker_dir)
