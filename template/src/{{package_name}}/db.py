"""Engine, sessions and the unit of work: the one place where transactions end.

Repositories and query functions only `flush()`. `Database.unit_of_work()` commits when
the block succeeds and rolls back when it raises; nothing else commits.
"""

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

from .config import Settings
from .errors import ConcurrentModificationError, DuplicateError
from .logs import log_slow_queries

UNIQUE_VIOLATION = "23505"


def create_engine(url: URL, *, pgbouncer: bool = False, **kwargs: Any) -> AsyncEngine:
    """One engine per process (and per event loop); dispose it on shutdown.

    `pgbouncer=True`: asyncpg's prepared statements break under transaction pooling, so
    disable its statement cache and give each prepared statement a unique name.
    """
    if pgbouncer:
        kwargs["connect_args"] = {
            **kwargs.get("connect_args", {}),
            "statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
        }
    # hide_parameters: bound values never appear in errors or logs (they may be secrets).
    return create_async_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)


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
        engine = create_engine(
            settings.database,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            echo=settings.database_echo,
            pgbouncer=settings.database_pgbouncer,
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
        raise ConcurrentModificationError(str(exc)) from exc
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            detail = getattr(exc.orig, "detail", None) or str(exc.orig)
            raise DuplicateError(detail) from exc
        raise
