"""`copier update` can never change a locked answer (primary_key, soft_delete): not with
`--data`, not at the interactive prompt, not through an edited answers file. A refusal happens
before any file of the project is touched, and the user's edits survive.

The scratch template is a git repository of the tree under test with one more commit on top
(no tags, like a clone of this repository); each project is copied from the first commit,
edited and committed by its user, then updated to the second.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest
import yaml

import support
from support import commit_all, commit_template_change, git, status, template_repository

pytestmark = pytest.mark.update

USER_README = "Our deployment notes (user edit).\n"
POOL_DEFAULT = re.compile(r"(database_pool_size: int = )(\d+)")
README_ANCHOR = "## Configuration\n"
# Each locked question: (the project's answer, the other one, the start of its prompt).
LOCKED = {
    "primary_key": ("uuid", "dual_id", "Primary key strategy"),
    "soft_delete": (True, False, "Soft delete"),
}


@dataclass
class Project:
    path: Path
    package: str
    head: str
    edits: dict[str, str]  # {path: text} of the user's committed edits


@pytest.fixture(scope="module")
def env(settings: support.Settings) -> dict[str, str]:
    return {**settings.env, "TERM": "xterm", "COLUMNS": "200", "LINES": "50"}


@pytest.fixture(scope="module")
def template(
    settings: support.Settings, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The template under test as an untagged git repository; returns (path, first commit)."""
    dst = template_repository(settings, tmp_path_factory.mktemp("locked") / "template")
    first = git(dst, "rev-parse", "HEAD").strip()
    commit_template_change(dst, env)
    return dst, first


@pytest.fixture
def project(template: tuple[Path, str], env: dict[str, str], tmp_path: Path) -> Project:
    src, first = template
    path = tmp_path / "project"
    copier(["copy", "--defaults", "--vcs-ref", first, str(src), str(path)], path.parent, env)
    git(path, "init", "-q", env=env)
    commit_all(path, "copier copy", env)
    package = str(support.read_answers(path)["package_name"])
    config = path / "src" / package / "config.py"
    readme = path / "README.md"
    edits = {
        str(config.relative_to(path)): POOL_DEFAULT.sub(r"\g<1>7", config.read_text(), count=1),
        "README.md": readme.read_text().replace(
            README_ANCHOR, f"## Deployment\n\n{USER_README}\n{README_ANCHOR}", 1
        ),
    }
    assert edits[str(config.relative_to(path))] != config.read_text(), "no pool size default"
    for rel, text in edits.items():
        (path / rel).write_text(text)
    commit_all(path, "user edits", env)
    return Project(path, package, git(path, "rev-parse", "HEAD").strip(), edits)


def copier(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "copier", *args]
    return support.run(cmd, cwd, env, check=args[0] == "copy", stderr_apart=True)


def assert_untouched(project: Project, question: str, value: object) -> None:
    assert git(project.path, "rev-parse", "HEAD").strip() == project.head
    assert support.read_answers(project.path)[question] == value
    for rel, text in project.edits.items():
        assert (project.path / rel).read_text() == text, f"{rel}: the user's edit was lost"


def other(question: str) -> object:
    return LOCKED[question][1]


@pytest.mark.parametrize("question", LOCKED)
def test_data_cannot_change_a_locked_answer(
    project: Project, env: dict[str, str], question: str
) -> None:
    value = str(other(question)).lower()
    proc = copier(["update", "--defaults", "--data", f"{question}={value}"], project.path, env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert f"{question} is chosen once" in proc.stderr, proc.stderr
    assert not status(project.path), f"the refused update touched:\n{status(project.path)}"
    assert_untouched(project, question, LOCKED[question][0])


@pytest.mark.parametrize("question", LOCKED)
def test_an_edited_answers_file_cannot_change_a_locked_answer(
    project: Project, env: dict[str, str], question: str
) -> None:
    answers_file = project.path / ".copier-answers.yml"
    answers = yaml.safe_load(answers_file.read_text())
    answers[question] = other(question)
    answers_file.write_text(yaml.safe_dump(answers, sort_keys=False))
    commit_all(project.path, f"user edits {question} in the answers file", env)
    project.head = git(project.path, "rev-parse", "HEAD").strip()

    proc = copier(["update", "--defaults"], project.path, env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert f"{question} is chosen once" in proc.stderr, proc.stderr
    assert not status(project.path), f"the refused update touched:\n{status(project.path)}"
    assert_untouched(project, question, other(question))


@pytest.mark.parametrize("question", LOCKED)
def test_the_interactive_prompt_cannot_change_a_locked_answer(
    project: Project, env: dict[str, str], question: str
) -> None:
    """Enter through every question, but at the locked one move to the other choice."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "copier", "update"],
        cwd=str(project.path),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    prompt = LOCKED[question][2]
    child.logfile_read = screen = io.StringIO()
    try:
        while child.expect(["🎤", pexpect.EOF]) == 0:
            child.expect("\r")  # the rest of the prompt's first line
            if prompt not in (child.before or ""):
                child.send("\r")  # the default
            elif child.expect([r"Use arrow keys", r"\(Y/n\)"]) == 0:  # a select is drawn
                child.send("\x1b[B")  # arrow down: the other choice
                child.expect(r"\x1b\[0;7m")  # redrawn with the highlight moved
                child.send("\r")
            else:  # a yes/no question
                child.send("n")
            child.expect(r"\x1b\[\?2004l")  # the prompt is answered and closed
        child.close()
    finally:
        if child.isalive():
            child.terminate(force=True)
    output = screen.getvalue()
    assert prompt in output, f"copier never asked {question}:\n{output[-3000:]}"
    assert f"{question} is chosen once" in output, "the disabled choice does not say why"
    assert_untouched_by_answer(project, question, output)


def assert_untouched_by_answer(project: Project, question: str, output: str) -> None:
    """The update went ahead with the locked answer kept: only the template's own change
    (a README line) and the answers file's `_commit` moved."""
    answers = support.read_answers(project.path)
    assert answers[question] == LOCKED[question][0], f"{question} changed:\n{output[-3000:]}"
    changed = sorted(line[3:] for line in status(project.path).splitlines())
    assert set(changed) <= {".copier-answers.yml", "README.md"}, changed
    for rel, text in project.edits.items():
        if rel != "README.md":
            assert (project.path / rel).read_text() == text, f"{rel}: the user's edit was lost"
    assert USER_README in (project.path / "README.md").read_text(), "the user's README edit"


if os.name == "nt":  # pragma: no cover - pexpect.spawn needs a POSIX pseudo-terminal
    pytestmark = [pytestmark, pytest.mark.skip("needs a POSIX pseudo-terminal")]
