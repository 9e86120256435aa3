"""Migrations: the field's standard checks (pytest-alembic) on a database of their own:
a single head, upgrade from empty, up/down consistency, and models == DDL (what
`alembic check` reports). Plus the file naming convention."""

import re
import shutil
from pathlib import Path

from alembic import command
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

from .conftest import PROJECT_ROOT, alembic_config_for

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]

DATED_SLUG = re.compile(r"\d{4}-\d{2}-\d{2}_[a-z0-9_]+\.py")


def test_migration_files_are_named_by_date_and_slug() -> None:
    files = [p.name for p in (PROJECT_ROOT / "migrations" / "versions").glob("*.py")]
    assert files
    assert all(DATED_SLUG.fullmatch(name) for name in files), files


def test_new_revisions_get_a_dated_name(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "migrations", tmp_path / "migrations")
    config = alembic_config_for()
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    if shutil.which("ruff") is None:  # the post-write hooks need ruff on PATH (`uv run`)
        config.set_section_option("post_write_hooks", "hooks", "")
    command.revision(config, message="Add invoice table")
    (created,) = {p.name for p in (tmp_path / "migrations" / "versions").glob("*.py")} - {
        p.name for p in (PROJECT_ROOT / "migrations" / "versions").glob("*.py")
    }
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_add_invoice_table\.py", created)
