"""A new user's walk-through: every command of the template README's "Use it" block and of
the generated README, pasted as written, in README order, on a machine with uv, git, the
PostgreSQL client tools and a PostgreSQL server (127.0.0.1:5432, as TEST_DATABASE_URL).

Where a command needs the user's own input the test gives it the way the README says:
`.env`'s DATABASE_URL names a database of this run (the name in `createdb` follows it), the
server gets a free port, the benchmark a small row count (its HTTP mode one short round),
and a model of the user's own is added before `alembic revision --autogenerate`. uv's
installer is not run (no network). The update comes from a later commit of the template's
clone, which has no tags. The container blocks (docker, compose) are left to
tests/test_production.py, which replays them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

import support
from support import LATER_CHANGE, commit_template_change, template_repository

pytestmark = pytest.mark.new_user

INVOICE = '''"""Invoices: a model of the user's own."""

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


def sh(command: str, cwd: Path, env: dict[str, str]) -> str:
    return support.run(["bash", "-euo", "pipefail", "-c", command], cwd, env, timeout=1200).stdout


def serve_and_request(command: str, project: Path, env: dict[str, str]) -> None:
    """Start the README's server command, wait until it answers, stop it."""
    port = support.free_port()
    argv = ["bash", "-c", f"exec {command} --port {port}"]
    url = f"http://127.0.0.1:{port}/openapi.json"
    with support.serving(argv, project, env, url), urllib.request.urlopen(url) as response:
        assert response.status == 200


@pytest.mark.xdist_group("new-user")
def test_new_user_walk_through(settings: support.Settings, database_url: str) -> None:
    # Under the renders directory, not pytest's tmp_path: the embedded PostgreSQL runs as
    # another system user when the tests run as root, and pytest's directories are private.
    tmp_path = settings.renders_dir / "new-user"
    if tmp_path.exists():
        shutil.rmtree(tmp_path)
    tmp_path.mkdir(parents=True)
    env = dict(settings.env)
    clone = template_repository(settings, tmp_path / "copier-async-sqlalchemy")

    # The template README: copy, commit, install, test (one shell: the block `cd`s).
    use_it = support.readme_blocks((clone / "README.md").read_text())[0]
    script = [c for c in use_it if not c.startswith("curl ")]
    assert any(c.startswith("uvx copier copy") for c in script), use_it
    sh("\n".join(script), clone, env)
    project = tmp_path / "my-backend"
    answers = support.read_answers(project)
    assert Path(answers["_src_path"]).is_absolute(), answers["_src_path"]
    package = str(answers["package_name"])
    # Run already by the template README's block (the generated README repeats them).
    ran_before = {part for c in script for part in c.split(" && ")}
    ran: list[str] = []

    # The generated README, block by block.
    database = f"{package}_{uuid.uuid4().hex[:8]}"
    server_url = settings.database_url.rsplit("/", 1)[0]
    try:
        generated = support.readme_blocks((project / "README.md").read_text())
        # Container blocks (docker, compose) are replayed by tests/test_production.py.
        generated = [b for b in generated if not any(c.startswith("docker ") for c in b)]
        for command in [c for block in generated for c in block]:
            bare = command.split("#")[0].strip()
            if bare in ran_before:
                continue
            ran.append(bare)
            if bare == "cp .env.example .env":
                sh(bare, project, env)
                text = (project / ".env").read_text()
                (project / ".env").write_text(
                    re.sub(
                        r"^DATABASE_URL=.*$",
                        f"DATABASE_URL={server_url}/{database}",
                        text,
                        flags=re.M,
                    )
                )
            elif bare.startswith("createdb "):
                sh(re.sub(rf"\b{package}$", database, bare), project, env)
            elif bare.startswith("uv run uvicorn "):
                serve_and_request(bare, project, env)
            elif bare.startswith("uv run alembic revision --autogenerate"):
                models = project / "src" / package / "models"
                (models / "invoice.py").write_text(INVOICE)
                init = models / "__init__.py"
                init.write_text(init.read_text() + "from .invoice import Invoice as Invoice\n")
                before = set((project / "migrations" / "versions").glob("*.py"))
                sh(bare, project, env)
                (new,) = set((project / "migrations" / "versions").glob("*.py")) - before
                assert re.fullmatch(
                    r"\d{4}-\d{2}-\d{2}_\d{4}_[0-9a-f]+_add_invoice_table\.py", new.name
                )
                columns = re.findall(r'sa\.Column\(\s*"(\w+)"', new.read_text())
                key = ["id", "public_id"] if answers["primary_key"] == "dual_id" else ["id"]
                assert columns == [*key, "number", "amount", "created_at", "updated_at"], columns
            elif re.match(r"uv run \S+-bench --http\b", bare):
                output = sh(f"{bare} --seconds 1 --rounds 1", project, env)
                assert "ratio" in output, output
                assert "failed requests" not in output, output
            elif re.match(r"uv run \S+-bench\b", bare):
                output = sh(f"{bare} --rows 1000 --repeat 1", project, env)
                assert "ratio" in output, output
            elif bare == "git status":
                sh("git add -A && git commit -qm 'my invoices'", project, env)
                assert not sh("git status --porcelain", project, env).strip()
            elif bare.startswith("uvx copier update"):
                commit_template_change(clone, env)
                sh(bare, project, env)
                assert LATER_CHANGE in (project / "README.md").read_text()
                assert (project / "src" / package / "models" / "invoice.py").read_text() == INVOICE
                commit = str(support.read_answers(project)["_commit"])
                sh(f"git diff {answers['_commit']} {commit} -- CHANGELOG.md", clone, env)
            else:
                sh(bare, project, env)
        assert ran.count("uv run alembic upgrade head") == 2, ran  # before and after the model
        assert "uv run alembic check" in ran, ran
        # The user's model and its autogenerated migration pass the project's checks.
        sh("uv run ruff format --check . && uv run ruff check . && uv run mypy", project, env)
    finally:
        subprocess.run(
            ["dropdb", "--if-exists", "--force", "-h", "127.0.0.1", "-U", "postgres", database],
            check=False,
            capture_output=True,
        )
