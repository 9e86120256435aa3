"""Engine, sessions and the unit of work: the one place where transactions end.

Repositories and query functions only `flush()`. `Database.unit_of_work()` commits when
the block succeeds and rolls back when it raises; nothing else commits.
"""

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

from .config import Settings
from .errors import ConcurrentModificationError, DuplicateError, InvalidDataError

UNIQUE_VIOLATION = "23505"
DATA_EXCEPTION = "22"  # SQLSTATE class: too long, out of range, invalid text


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
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


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
        return cls(
            create_engine(
                settings.database,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
                echo=settings.database_echo,
                pgbouncer=settings.database_pgbouncer,
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
        raise ConcurrentModificationError(str(exc)) from exc
    except (DBAPIError, asyncpg.PostgresError) as exc:
        error = exc.orig if isinstance(exc, DBAPIError) else exc
        sqlstate = str(getattr(error, "sqlstate", None) or "")
        if sqlstate == UNIQUE_VIOLATION:
            raise DuplicateError(getattr(error, "detail", None) or str(error)) from exc
        if sqlstate.startswith(DATA_EXCEPTION):
            # The driver's first line says what was wrong without echoing the value.
            raise InvalidDataError(str(error).splitlines()[0]) from exc
        raise
