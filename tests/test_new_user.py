"""A new user's first minutes: `copier copy --defaults` (no --trust) into a clean directory,
then the install and test commands that the generated README gives, with neither
TEST_DATABASE_URL nor DATABASE_URL set, so the test suite provisions its own PostgreSQL."""

from __future__ import annotations

import pytest

import harness as h

pytestmark = pytest.mark.new_user


@pytest.mark.parametrize("step", h.NEW_USER_STEPS)
def test_new_user(step: str, matrix: h.Runner) -> None:
    outcome = matrix.outcome(h.NewUserJob.id)
    if "harness" in outcome.steps:
        pytest.fail(f"harness error:\n{outcome.steps['harness'].message}")
    result = outcome.steps.get(step)
    if result is None:
        pytest.fail(f"{step}: did not run ({'; '.join(outcome.notes)})")
    if result.status == "skipped":
        pytest.skip(f"{step}: {result.message}")
    if result.status == "failed":
        where = f"\nlog: {result.log}" if result.log else ""
        pytest.fail(f"{step}: {result.message}{where}", pytrace=False)
