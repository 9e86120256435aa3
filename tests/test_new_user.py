"""A new user's first minutes: `copier copy --defaults` (no --trust) into a clean directory,
then the install and test commands that the generated README gives, with neither
TEST_DATABASE_URL nor DATABASE_URL set, so the test suite provisions its own PostgreSQL."""

from __future__ import annotations

import pytest

import harness as h

pytestmark = pytest.mark.new_user


@pytest.mark.parametrize("step", h.NEW_USER_STEPS)
def test_new_user(step: str, matrix: h.Runner) -> None:
    h.report(matrix.outcome(h.NewUserJob.id), step, "")
