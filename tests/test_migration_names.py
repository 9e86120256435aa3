"""Alembic revision files are named so that two revisions can never share a file: dated and
readable, with the time and the revision id (alembic.ini's ``file_template``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def alembic_config(project: Path) -> Config:
    config = Config(project / "alembic.ini")
    config.set_section_option("post_write_hooks", "hooks", "")  # no ruff needed here
    return config


def test_same_message_twice_on_the_same_day_makes_two_revisions(
    render: Callable[..., Path],
) -> None:
    project = render()
    config = alembic_config(project)
    versions = project / "migrations" / "versions"
    shipped = {p.name for p in versions.glob("*.py")}

    first = command.revision(config, message="add thing")
    second = command.revision(config, message="add thing")

    new = {p.name for p in versions.glob("*.py")} - shipped
    assert len(new) == 2, f"two revisions, one file: {sorted(new)}"
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [second.revision]  # type: ignore[union-attr]
    assert script.get_revision(second.revision).down_revision == first.revision  # type: ignore[union-attr]
    for name in new:
        assert name.endswith("_add_thing.py"), name
