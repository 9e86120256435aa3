"""Engine, sessions and the unit of work: the one place where transactions end.

Repositories and query functions only `flush()`. `Database.unit_of_work()` commits when
the block succeeds and rolls back when it raises; nothing else commits.
"""

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm.exc import StaleDataError

from .config import Settings, asyncpg_connect_args
from .errors import ConcurrentModificationError, DuplicateError
from .logs import log_slow_queries

UNIQUE_VIOLATION = "23505"


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
    # hide_parameters: bound values never appear in errors or logs (they may be secrets).
    return create_async_engine(
        url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args, **kwargs
    )


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
        engine = create_engine(
            settings.database,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            echo=settings.database_echo,
            pgbouncer=settings.database_pgbouncer,
            connect_args=connect_args,
        )
        log_slow_queries(engine, settings.log_slow_query_ms)
        return cls(engine)

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
    """Turn the ORM's and the driver's conflict errors into the project's own.

    Wraps every flush (`repositories.queries.flush`) and every commit (`unit_of_work`).
    """
    try:
        yield
    except StaleDataError as exc:
        raise ConcurrentModificationError(
            "the row was changed or removed since it was read; reload it and retry"
        ) from exc
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            raise DuplicateError(_duplicate_message(getattr(exc.orig, "detail", None))) from exc
        raise


def _duplicate_message(detail: str | None) -> str:
    """`Key (email)=(a@x.com) already exists.` -> `email is already taken`: the column names,
    never the value, the table or the constraint."""
    columns = re.match(r"Key \((.+?)\)=", detail or "")
    if columns is None:
        return "a unique value is already taken"
    return f"{columns.group(1)} is already taken"
