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
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import harness as h

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
# Commands
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    cmd: list[str]
    rc: int | None
    output: str
    log: Path

    def describe(self) -> str:
        return (
            f"`{shlex.join(self.cmd)}` exited {self.rc} (log: {self.log}):\n{h.tail(self.output)}"
        )


@dataclass
class Workspace:
    """Where one test module run works, and how it runs commands."""

    settings: h.Settings
    root: Path
    procs: h.ProcessPool = field(default_factory=h.ProcessPool)
    mypy_seeds: dict[str, Path] = field(default_factory=dict)  # python -> our last cache
    counter: int = 0

    def run(
        self,
        cmd: Sequence[str],
        cwd: Path,
        logs: Path,
        name: str,
        *,
        timeout: float = 180,
        extra_env: Mapping[str, str] | None = None,
    ) -> Result:
        self.counter += 1
        log = logs / f"{self.counter:02d}-{name}.log"
        env = {**self.settings.env, **(extra_env or {})}
        rc, _, text = self.procs.run(cmd, cwd=cwd, env=env, log=log, timeout=timeout)
        return Result(list(cmd), rc, text, log)

    def copier(self, args: Sequence[str], cwd: Path, logs: Path, name: str) -> Result:
        return self.run([sys.executable, "-m", "copier", *args], cwd, logs, name)


def git(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
        cwd=repo,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"git {shlex.join(args)} in {repo} failed:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def commit_all(repo: Path, message: str, env: Mapping[str, str]) -> None:
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "--allow-empty", "-m", message, env=env)


def status(repo: Path) -> str:
    return git(repo, "status", "--porcelain", "--untracked-files=all")


# --------------------------------------------------------------------------------------------
# The scratch template with two tagged revisions
# --------------------------------------------------------------------------------------------


def working_tree_files(src: Path) -> list[str]:
    """Files of the template's working tree, as git sees them (ignored files left out)."""
    if (src / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=src,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sorted({f for f in out.split("\0") if f and (src / f).is_file()})
    return sorted(
        str(p.relative_to(src))
        for p in h.iter_files(src)
        if not any(part in {".nox", ".renders"} for part in p.relative_to(src).parts)
    )


def insert_before_docstring_end(text: str, line: str) -> str:
    """Add ``line`` as the last line of a module docstring that closes on a line of its own."""
    end = text.find('\n"""\n')
    assert end > 0, "db.py's docstring does not close on a line of its own: update this test"
    return text[: end + 1] + line + text[end:]


def make_template(src: Path, dst: Path, env: Mapping[str, str]) -> None:
    for rel in working_tree_files(src):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target, follow_symlinks=False)
    git(dst, "init", "-q", env=env)
    commit_all(dst, "template 0.1.0: the working tree under test", env)
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
    for path in h.iter_files(project):
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
    """The matrix's hygiene rules on the files git tracks (tools' caches left out)."""
    problems = []
    for rel in git(project, "ls-files", "-z").split("\0"):
        path = project / rel
        if not rel or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        problems.extend(h.check_text_file(path, rel, data.decode("utf-8", errors="replace")))
    return problems


def prime_mypy(ws: Workspace, python: str, project: Path) -> str:
    """Start mypy from a warm cache: our previous project's, else the one kept by earlier
    runs of the matrix (read only; see harness.MypySeeds), else cold."""
    if not ws.settings.mypy_seed:
        return "cold"
    cache = h.mypy_cache_dir(project)
    kept = ws.settings.mypy_seed_keep / python if ws.settings.mypy_seed_keep else None
    for seed in (ws.mypy_seeds.get(python), kept):
        if seed is None or not seed.is_dir():
            continue
        shutil.rmtree(cache, ignore_errors=True)
        try:
            shutil.copytree(seed, cache, symlinks=True)
        except (OSError, shutil.Error):  # a kept seed being replaced by a running matrix
            shutil.rmtree(cache, ignore_errors=True)
            continue
        return "seeded"
    return "cold"


def run_project_checks(ws: Workspace, project: Path, logs: Path, python: str) -> None:
    """The matrix's contract for a rendered project: hygiene, ``uv sync``, ruff format and
    check, mypy and pytest against TEST_DATABASE_URL. ``uv.lock`` is committed like a user
    would (it is theirs), so that the work tree stays clean for the next update."""
    problem = h.database_problem(ws.settings.database_url)
    if problem:
        pytest.fail(problem, pytrace=False)
    problems = tracked_hygiene(project)
    assert not problems, "hygiene of the updated project:\n" + "\n".join(problems[:80])

    env: dict[str, str] = {}
    if ws.settings.shared_envs:
        env["UV_PROJECT_ENVIRONMENT"] = str(
            ws.settings.renders_dir / "_envs" / f"update-py{python}"
        )
    uv = h.find_uv()
    timeouts = ws.settings.timeouts

    def step(name: str, cmd: list[str], extra: Mapping[str, str] | None = None) -> Result:
        result = ws.run(
            cmd,
            project,
            logs,
            name,
            timeout=timeouts.get(name, 600),
            extra_env={**env, **(extra or {})},
        )
        if result.rc != 0:
            pytest.fail(f"{name}: {result.describe()}", pytrace=False)
        return result

    step("sync", [uv, "sync"])
    if status(project):
        commit_all(project, "uv.lock", ws.settings.env)
    step("format", [uv, "run", "ruff", "format", "--check", "."])
    step("lint", [uv, "run", "ruff", "check", "."])
    prime_mypy(ws, python, project)
    step("mypy", [uv, "run", "mypy"])
    cache = h.mypy_cache_dir(project)
    if cache.is_dir():
        ws.mypy_seeds[python] = cache
    result = step("pytest", [uv, "run", "pytest"], {"TEST_DATABASE_URL": ws.settings.database_url})
    counts = h.parse_pytest_summary(result.output)
    assert counts.get("passed"), f"pytest passed no test:\n{result.describe()}"
    assert re.search(r"^tests/test_reports\.py \.", result.output, re.MULTILINE), (
        "the user's own test did not run and pass:\n" + result.describe()
    )
    assert not status(project), f"the checks left changes behind:\n{status(project)}"


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(settings: h.Settings) -> Iterator[Workspace]:
    root = settings.renders_dir / "update"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    ws = Workspace(settings, root)
    yield ws
    ws.procs.cancel()


@pytest.fixture(scope="module")
def template(workspace: Workspace) -> Path:
    """A git repository of the template with tags 0.1.0 (the tree under test) and 0.2.0."""
    dst = workspace.root / "template"
    make_template(workspace.settings.template_src, dst, workspace.settings.env)
    return dst


@dataclass
class Project:
    case: Case
    path: Path
    logs: Path
    template: Path
    package: str
    python: str
    answers_before: dict[str, Any]
    user_files: dict[str, str]
    update: Result
    changed_by_update: list[str]  # `git status --porcelain` right after the update


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def project(request: pytest.FixtureRequest, workspace: Workspace, template: Path) -> Project:
    """Copied from 0.1.0, edited and committed by the user, then updated to 0.2.0 and the
    update committed (whatever its outcome: the tests below judge it)."""
    case: Case = request.param
    env = workspace.settings.env
    work = workspace.root / case.id
    logs = work / "logs"
    path = work / "project"
    logs.mkdir(parents=True)

    data = [arg for k, v in case.data.items() for arg in ("--data", f"{k}={str(v).lower()}")]
    copy = workspace.copier(
        ["copy", "--vcs-ref", OLD, "--defaults", *data, str(template), str(path)],
        work,
        logs,
        "copy",
    )
    if copy.rc != 0:
        pytest.fail(f"copier copy: {copy.describe()}", pytrace=False)
    git(path, "init", "-q", env=env)
    commit_all(path, f"copier copy {OLD}", env)

    answers = h.read_answers(path)
    package, python = str(answers["package_name"]), str(answers["python_version"])
    user_files = user_edits(path, package, str(answers["primary_key"]))
    commit_all(path, "user edits: reports, invoice model and migration, README", env)

    update = workspace.copier(
        ["update", "--defaults", "--vcs-ref", NEW, str(path)], path, logs, "update"
    )
    changed = status(path).splitlines()
    commit_all(path, f"copier update {NEW}", env)
    return Project(
        case, path, logs, template, package, python, answers, user_files, update, changed
    )


# --------------------------------------------------------------------------------------------
# Tests, in the order they run on each project
# --------------------------------------------------------------------------------------------


def test_update_carries_the_template_change_and_keeps_user_edits(project: Project) -> None:
    update = project.update
    assert "--trust" not in update.cmd
    assert update.rc == 0, update.describe()
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
    answers = h.read_answers(project.path)
    assert answers["_commit"] == NEW
    assert answers["_src_path"] == str(project.template)
    assert Path(answers["_src_path"]).is_absolute()
    unchanged = {k: v for k, v in project.answers_before.items() if k != "_commit"}
    assert {k: answers.get(k) for k in unchanged} == unchanged


def test_updated_project_passes_its_checks(workspace: Workspace, project: Project) -> None:
    assert project.update.rc == 0, project.update.describe()
    run_project_checks(workspace, project.path, project.logs, project.python)


def test_update_to_the_same_revision_changes_nothing(
    workspace: Workspace, project: Project
) -> None:
    assert not status(project.path), "precondition: a clean work tree"
    head = git(project.path, "rev-parse", "HEAD")
    again = workspace.copier(
        ["update", "--defaults", "--vcs-ref", NEW, str(project.path)],
        project.path,
        project.logs,
        "update-again",
    )
    assert again.rc == 0, again.describe()
    assert not status(project.path), f"a second update changed:\n{status(project.path)}"
    assert git(project.path, "rev-parse", "HEAD") == head


@pytest.mark.parametrize("question", ["primary_key", "soft_delete"])
def test_structural_answer_cannot_change(
    workspace: Workspace, project: Project, question: str
) -> None:
    assert not status(project.path), "precondition: a clean work tree"
    head = git(project.path, "rev-parse", "HEAD")
    current = h.read_answers(project.path)[question]
    other = {"uuid": "dual_id", "dual_id": "uuid", True: "false", False: "true"}[current]
    refused = workspace.copier(
        ["update", "--defaults", "--data", f"{question}={other}", str(project.path)],
        project.path,
        project.logs,
        f"update-{question}",
    )
    try:
        assert refused.rc != 0, f"changing {question} was accepted:\n{refused.describe()}"
        assert f"{question} is chosen once" in refused.output, refused.describe()
        assert not status(project.path), f"the refused update changed:\n{status(project.path)}"
        assert git(project.path, "rev-parse", "HEAD") == head
        assert h.read_answers(project.path)[question] == current
    finally:  # keep the project usable for the tests that follow
        git(project.path, "reset", "-q", "--hard", head.strip())
        git(project.path, "clean", "-q", "-fd")


def test_code_only_answer_may_change(workspace: Workspace, project: Project) -> None:
    change = project.case.code_change
    if not change:
        pytest.skip("code-only answer changes are tested on one case only (time)")
    assert not status(project.path), "precondition: a clean work tree"
    data = [arg for k, v in change.items() for arg in ("--data", f"{k}={v}")]
    update = workspace.copier(
        ["update", "--defaults", *data, str(project.path)],
        project.path,
        project.logs,
        "update-code-only",
    )
    assert update.rc == 0, update.describe()
    found = leftovers(project.path)
    assert not found, "\n".join(found)
    answers = h.read_answers(project.path)
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
        workspace.settings.env,
    )
    run_project_checks(workspace, project.path, project.logs, project.python)
