"""Engine, sessions and the unit of work: the one place where transactions end.

Repositories and query functions only `flush()`. `Database.unit_of_work()` commits when
the block succeeds and rolls back when it raises; nothing else commits.
"""

import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from select import POLLIN, poll
from typing import Any

import asyncpg
from sqlalchemy import TextClause, UpdateBase, event, func, select, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.exc import StaleDataError

from .config import Settings, asyncpg_connect_args
from .errors import ConcurrentModificationError, DuplicateError, InvalidDataError
from .logs import log_slow_queries

UNIQUE_VIOLATION = "23505"
CARDINALITY_VIOLATION = "21000"  # an upsert batch hits one row twice (emails differing in case)
DATA_EXCEPTION = "22"  # SQLSTATE class: too long, out of range, invalid text
DATA_MESSAGES = {
    "22001": "a value is too long for its field",
    "22003": "a number is out of range for its field",
    "22": "a value is not valid for its field",
}


def create_engine(url: URL, *, pgbouncer: bool = False, **kwargs: Any) -> AsyncEngine:
    """One engine per process (and per event loop); dispose it on shutdown.

    libpq query parameters in `url` (`sslmode`, `connect_timeout`, `options`, …) become
    asyncpg connect arguments; they take precedence over `connect_args` given here.
    `pgbouncer=True`: under transaction pooling each transaction may run on another server
    connection, so a statement prepared in one transaction must never be reused in the next.
    Both statement caches are off, SQLAlchemy's (`prepared_statement_cache_size`) and
    asyncpg's (`statement_cache_size`), and each statement gets a unique name, so two
    clients never clash on one server connection (SQLAlchemy's documented set-up).
    PgBouncer refuses startup parameters it does not track (`statement_timeout`, …), and
    a session `SET` would stay behind on a server connection other clients then get: such
    settings are applied to each ORM session's transaction instead (`set_config(…, true)`,
    one more round trip per transaction).
    """
    url, from_url = asyncpg_connect_args(url)
    connect_args: dict[str, Any] = kwargs.pop("connect_args", {})
    server_settings = {
        **connect_args.get("server_settings", {}),
        **from_url.get("server_settings", {}),
    }
    connect_args = {**connect_args, **from_url}
    connect_args.pop("server_settings", None)
    if pgbouncer:
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        per_transaction = {
            name: value
            for name, value in server_settings.items()
            if name.lower() not in PGBOUNCER_STARTUP_PARAMETERS
        }
        server_settings = {k: v for k, v in server_settings.items() if k not in per_transaction}
        kwargs["execution_options"] = {
            **kwargs.get("execution_options", {}),
            TRANSACTION_SETTINGS: per_transaction,
            PGBOUNCER: True,
        }
    if server_settings:
        connect_args["server_settings"] = server_settings
    # hide_parameters: bound values never appear in errors or logs (they may be secrets).
    engine = create_async_engine(url, hide_parameters=True, connect_args=connect_args, **kwargs)
    event.listen(engine.sync_engine, "checkout", _replace_closed_on_checkout)
    return engine


def _replace_closed_on_checkout(dbapi_connection: Any, _: Any, __: Any) -> None:
    """Pool `checkout` event: a pooled connection the server or the network has closed (a
    restart, a failover, `pg_terminate_backend`, PgBouncer going away) is replaced by a new
    one before the unit of work uses it: raising `DisconnectionError` makes the pool retry.

    No round trip: asyncpg's `is_closed()` knows of a close the event loop has read; one it
    has not read yet (the loop was busy elsewhere) waits on the socket, which a pooled,
    idle connection otherwise never has anything on. A liveness query instead
    (`pool_pre_ping`: BEGIN, `;`, ROLLBACK) would cost a quarter of a small request's time.
    What no check can see is a close still on its way: the server closing a connection
    as a request checks it out. That request fails with a disconnect (over HTTP a 503 with
    `Retry-After`; nothing was committed) and SQLAlchemy replaces every pooled connection.
    """
    connection = dbapi_connection.driver_connection
    if connection.is_closed() or _has_unread_input(connection):
        raise DisconnectionError("the server closed this pooled connection")


def _has_unread_input(connection: asyncpg.Connection) -> bool:
    """Bytes or a close waiting on the connection's socket, not yet read by the event loop
    (a zero-timeout `poll()`: one system call), or a close the event loop has read but not
    yet passed on to asyncpg (the transport is closing)."""
    # asyncpg has no public way to its socket: `_transport` (tests/test_db.py guards it).
    transport = connection._transport
    if transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = poll()
    poller.register(sock.fileno(), POLLIN)
    return bool(poller.poll(0))


# The startup parameters PgBouncer passes on to the server (the ones it tracks).
PGBOUNCER_STARTUP_PARAMETERS = {
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
}
# Execution option: server settings to set at the start of every session's transaction.
TRANSACTION_SETTINGS = "transaction_settings"
# Execution option: the engine connects through PgBouncer (`create_engine(pgbouncer=True)`).
PGBOUNCER = "pgbouncer"
# `Session.info` key: the session of a read-only unit of work.
READ_ONLY = "read_only"


class ReadOnlyError(RuntimeError):
    """A write in a read-only unit of work: a bug of the caller (over HTTP, a 500)."""


@event.listens_for(Session, "do_orm_execute")
def _refuse_statements_that_write(state: ORMExecuteState) -> None:
    writes = state.is_insert or state.is_update or state.is_delete
    if writes and state.session.info.get(READ_ONLY):
        raise ReadOnlyError("a read-only unit of work cannot write; use unit_of_work()")


@event.listens_for(Session, "before_flush")
def _refuse_flushes_that_write(session: Session, _: Any, __: Any) -> None:
    if session.info.get(READ_ONLY) and (session.new or session.deleted or session.dirty):
        raise ReadOnlyError("a read-only unit of work cannot write; use unit_of_work()")


@event.listens_for(Session, "after_begin")
def _apply_transaction_settings(_: Session, __: Any, connection: Connection) -> None:
    settings: dict[str, str] = connection.get_execution_options().get(TRANSACTION_SETTINGS, {})
    if settings:
        connection.execute(
            select(*(func.set_config(name, value, True) for name, value in settings.items()))
        )


def _milliseconds(seconds: float) -> str:
    return str(round(seconds * 1000))


def create_sessionmaker(
    bind: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit without implicit IO.
    return async_sessionmaker(bind, expire_on_commit=False, info={READ_ONLY: read_only})


def read_only_engine(engine: AsyncEngine) -> AsyncEngine:
    """`engine` (the same pool) for read-only units of work. Autocommit: no BEGIN and no
    COMMIT, two of a small read's three round trips (under READ COMMITTED a transaction
    gives a series of reads nothing more: each statement takes a snapshot of its own).
    Behind PgBouncer a READ ONLY transaction instead: the driver prepares a statement and
    executes it in two round trips, which transaction pooling may send to two server
    connections unless a transaction holds them together."""
    if engine.get_execution_options().get(PGBOUNCER):
        read_only = engine.execution_options(postgresql_readonly=True)
    else:
        read_only = engine.execution_options(isolation_level="AUTOCOMMIT")
    event.listen(read_only.sync_engine, "before_execute", _refuse_statements_that_write_rows)
    return read_only


def _refuse_statements_that_write_rows(
    _: Connection, statement: Any, __: Any, ___: Any, ____: Any
) -> None:
    """Engine `before_execute` event of the read-only engine: in autocommit an INSERT,
    UPDATE or DELETE would be committed at once; it is refused before it is sent. (Raw SQL,
    `text()`, DDL and a write inside a SELECT's CTE are not looked at.)"""
    if isinstance(statement, UpdateBase):
        raise ReadOnlyError("a read-only connection cannot write; use unit_of_work()")


class Database:
    """Owns the engine and the session factory of one process."""

    def __init__(self, engine: AsyncEngine, replicas: Sequence[AsyncEngine] = ()) -> None:
        self.engine = engine
        self.sessionmaker = create_sessionmaker(engine)
        self.read_only_engine = read_only_engine(engine)
        self.read_only_sessionmaker = create_sessionmaker(self.read_only_engine, read_only=True)
        # Streaming replicas of `engine`'s server, for `read_only_unit_of_work()`.
        self.replicas = [Database(replica) for replica in replicas]

    @classmethod
    def from_settings(cls, settings: Settings) -> "Database":
        statement_timeout = settings.database_statement_timeout
        connect_args = {
            "timeout": settings.database_connect_timeout,
            # Client side: a hung server or network fails the statement instead of the
            # request waiting forever; one second after the server's own limit.
            "command_timeout": statement_timeout + 1 if statement_timeout else None,
            "server_settings": {
                "statement_timeout": _milliseconds(statement_timeout),
                "lock_timeout": _milliseconds(settings.database_lock_timeout),
                "idle_in_transaction_session_timeout": _milliseconds(
                    settings.database_idle_in_transaction_timeout
                ),
            },
        }
        options: dict[str, Any] = {
            "pool_size": settings.database_pool_size,
            "max_overflow": settings.database_max_overflow,
            "pool_timeout": settings.database_pool_timeout,
            "echo": settings.database_echo,
            "pgbouncer": settings.database_pgbouncer,
            "connect_args": connect_args,
        }
        engines = [create_engine(url, **options) for url in [settings.database, *settings.replicas]]
        for engine in engines:
            log_slow_queries(engine, settings.log_slow_query_ms)
        return cls(engines[0], engines[1:])

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A session and its transaction: commit on success, roll back on any exception.

        Never share the yielded session between concurrent tasks.
        """
        session = self.sessionmaker()
        try:
            with domain_errors():
                async with session.begin():
                    yield session
        finally:
            # The transaction has ended (and its connection gone back to the pool): closing
            # does no I/O. `async with session` would run it in a task of its own, one more
            # turn of the event loop for every unit of work.
            await session.close()

    @asynccontextmanager
    async def tracked_unit_of_work(self, position: "ReadPosition") -> AsyncIterator[AsyncSession]:
        """`unit_of_work()` for a client that may read from a replica next: once committed,
        `position` moves past this commit, so the client's next `read_only_unit_of_work()`
        sees it. Without replicas: exactly `unit_of_work()`."""
        async with self.unit_of_work() as session:
            yield session
        if self.replicas:
            async with self.engine.connect() as connection:
                position.advance(await wal_position(connection, INSERTED))

    @asynccontextmanager
    async def read_only_unit_of_work(
        self, position: "ReadPosition | None" = None
    ) -> AsyncIterator[AsyncSession]:
        """A unit of work that only reads, served by a replica when one can.

        It runs on a replica that has replayed the primary's WAL up to `position` (what
        this client already wrote or read), else on the primary, so the client never reads
        older data than it has seen. Afterwards `position` covers what was read here. The
        transaction is READ ONLY everywhere: a write or a lock (`FOR UPDATE`) fails in it;
        use `unit_of_work()` for those.

        Without replicas it runs in autocommit on the primary (see `read_only_engine`):
        statements and flushes that write raise `ReadOnlyError` before they are sent, but
        raw SQL (`text()`) is not looked at, and `FOR UPDATE` locks nothing for longer than
        its statement.
        """
        if not self.replicas:
            # Nothing to commit: closing the session ends whatever it began.
            session = self.read_only_sessionmaker()
            try:
                with domain_errors():
                    yield session
            finally:
                await session.close()
            return
        position = position or ReadPosition()
        serving = await self._caught_up_replica(position) or self
        async with serving.unit_of_work() as session:
            await session.connection(execution_options={"postgresql_readonly": True})
            yield session
            # Replay only moves forward: this bounds every snapshot taken above.
            query = INSERTED if serving is self else REPLAYED
            position.advance(await wal_position(await session.connection(), query))

    @asynccontextmanager
    async def read_only_connection(
        self, position: "ReadPosition | None" = None
    ) -> AsyncIterator[AsyncConnection]:
        """A connection for reads whose rows are only serialised (`queries.require_row`,
        `queries.list_rows`): Core statements, no session and no ORM objects, about a quarter
        less CPU for a small read than `read_only_unit_of_work()`.

        Without replicas or PgBouncer: an autocommit connection of the primary, one round
        trip per statement. INSERT, UPDATE and DELETE statements are refused
        (`ReadOnlyError`). With either, the connection of a `read_only_unit_of_work()`, so
        replicas, `position` and the READ ONLY transaction work as they do there.
        """
        if self.replicas or self.engine.get_execution_options().get(PGBOUNCER):
            async with self.read_only_unit_of_work(position) as session:
                yield await session.connection()
            return
        async with self.read_only_engine.connect() as connection:
            with domain_errors():
                yield connection

    async def _caught_up_replica(self, position: "ReadPosition") -> "Database | None":
        """A replica (in random order, to spread the load) that has replayed `position`;
        one that cannot be reached is passed over."""
        for replica in random.sample(self.replicas, k=len(self.replicas)):
            try:
                async with replica.engine.connect() as connection:
                    replayed = await connection.scalar(REPLAYED)
            except (OSError, DBAPIError):
                continue
            if replayed is not None and replayed >= position.lsn:
                return replica
        return None

    async def dispose(self) -> None:
        await self.engine.dispose()
        for replica in self.replicas:
            await replica.dispose()


# WAL positions as byte offsets (`pg_lsn` minus 0/0). `pg_last_wal_replay_lsn()` is NULL on
# a server that is not a replica; `pg_current_wal_insert_lsn()` is past every commit so far.
REPLAYED = text("SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")
INSERTED = text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")


async def wal_position(connection: AsyncConnection, query: TextClause) -> int:
    position = await connection.scalar(query)
    return int(position or 0)


@dataclass
class ReadPosition:
    """How far into the primary's WAL one client has written or read (a byte offset).

    Read-your-writes and monotonic reads across replicas: each client carries its own
    (the HTTP layer keeps it in a cookie); its read-only units of work run only where the
    WAL has been replayed this far. `str()` and `parse()` use PostgreSQL's `X/Y` notation.
    """

    lsn: int = 0

    def advance(self, lsn: int) -> None:
        self.lsn = max(self.lsn, lsn)

    def __str__(self) -> str:
        return f"{self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}"

    @classmethod
    def parse(cls, value: str | None) -> "ReadPosition":
        """A missing or malformed value is the start: any replica may serve that client."""
        high, _, low = (value or "").partition("/")
        try:
            lsn = (int(high, 16) << 32) | int(low, 16)
        except ValueError:
            return cls()
        return cls(lsn) if 0 <= lsn < 1 << 64 else cls()


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn the ORM's and the driver's errors into the project's own.

    Wraps every flush (`repositories.queries.flush`), every bulk statement and COPY
    (`bulk`), and every commit (`unit_of_work`). COPY runs on the asyncpg connection
    itself, so its errors arrive unwrapped: both kinds are read by their SQLSTATE.
    """
    try:
        yield
    except StaleDataError as exc:
        raise ConcurrentModificationError(
            "the row was changed or removed since it was read; reload it and retry"
        ) from exc
    except (DBAPIError, asyncpg.PostgresError) as exc:
        code = sqlstate(exc)
        if code == UNIQUE_VIOLATION:
            detail = getattr(exc.orig if isinstance(exc, DBAPIError) else exc, "detail", None)
            raise DuplicateError(_duplicate_message(detail)) from exc
        if code == CARDINALITY_VIOLATION:
            raise InvalidDataError("one batch names the same row twice") from exc
        if code.startswith(DATA_EXCEPTION):
            # Never the driver's text: some of its messages echo the value.
            raise InvalidDataError(DATA_MESSAGES.get(code, DATA_MESSAGES["22"])) from exc
        raise


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, wrapped by SQLAlchemy or raw from asyncpg ('' for
    anything else)."""
    error = exc.orig if isinstance(exc, DBAPIError) else exc
    return str(getattr(error, "sqlstate", None) or "")


def _duplicate_message(detail: str | None) -> str:
    """`Key (email)=(a@x.com) already exists.` -> `email is already taken`: the column names,
    never the value, the table or the constraint."""
    columns = re.match(r"Key \((.+?)\)=", detail or "")
    if columns is None:
        return "a unique value is already taken"
    # An expression index names its expression: `lower(email::text)` -> `email`.
    names = re.sub(r"::[\w ]+", "", columns.group(1))
    names = re.sub(r"\b\w+\((.*?)\)", r"\1", names)
    return f"{names} is already taken"
