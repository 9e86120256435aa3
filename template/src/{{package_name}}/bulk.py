"""Bulk writes at driver speed, behind a typed, row-oriented API.

* `insert_rows`: one `INSERT ... SELECT * FROM unnest($1::uuid[], $2::text[], ...)` per
  batch: every column travels as one array parameter, so a batch is one statement and one
  round trip, faster than executemany of single-row INSERTs.
* `upsert_rows`: the same statement with `ON CONFLICT (...) DO UPDATE`, returning the rows.
* `copy_rows`: PostgreSQL COPY through asyncpg's `copy_records_to_table`, reached through
  the session's own connection (same transaction), for the largest loads.

Callers pass mappings of column name to value. Python-side column defaults (UUIDv7 keys)
are filled in here, since neither INSERT ... SELECT nor COPY runs them; server defaults
(`created_at`, `updated_at`) are left to the database.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Column, ColumnElement, Select, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

Row = Mapping[str, Any]
BATCH_SIZE = 10_000


def batches(rows: Sequence[Row], size: int = BATCH_SIZE) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def with_python_defaults(table: Table, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Copies of `rows` with the Python-side defaults (e.g. `uuid7` keys) filled in."""
    defaulted = [
        column
        for column in table.columns
        if column.default is not None and (column.default.is_callable or column.default.is_scalar)
    ]
    completed = []
    for row in rows:
        full = dict(row)
        for column in defaulted:
            if column.key not in full:
                default = cast(Any, column.default)
                full[column.key] = default.arg(None) if default.is_callable else default.arg
        completed.append(full)
    return completed


def _columns(table: Table, rows: Sequence[Row]) -> list[Column[Any]]:
    return [table.c[name] for name in rows[0]]


def unnest_select(columns: Sequence[Column[Any]], rows: Sequence[Row]) -> Select[Any]:
    """`SELECT * FROM unnest(:a, :b, ...)` with one typed array parameter per column."""
    arrays = [
        bindparam(
            f"{column.key}_values", [row[column.key] for row in rows], type_=ARRAY(column.type)
        )
        for column in columns
    ]
    unnested = func.unnest(*arrays).table_valued(*(c.key for c in columns)).render_derived()
    return select(*(unnested.c[c.key] for c in columns))


def insert_statement(table: Table, rows: Sequence[Row]) -> Insert:
    """`INSERT INTO table (...) SELECT ... FROM unnest(...)` for one batch of complete rows."""
    columns = _columns(table, rows)
    return pg_insert(table).from_select(columns, unnest_select(columns, rows))


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Row]) -> int:
    """Insert `rows` (defaults filled in) in batches of one statement each; returns the count."""
    for batch in batches(with_python_defaults(table, rows)):
        await session.execute(insert_statement(table, batch))
    return len(rows)


def upsert_statement(
    table: Table,
    rows: Sequence[Row],
    *,
    conflict_columns: Sequence[str],
    conflict_where: ColumnElement[bool] | None = None,
    update_columns: Sequence[str],
) -> Insert:
    """`INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO UPDATE`, bumping `updated_at`.

    `rows` must not repeat a conflict key: PostgreSQL refuses to update a row twice in one
    statement. `dedupe()` keeps the last occurrence of each key.
    """
    stmt = insert_statement(table, rows)
    updates: dict[str, Any] = {name: stmt.excluded[name] for name in update_columns}
    if "updated_at" in table.c:
        updates["updated_at"] = func.statement_timestamp()
    return stmt.on_conflict_do_update(
        index_elements=[table.c[name] for name in conflict_columns],
        index_where=conflict_where,
        set_=updates,
    )


async def upsert_returning[M](
    session: AsyncSession,
    model: type[M],
    rows: Sequence[Row],
    *,
    conflict_columns: Sequence[str],
    conflict_where: ColumnElement[bool] | None = None,
    update_columns: Sequence[str],
) -> list[M]:
    """Upsert `rows` in batches and return the resulting ORM objects, refreshed.

    Rows repeating a conflict key are collapsed first (the last one wins).
    """
    table = table_of(model)
    complete = with_python_defaults(table, dedupe(rows, conflict_columns))
    upserted: list[M] = []
    for batch in batches(complete):
        stmt = upsert_statement(
            table,
            batch,
            conflict_columns=conflict_columns,
            conflict_where=conflict_where,
            update_columns=update_columns,
        ).returning(*table.c)
        result = await session.scalars(
            select(model).from_statement(stmt), execution_options={"populate_existing": True}
        )
        upserted.extend(result)
    return upserted


def dedupe(rows: Sequence[Row], key: Sequence[str]) -> list[Row]:
    """The last row for each value of `key`, in first-seen order."""
    unique: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        unique[tuple(row[name] for name in key)] = row
    return list(unique.values())


async def copy_rows(session: AsyncSession, table: Table, rows: Sequence[Row]) -> int:
    """COPY `rows` into `table` on the session's connection, inside its transaction."""
    if not rows:
        return 0
    complete = with_python_defaults(table, rows)
    names = list(complete[0])
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection  # the asyncpg connection behind SQLAlchemy's adapter
    assert driver is not None
    await driver.copy_records_to_table(
        table.name,
        schema_name=table.schema,
        columns=names,
        records=[tuple(row[name] for name in names) for row in complete],
    )
    return len(complete)


def table_of(model: type[Any]) -> Table:
    """The `Table` behind a mapped class."""
    return cast(Table, model.__table__)
