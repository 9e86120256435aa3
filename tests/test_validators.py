"""copier.yml's validators reject bad answers with a message, and derive good defaults."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest

import support

Render = Callable[..., Path]


def reserved_names(settings: support.Settings) -> tuple[list[str], list[str]]:
    """The lists that copier.yml's package_name validator imports."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(settings.template_src))
    module = env.get_template("includes/package_names.jinja").module
    return list(module.stdlib_modules), list(module.dependency_modules)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("package_name", "reason"),
    [
        ("1abc", "not a valid package name"),
        ("class", "keyword"),
        ("my-pkg", "not a valid package name"),
        ("MyPkg", "not a valid package name"),
        ("sqlalchemy", "shadow"),
        ("email", "standard-library module"),
        ("queue", "standard-library module"),
        ("platform", "standard-library module"),
        ("pytest", "dependency"),
        ("uvicorn", "dependency"),
        ("pydantic_settings", "dependency"),
    ],
)
def test_bad_package_name_is_rejected(render: Render, package_name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(package_name)) as excinfo:
        render("out", package_name=package_name)
    message = str(excinfo.value)
    assert "package_name" in message
    assert reason in message, message


def test_a_project_name_that_derives_a_stdlib_name_is_rejected(
    render: Render, tmp_path: Path
) -> None:
    """`project_name=Calendar` derives `calendar`, which every import would then miss."""
    with pytest.raises(ValueError, match='"calendar" is a standard-library module'):
        render("out", project_name="Calendar")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_reserved_stdlib_names_are_those_of_every_supported_python(
    settings: support.Settings,
) -> None:
    stdlib, _ = reserved_names(settings)
    current: set[str] = set()
    for python in ("3.12", "3.13"):
        code = "import sys; print(*sorted(sys.stdlib_module_names))"
        cmd = ["uv", "run", "--no-project", "--python", python, "python", "-c", code]
        current |= set(support.run(cmd, settings.template_src, settings.env).stdout.split())
    assert sorted(stdlib) == sorted(current)


def test_reserved_dependency_names_cover_the_rendered_dependencies(
    settings: support.Settings, render: Render
) -> None:
    _, reserved = reserved_names(settings)
    pyproject = tomllib.loads((render(api="fastapi") / "pyproject.toml").read_text())
    specs = [*pyproject["project"]["dependencies"], *pyproject["dependency-groups"]["dev"]]
    imports = {re.split(r"[\[<>=~!; ]", s, maxsplit=1)[0].lower().replace("-", "_") for s in specs}
    assert imports - set(reserved) == set()


@pytest.mark.parametrize("question", ["soft_delete", "examples"])
@pytest.mark.parametrize("value", ["maybe", "2x", "nope"])
def test_bool_answer_must_be_a_bool(render: Render, question: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{question}.*true or false"):
        render("out", **{question: value})


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("no", False), ("true", True)])
def test_bool_answer_spellings(render: Render, value: str, expected: bool) -> None:
    assert support.read_answers(render("out", soft_delete=value))["soft_delete"] is expected


def test_blank_project_name_is_rejected(render: Render) -> None:
    with pytest.raises(ValueError, match="project_name"):
        render("out", project_name="   ", package_name="acme")


def test_bad_answer_fails_the_cli(settings: support.Settings, tmp_path: Path) -> None:
    cmd = support.copier_cli(settings, tmp_path / "out", "-d", "package_name=1abc")
    proc = support.run(cmd, tmp_path, settings.env, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "not a valid package name" in proc.stdout


@pytest.mark.parametrize(
    ("project_name", "package_name"),
    [
        ("My Shop-API 2", "my_shop_api_2"),
        ("  Billing  ", "billing"),
        ("3D Printer Farm", "_3d_printer_farm"),
    ],
)
def test_package_name_is_derived_from_project_name(
    render: Render, project_name: str, package_name: str
) -> None:
    dst = render("out", project_name=project_name)
    assert support.read_answers(dst).get("package_name") == package_name
    assert (dst / "src" / package_name).is_dir(), sorted(p.name for p in dst.iterdir())
