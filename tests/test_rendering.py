"""Every variant renders as asked and reads as hand-written: the answers recorded as given, no
Jinja leftovers, no stray whitespace or blank runs, files that parse, no HTTP layer with
``api=none``. And ``copier copy --defaults SRC DST`` works as a user types it."""

from __future__ import annotations

import io
import json
import os
import re
import tokenize
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import support

_JINJA_RE = re.compile(r"(?<!\$)\{\{|\{%|\{#")
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_EMPTY_OK = {"__init__.py", "py.typed", ".gitkeep", ".keep"}
_FASTAPI_RE = re.compile(r"^\s*(?:from|import)\s+fastapi\b|\"fastapi\b", re.MULTILINE)


def iter_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def blank_after_opener(source: str) -> list[int]:
    """Line numbers (1-based) of blank lines right after a def/class header. Token-based, so
    that Python 3.11 judges sources written for a newer Python (PEP 695 generics)."""
    lines = source.splitlines()
    found: list[int] = []
    opener, at_line_start, last = False, True, None  # last significant token of the line
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
                continue
            if tok.type == tokenize.NEWLINE:
                row = tok.start[0]  # where the logical line ends
                header = opener and last is not None and last.string == ":"
                if header and row < len(lines) and not lines[row].strip():
                    found.append(row + 1)
                opener, at_line_start, last = False, True, None
                continue
            if at_line_start:
                opener = tok.type == tokenize.NAME and tok.string in ("def", "class", "async")
                at_line_start = False
            elif opener and last is not None and last.string == "async":
                opener = tok.string == "def"
            last = tok
    except (tokenize.TokenError, SyntaxError):
        return found  # ruff reports syntax errors
    return found


def check_text_file(path: Path, rel: str, text: str) -> list[str]:
    if text == "":
        return [] if path.name in _EMPTY_OK else [f"{rel}: empty file (a conditional file?)"]
    if not text.strip():
        return [f"{rel}: file holds only whitespace"]
    problems = [f"{rel}: carriage return (CRLF line endings?)"] if "\r" in text else []
    lines = text.split("\n")
    blank_run = 0
    for number, line in enumerate(lines, start=1):
        if match := _JINJA_RE.search(line):
            problems.append(f"{rel}:{number}: Jinja leftover {match.group()!r}: {line.strip()}")
        if line != line.rstrip(" \t"):
            problems.append(f"{rel}:{number}: trailing whitespace")
        blank_run = 0 if line.strip() else blank_run + 1
        if blank_run == 3 and number < len(lines):
            problems.append(f"{rel}:{number - 2}: 3 or more consecutive blank lines")
    if not text.endswith("\n"):
        problems.append(f"{rel}: no newline at end of file")
    elif text.endswith("\n\n"):
        problems.append(f"{rel}: blank line(s) at end of file")
    try:
        if path.suffix in (".py", ".pyi"):
            for number in blank_after_opener(text):
                problems.append(f"{rel}:{number}: blank line right after a def/class line")
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix in (".yml", ".yaml"):
            list(yaml.safe_load_all(text))
        elif path.suffix == ".json":
            json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError) as exc:
        problems.append(f"{rel}: does not parse as {path.suffix or path.name}: {exc}")
    return problems


def check_tree(root: Path) -> list[str]:
    """Hygiene problems of a rendered project, as 'path:line: what' strings."""
    problems = [
        f"{(Path(dirpath) / name).relative_to(root)}/: Jinja leftover in a directory name"
        for dirpath, dirnames, _ in os.walk(root)
        for name in dirnames
        if _JINJA_RE.search(name)
    ]
    for path in iter_files(root):
        rel = str(path.relative_to(root))
        if _JINJA_RE.search(path.name):
            problems.append(f"{rel}: Jinja leftover in a file name")
        if path.name.endswith(".jinja"):
            problems.append(f"{rel}: template suffix left in a file name")
        data = b"" if path.is_symlink() else path.read_bytes()
        if path.is_symlink() or b"\0" in data[:8192]:
            continue  # binary
        try:
            problems.extend(check_text_file(path, rel, data.decode("utf-8")))
        except UnicodeDecodeError:
            problems.append(f"{rel}: not UTF-8")
    return problems


# --- every variant ------------------------------------------------------------------------------


def test_answers_are_recorded_as_given(variant: support.Variant, rendered: Path) -> None:
    answers = support.read_answers(rendered)
    wrong = {k: (v, answers.get(k)) for k, v in variant.answers.items() if answers.get(k) != v}
    assert not wrong, f"answers not recorded as given (given, recorded): {wrong}"


def test_rendered_text_is_clean(variant: support.Variant, rendered: Path) -> None:
    problems = check_tree(rendered)
    if variant.answers.get("api") == "none":
        problems += [
            f"{path.relative_to(rendered)}: mentions fastapi although api=none"
            for path in [*rendered.rglob("*.py"), rendered / "pyproject.toml"]
            if _FASTAPI_RE.search(path.read_text())
        ]
    python = str(support.read_answers(rendered)["python_version"])
    if (rendered / ".python-version").read_text().strip() != python:
        problems.append(f".python-version: does not name {python}, the answer")
    assert not problems, f"{len(problems)} hygiene problem(s):\n" + "\n".join(problems[:80])


# --- the command line ---------------------------------------------------------------------------


def test_copy_with_defaults_needs_no_trust(settings: support.Settings, tmp_path: Path) -> None:
    dst = tmp_path / "project"
    cmd = support.copier_cli(settings, dst)
    assert "--trust" not in cmd
    assert "--UNSAFE" not in cmd
    output = support.run(cmd, tmp_path, settings.env).stdout
    assert "trust" not in output.lower(), output
    answers = support.read_answers(dst)
    missing = sorted(set(support.load_questions(settings.template_src)) - set(answers))
    assert not missing, f"questions missing from .copier-answers.yml: {missing}"
    assert (dst / "README.md").is_file()
    assert (dst / "pyproject.toml").is_file()
    assert (dst / ".python-version").read_text().strip() == str(answers["python_version"])


# --- the hygiene rules themselves ---------------------------------------------------------------

HYGIENE_CASES = [
    ("a.py", "x = 1\n", []),
    ("a.py", "x = '{{ package_name }}'\n", ["Jinja leftover"]),
    ("ci.yml", "run: echo ${{ matrix.python }}\n", []),
    ("a.md", "{% if x %}\n", ["Jinja leftover"]),
    ("a.md", "a\n\n\n\nb\n", ["3 or more consecutive blank lines"]),
    ("a.md", "a\n\n\nb\n", []),
    ("a.md", "a  \n", ["trailing whitespace"]),
    ("a.md", "a", ["no newline at end of file"]),
    ("a.md", "a\n\n", ["blank line(s) at end of file"]),
    ("a.md", "\n\n", ["only whitespace"]),
    ("a.md", "", ["empty file"]),
    ("__init__.py", "", []),
    ("a.py", "def f():\n\n    return 1\n", ["blank line right after a def/class"]),
    ("a.py", "class A:\n\n    x = 1\n", ["blank line right after a def/class"]),
    ("a.py", "def f(\n    a: int,\n) -> int:\n\n    return a\n", ["def/class"]),
    ("a.py", "def f():\n    # c\n\n    return 1\n", []),
    ("a.py", "class A:\n    x = 1\n\n    def f(self):\n        pass\n", []),
    ("a.py", "def f(:\n", []),
    ("a.py", "class A[M: int]:\n\n    x: M\n", ["def/class"]),
    ("a.py", "async def f():\n\n    pass\n", ["def/class"]),
    ("a.py", "def f(): pass\n\nx = 1\n", []),
    ("a.py", "@d\ndef f():  # c\n\n    pass\n", ["def/class"]),
    ("a.toml", "[x\n", ["does not parse"]),
    ("a.yml", "a: [\n", ["does not parse"]),
]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    HYGIENE_CASES,
    ids=[f"{n}-{case[0]}" for n, case in enumerate(HYGIENE_CASES)],
)
def test_hygiene_rules(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = tmp_path / name
    path.write_text(text)
    problems = check_text_file(path, name, text)
    assert len(problems) == len(expected), problems
    for problem, want in zip(problems, expected, strict=True):
        assert want in problem


def test_hygiene_tree_names(tmp_path: Path) -> None:
    (tmp_path / "{{ package_name }}").mkdir()
    (tmp_path / "{{ package_name }}" / "x.py.jinja").write_text("x = 1\n")
    problems = check_tree(tmp_path)
    assert any("directory name" in p for p in problems)
    assert any("template suffix" in p for p in problems)
