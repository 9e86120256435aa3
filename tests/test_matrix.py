"""The variant matrix: every variant is rendered, hygiene-checked, installed, formatted,
linted, type-checked and tested. One test item per (variant, step); the steps themselves run
in the background runner (see conftest.py), these items report on them."""

from __future__ import annotations

import pytest

import harness as h

pytestmark = pytest.mark.matrix


def test_variant(
    variant: h.Variant, step: str, database_problem: str | None, matrix: h.Runner
) -> None:
    if database_problem:
        pytest.fail(database_problem, pytrace=False)
    h.report(matrix.outcome(variant.id), step, f"[{variant.id}] ")
