"""Request-scoped dependencies: one session and one unit of work per request."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import Database


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(
    database: Annotated[Database, Depends(get_database)],
) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the handler returns, rolled back if it
    raises. Handlers never commit."""
    async with database.unit_of_work() as session:
        yield session


# scope="function": the unit of work ends (commit or rollback) when the handler returns,
# BEFORE the response is sent. A failed commit then reaches the error handlers like any
# other error, and a client that got a 2xx finds the write on its next request. (FastAPI's
# default for `yield` dependencies runs their exit code after the response is sent.)
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
