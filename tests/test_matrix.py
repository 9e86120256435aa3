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
    outcome = matrix.outcome(variant.id)
    if "harness" in outcome.steps:
        pytest.fail(f"[{variant.id}] harness error:\n{outcome.steps['harness'].message}")
    result = outcome.steps.get(step)
    if result is None:
        pytest.fail(f"[{variant.id}] {step}: did not run ({'; '.join(outcome.notes)})")
    if result.status == "skipped":
        pytest.skip(f"[{variant.id}] {step}: {result.message}")
    if result.status == "failed":
        where = f"\nlog: {result.log}" if result.log else ""
        pytest.fail(f"[{variant.id}] {step}: {result.message}{where}", pytrace=False)
