"""The support code reads pytest's summary and a README's shell blocks as a person would."""

from __future__ import annotations

import pytest

import support


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
    assert support.parse_pytest_summary(output) == counts


def test_readme_blocks() -> None:
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
    assert [c for block in support.readme_blocks(readme) for c in block] == [
        "uv sync",
        "uv run pytest -q",
        "uv run alembic upgrade head",
    ]
