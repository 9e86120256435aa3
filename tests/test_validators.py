"""copier.yml's validators reject bad answers with a message, and derive good defaults."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import copier
import pytest

import harness as h


def render(settings: h.Settings, dst: Path, **data: Any) -> None:
    copier.run_copy(
        str(settings.template_src),
        str(dst),
        data=data,
        defaults=True,
        unsafe=False,
        vcs_ref=settings.template_ref,
        quiet=True,
    )


@pytest.mark.parametrize(
    ("package_name", "reason"),
    [
        ("1abc", "not a valid package name"),
        ("class", "keyword"),
        ("my-pkg", "not a valid package name"),
        ("MyPkg", "not a valid package name"),
        ("sqlalchemy", "shadow"),
    ],
)
def test_bad_package_name_is_rejected(
    settings: h.Settings, tmp_path: Path, package_name: str, reason: str
) -> None:
    dst = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(package_name)) as excinfo:
        render(settings, dst, package_name=package_name)
    message = str(excinfo.value)
    assert "package_name" in message
    assert reason in message, message
    assert not dst.exists() or not any(dst.iterdir()), "files were rendered anyway"


def test_blank_project_name_is_rejected(settings: h.Settings, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="project_name"):
        render(settings, tmp_path / "out", project_name="   ", package_name="acme")


def test_bad_answer_fails_the_cli(settings: h.Settings, tmp_path: Path) -> None:
    cmd = h.copier_cli(settings.template_src, tmp_path / "out", settings.template_ref)
    cmd[cmd.index("--defaults") + 1 : cmd.index("--defaults") + 1] = ["-d", "package_name=1abc"]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "not a valid package name" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("project_name", "package_name"),
    [
        ("My Shop-API 2", "my_shop_api_2"),
        ("  Billing  ", "billing"),
        ("3D Printer Farm", "_3d_printer_farm"),
    ],
)
def test_package_name_is_derived_from_project_name(
    settings: h.Settings, tmp_path: Path, project_name: str, package_name: str
) -> None:
    dst = tmp_path / "out"
    render(settings, dst, project_name=project_name)
    assert h.read_answers(dst).get("package_name") == package_name
    assert (dst / "src" / package_name).is_dir(), sorted(p.name for p in dst.iterdir())
