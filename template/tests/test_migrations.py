"""The field's standard migration checks (pytest-alembic), on a database of their own:
a single head, upgrade from empty, up/down consistency, and models == DDL (`alembic check`)."""

from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]
