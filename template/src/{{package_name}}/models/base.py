"""Declarative base, naming convention and the timestamp mixin."""

from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, func
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime

# Constraint and index names, so migrations can refer to them and they stay stable.
NAMING_CONVENTION = {
    "ix": "%(column_0_label)s_idx",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012
    # Server-generated values (created_at, updated_at) come back through RETURNING, so
    # reading them after a flush needs no implicit IO (no MissingGreenlet under asyncio).
    __mapper_args__: Any = {"eager_defaults": True}  # noqa: RUF012


class TimestampMixin:
    """`created_at`/`updated_at`, set by the database, timezone-aware.

    `updated_at` uses `statement_timestamp()` so it moves on every UPDATE statement (ORM
    flush or bulk `update()`), even inside a long transaction where `now()` stands still.
    """

    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), onupdate=func.statement_timestamp()
    )
