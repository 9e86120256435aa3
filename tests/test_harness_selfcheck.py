"""Quick checks of the harness itself (no rendering): the matrix, parsers, hygiene rules."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import harness as h


@pytest.fixture(scope="module")
def questions(settings: h.Settings) -> dict[str, dict[str, object]]:
    return h.load_questions(settings.template_src)


def test_matrix_is_the_full_product_plus_bare(questions: dict[str, dict[str, object]]) -> None:
    matrix = h.build_matrix(questions)
    assert len(matrix) == 18
    assert len({v.id for v in matrix}) == 18
    product = [v for v in matrix if "examples" not in v.answers]
    combos = {tuple(v.answers[a] for a in h.MATRIX_AXES) for v in product}
    assert combos == set(itertools.product(*h.MATRIX_AXES.values()))
    bare = [v for v in matrix if v.answers.get("examples") is False]
    assert [(v.answers["api"], v.answers["python_version"]) for v in bare] == [
        ("fastapi", "3.13"),
        ("none", "3.12"),
    ]
    # Every family (examples x api) also runs its suite on the self-provisioned PostgreSQL.
    families = {(v.answers.get("examples", True), v.answers["api"]) for v in matrix if v.embedded}
    assert families == set(itertools.product([True, False], ["fastapi", "none"]))
    pythons = [v.answers["python_version"] for v in product]
    assert pythons.count("3.13") == 8
    assert pythons.count("3.12") == 8
    for axis, values in h.MATRIX_AXES.items():  # both Pythons meet every value of every axis
        for value in values:
            seen = {v.answers["python_version"] for v in product if v.answers[axis] == value}
            assert seen == {"3.12", "3.13"}, (axis, value)


def test_matrix_values_are_copier_choices(questions: dict[str, dict[str, object]]) -> None:
    for axis, values in h.MATRIX_AXES.items():
        question = questions[axis]
        if question.get("type") == "bool":
            continue
        assert set(values) <= set(h.choice_values(question)), axis
    assert questions["examples"].get("type") == "bool"
    assert questions["soft_delete"].get("type") == "bool"


def test_select_variants(questions: dict[str, dict[str, object]]) -> None:
    assert [v.id for v in h.select_variants("default", questions)] == ["defaults"]
    assert h.select_variants("default", questions)[0].answers == {}
    one = h.build_matrix(questions)[3].id
    assert [v.id for v in h.select_variants(one, questions)] == [one]
    with pytest.raises(ValueError, match="unknown variant"):
        h.select_variants("nope", questions)


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        (
            "x\n====== 12 passed, 1 skipped, 2 warnings in 3.41s ======\n",
            {"passed": 12, "skipped": 1, "warnings": 2},
        ),
        ("1 failed, 3 passed, 1 error in 0.5s\n", {"failed": 1, "passed": 3, "errors": 1}),
        ("=== 2 passed, 1 xfailed in 1.00s (0:00:01) ===\n", {"passed": 2, "xfailed": 1}),
        ("===== no tests ran in 0.01s =====\n", {}),
        ("nothing here\n", {}),
    ],
)
def test_parse_pytest_summary(output: str, counts: dict[str, int]) -> None:
    assert h.parse_pytest_summary(output) == counts


def test_readme_commands() -> None:
    readme = """# X

```bash
# install
uv sync
$ uv run pytest -q
uv run alembic \\
  upgrade head
```

```python
uv sync --not-this-one
```
"""
    commands = h.readme_commands(readme)
    assert commands == ["uv sync", "uv run pytest -q", "uv run alembic upgrade head"]
    assert h.pick_command(commands, "uv run pytest") == "uv run pytest -q"
    assert h.pick_command(commands, "uv sync") == "uv sync"
    assert h.pick_command(commands, "make test") is None


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
    problems = h.check_text_file(path, name, text)
    assert len(problems) == len(expected), problems
    for problem, want in zip(problems, expected, strict=True):
        assert want in problem


def test_hygiene_tree_names(tmp_path: Path) -> None:
    (tmp_path / "{{ package_name }}").mkdir()
    (tmp_path / "{{ package_name }}" / "x.py.jinja").write_text("x = 1\n")
    problems = h.check_tree(tmp_path)
    assert any("directory name" in p for p in problems)
    assert any("template suffix" in p for p in problems)
