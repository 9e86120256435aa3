"""Engine, sessions and the unit of work: the one place where transactions end.

Repositories and query functions only `flush()`. `Database.unit_of_work()` commits when
the block succeeds and rolls back when it raises; nothing else commits.
"""

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm.exc import StaleDataError

from .config import Settings, asyncpg_connect_args
from .errors import ConcurrentModificationError, DuplicateError, InvalidDataError

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
    `pgbouncer=True`: asyncpg's prepared statements break under transaction pooling, so
    disable its statement cache and give each prepared statement a unique name.
    """
    url, from_url = asyncpg_connect_args(url)
    connect_args: dict[str, Any] = kwargs.pop("connect_args", {})
    server_settings = {
        **connect_args.get("server_settings", {}),
        **from_url.get("server_settings", {}),
    }
    connect_args = {**connect_args, **from_url}
    if server_settings:
        connect_args["server_settings"] = server_settings
    if pgbouncer:
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
    return create_async_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _milliseconds(seconds: float) -> str:
    return str(round(seconds * 1000))


def create_sessionmaker(bind: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit without implicit IO.
    return async_sessionmaker(bind, expire_on_commit=False)


class Database:
    """Owns the engine and the session factory of one process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessionmaker = create_sessionmaker(engine)

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
        return cls(
            create_engine(
                settings.database,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                pool_timeout=settings.database_pool_timeout,
                echo=settings.database_echo,
                pgbouncer=settings.database_pgbouncer,
                connect_args=connect_args,
            )
        )

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A session and its transaction: commit on success, roll back on any exception.

        Never share the yielded session between concurrent tasks.
        """
        async with self.sessionmaker() as session:
            with domain_errors():
                async with session.begin():
                    yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


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
        error = exc.orig if isinstance(exc, DBAPIError) else exc
        sqlstate = str(getattr(error, "sqlstate", None) or "")
        if sqlstate == UNIQUE_VIOLATION:
            raise DuplicateError(_duplicate_message(getattr(error, "detail", None))) from exc
        if sqlstate == CARDINALITY_VIOLATION:
            raise InvalidDataError("one batch names the same row twice") from exc
        if sqlstate.startswith(DATA_EXCEPTION):
            # Never the driver's text: some of its messages echo the value.
            raise InvalidDataError(DATA_MESSAGES.get(sqlstate, DATA_MESSAGES["22"])) from exc
        raise


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
