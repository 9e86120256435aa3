"""`copier copy --defaults SRC DST` works as a user types it: no --trust, no prompt."""

from __future__ import annotations

import subprocess
from pathlib import Path

import harness as h


def test_copy_with_defaults_needs_no_trust(settings: h.Settings, tmp_path: Path) -> None:
    dst = tmp_path / "project"
    cmd = h.copier_cli(settings.template_src, dst, settings.template_ref)
    assert "--trust" not in cmd
    assert "--UNSAFE" not in cmd
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        env=settings.env or None,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "trust" not in output.lower(), output
    answers = h.read_answers(dst)
    assert answers, "no .copier-answers.yml rendered"
    questions = h.load_questions(settings.template_src)
    missing = sorted(set(questions) - set(answers))
    assert not missing, f"questions missing from .copier-answers.yml: {missing}"
    assert (dst / "README.md").is_file()
    assert (dst / "pyproject.toml").is_file()
    assert (dst / ".python-version").read_text().strip() == str(answers["python_version"])
