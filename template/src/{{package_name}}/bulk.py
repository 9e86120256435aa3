"""Bulk writes at driver speed, behind a typed, row-oriented API.

* `insert_rows`: one `INSERT ... SELECT * FROM unnest($1::uuid[], $2::varchar[], ...)` per
  batch: every column travels as one array parameter, so a batch is one statement and one
  round trip, faster than executemany of single-row INSERTs. The arrays carry the column
  types without length or precision: an explicit cast to `varchar(100)` would truncate
  silently, while the INSERT's own assignment to the column raises, as the ORM path does.
* `upsert_rows` / `upsert_returning`: the same statement with `ON CONFLICT (...) DO UPDATE`.
* `copy_rows`: PostgreSQL COPY through asyncpg's `copy_records_to_table`, reached through
  the session's own connection (same transaction), for the largest loads.

Callers pass mappings of column name to value, all with the same keys. Python-side column
defaults (UUIDv7 keys) are filled in here, since neither INSERT ... SELECT nor COPY runs
them; server defaults (`created_at`, `updated_at`) are left to the database. Errors are
the project's own (`db.domain_errors`): `DuplicateError`, `InvalidDataError`, whichever path.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Select, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Numeric, String, TypeEngine

from .db import domain_errors
from .errors import ConcurrentModificationError

Row = Mapping[str, Any]
BATCH_SIZE = 10_000


@dataclass(frozen=True)
class OnConflict:
    """The upsert's conflict target and what to update when a row already exists.

    `where` must repeat the predicate of a partial unique index used as the target.
    """

    columns: Sequence[str]
    update: Sequence[str]
    where: ColumnElement[bool] | None = None
    # The unique index's expressions when it is not on the plain columns, e.g.
    # `[func.lower(User.email)]`; rows are still deduplicated on the exact `columns`.
    target: Sequence[ColumnElement[Any]] | None = None

    def index_elements(self, table: Table) -> Sequence[Any]:
        """The ON CONFLICT target: `target`, else `columns` of `table`."""
        return self.target or [table.c[name] for name in self.columns]


def _python_defaults(table: Table, present: Sequence[str]) -> list[tuple[str, Callable[[], Any]]]:
    """Name and value factory of each column missing from the rows that has a Python default."""
    factories: list[tuple[str, Callable[[], Any]]] = []
    for column in table.columns:
        default = cast(Any, column.default)
        if column.key in present or default is None:
            continue
        if default.is_callable:  # e.g. uuid7; SQLAlchemy wraps it to take an exec context
            factories.append((column.key, partial(default.arg, None)))
        elif default.is_scalar:
            factories.append((column.key, partial(_constant, default.arg)))
    return factories


def _constant(value: Any) -> Any:
    return value


def as_columns(table: Table, rows: Sequence[Row]) -> tuple[list[str], list[list[Any]]]:
    """Column names, and one list of values per column, Python-side defaults filled in.

    Every row must have the keys of the first one. Columns, not rows, are what both the
    unnest arrays and the defaults need, and building them is cheap list comprehensions.
    """
    names = list(rows[0])
    columns = [[row[name] for row in rows] for name in names]
    for name, make in _python_defaults(table, names):
        names.append(name)
        columns.append([make() for _ in range(len(rows))])
    return names, columns


def unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """The column type without its length or precision (`varchar`, `numeric`): casting
    to it never alters a value, so the column's own assignment rules decide."""
    if isinstance(type_, String):
        text = type_.copy()
        text.length = None
        return text
    if isinstance(type_, Numeric):
        number = type_.copy()
        number.precision = number.scale = None
        return number
    return type_


def unnest_select(
    table: Table, names: Sequence[str], columns: Sequence[Sequence[Any]]
) -> Select[Any]:
    """`SELECT * FROM unnest(:a, :b, ...)`: one typed array parameter per column."""
    arrays = [
        bindparam(f"{name}_values", list(values), type_=ARRAY(unbounded(table.c[name].type)))
        for name, values in zip(names, columns, strict=True)
    ]
    unnested = func.unnest(*arrays).table_valued(*names).render_derived()
    return select(*(unnested.c[name] for name in names))


def insert_statement(
    table: Table, names: Sequence[str], columns: Sequence[Sequence[Any]]
) -> Insert:
    """`INSERT INTO table (...) SELECT ... FROM unnest(...)` for one batch."""
    return pg_insert(table).from_select(list(names), unnest_select(table, names, columns))


def column_batches(
    columns: Sequence[Sequence[Any]], size: int = BATCH_SIZE
) -> Iterator[list[Sequence[Any]]]:
    """The same rows of every column, `size` rows at a time."""
    for start in range(0, len(columns[0]), size):
        yield [column[start : start + size] for column in columns]


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Row]) -> int:
    """Insert `rows` (defaults filled in), one statement per batch; returns the count."""
    if not rows:
        return 0
    names, columns = as_columns(table, rows)
    for batch in column_batches(columns):
        with domain_errors():
            await session.execute(insert_statement(table, names, batch))
    return len(rows)


def upsert_statement(
    table: Table,
    names: Sequence[str],
    columns: Sequence[Sequence[Any]],
    on_conflict: OnConflict,
) -> Insert:
    """`INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO UPDATE`, bumping `updated_at`.

    `rows` must not repeat a conflict key: PostgreSQL refuses to update a row twice in one
    statement. `dedupe()` keeps the last occurrence of each key.
    """
    stmt = insert_statement(table, names, columns)
    updates: dict[str, Any] = {name: stmt.excluded[name] for name in on_conflict.update}
    if "updated_at" in table.c:
        updates["updated_at"] = func.statement_timestamp()
    return stmt.on_conflict_do_update(
        index_elements=on_conflict.index_elements(table),
        index_where=on_conflict.where,
        set_=updates,
    )


def upsert_statements(
    table: Table,
    rows: Sequence[Row],
    on_conflict: OnConflict,
) -> Iterator[Insert]:
    """One upsert statement per batch; rows repeating a conflict key collapse (last wins)."""
    if not rows:
        return
    names, columns = as_columns(table, dedupe(rows, on_conflict.columns))
    for batch in column_batches(columns):
        yield upsert_statement(table, names, batch, on_conflict)


async def upsert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Row],
    on_conflict: OnConflict,
) -> int:
    """Upsert without loading objects back (the fast path); returns the rows written."""
    written = 0
    for stmt in upsert_statements(table, rows, on_conflict):
        with domain_errors():
            result = cast(CursorResult[Any], await session.execute(stmt))
        written += result.rowcount
    return written


async def upsert_returning[M](
    session: AsyncSession,
    model: type[M],
    rows: Sequence[Row],
    on_conflict: OnConflict,
) -> list[M]:
    """Upsert and return the resulting ORM objects, refreshed in the identity map."""
    table = table_of(model)
    upserted: list[M] = []
    for stmt in upsert_statements(table, rows, on_conflict):
        orm_stmt = select(model).from_statement(stmt.returning(*table.c))
        with domain_errors():
            result = await session.scalars(orm_stmt, execution_options={"populate_existing": True})
        upserted.extend(result)
    return upserted


async def create_or_update[M](
    session: AsyncSession,
    model: type[M],
    row: Row,
    on_conflict: OnConflict,
    match: ColumnElement[bool],
) -> tuple[M, bool]:
    """Insert `row`, or set `on_conflict.update` on the live row `match` finds: the object
    and whether this call inserted it.

    Two statements where an upsert has one, so that the answer comes from what PostgreSQL
    did, also under concurrency: `INSERT ... ON CONFLICT DO NOTHING` waits for a concurrent
    insert of the same key to commit and then inserts nothing; the UPDATE that follows
    (a new snapshot under READ COMMITTED) finds that row. A row deleted between the two is
    inserted by the next round. (An upsert's returned row cannot tell: comparing its
    `created_at` with `now()` said "created" to two concurrent requests whose transactions
    began in the same microsecond.)
    """
    table = table_of(model)
    names, columns = as_columns(table, [row])
    insert = insert_statement(table, names, columns).on_conflict_do_nothing(
        index_elements=on_conflict.index_elements(table),
        index_where=on_conflict.where,
    )
    values = {name: row[name] for name in on_conflict.update}
    update_stmt = update(model).where(match).values(values).returning(model)
    refresh = {"populate_existing": True}
    for _ in range(CREATE_OR_UPDATE_ROUNDS):
        with domain_errors():
            inserted = await session.scalar(
                select(model).from_statement(insert.returning(*table.c)), execution_options=refresh
            )
            if inserted is not None:
                return inserted, True
            updated = await session.scalar(update_stmt, execution_options=refresh)
        if updated is not None:
            return updated, False
    raise ConcurrentModificationError("the row kept being deleted and re-created; retry")


# Rounds of `create_or_update` before it gives up: each needs a concurrent delete to lose.
CREATE_OR_UPDATE_ROUNDS = 3


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
    names, columns = as_columns(table, rows)
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection  # the asyncpg connection behind SQLAlchemy's adapter
    assert driver is not None
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it
        # runs. A COPY sent before that would autocommit, outside the unit of work.
        await connection.execute(select(1))
    with domain_errors():
        await driver.copy_records_to_table(
            table.name,
            schema_name=table.schema,
            columns=names,
            records=zip(*columns, strict=True),
        )
    return len(rows)


def table_of(model: type[Any]) -> Table:
    """The `Table` behind a mapped class."""
    return cast(Table, model.__table__)
