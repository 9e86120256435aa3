"""Request-scoped dependencies: one session and one unit of work per request, or for a GET
that only serialises rows, where to open a read-only connection."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db import Database, ReadPosition

# The client's read position (see `db.ReadPosition`): the WAL position it has written or
# read up to, in PostgreSQL's `X/Y` notation.
POSITION_COOKIE = "db_position"


async def get_database(request: Request) -> Database:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every
    # request (measured: about a quarter of the app's throughput on `GET /users/{id}`).
    database: Database = request.app.state.database
    return database


async def get_session(
    database: Annotated[Database, Depends(get_database)], request: Request
) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the handler returns, rolled back if it
    raises. Handlers never commit.

    A GET or HEAD request only reads: it gets a read-only unit of work
    (`Database.read_only_unit_of_work`: no BEGIN or COMMIT, and a write is an error).
    With read replicas (`DATABASE_REPLICA_URLS`) that runs on a replica that has caught up
    with the client's position (the `POSITION_COOKIE` cookie), else on the primary; every
    other request runs on the primary, and the response's cookie covers what the request
    wrote or read.
    """
    position = _read_position(database, request)
    if request.method in {"GET", "HEAD"}:
        unit_of_work = database.read_only_unit_of_work(position)
    elif position is None:
        unit_of_work = database.unit_of_work()
    else:
        unit_of_work = database.tracked_unit_of_work(position)
    async with unit_of_work as session:
        yield session
    _send_read_position(request, position)


@dataclass(frozen=True)
class ReadAccess:
    """Where a GET handler whose rows are only serialised (`queries.require_row`,
    `queries.list_rows`) reads them: `async with reader.connect() as connection:` opens
    `Database.read_only_connection`, Core statements on a connection with no session, on a
    caught-up replica like `get_session`'s reads. Statements of your own on it get no
    session event (no ORM rule the session's events add, such as a soft-delete filter,
    unless you add it yourself). A handler taking both a `Session` and a `Reader` holds
    two connections, and the `Reader` does not see the session's uncommitted writes."""

    database: Database
    position: ReadPosition | None

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.database.read_only_connection(self.position)


async def get_reader(
    database: Annotated[Database, Depends(get_database)], request: Request
) -> ReadAccess:
    """A plain dependency, not a `yield` one: the handler's `async with` holds the
    connection, so FastAPI's machinery for `yield` dependencies (an exit stack and a
    shielded exit per request: measured at 7 % of a one-row GET's requests/s) is not paid."""
    position = _read_position(database, request)
    _send_read_position(request, position)  # the reads advance it before the response
    return ReadAccess(database, position)


def _read_position(database: Database, request: Request) -> ReadPosition | None:
    """The client's position (`POSITION_COOKIE`); None without replicas."""
    if not database.replicas:
        return None
    return ReadPosition.parse(request.cookies.get(POSITION_COOKIE))


def _send_read_position(request: Request, position: ReadPosition | None) -> None:
    # `ReadPositionCookie` sends it as the response starts, after the commit or the reads.
    if position is not None:
        request.state.read_position = position


class ReadPositionCookie:
    """ASGI middleware: sends the position `get_session` left in the request's state as the
    `POSITION_COOKIE` cookie. (Headers a dependency sets on FastAPI's `Response` after its
    `yield` are not sent: the response is already built when its exit code runs.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_cookie(message: Message) -> None:
            position = scope.get("state", {}).get("read_position")
            if message["type"] == "http.response.start" and position is not None:
                cookie = f"{POSITION_COOKIE}={position}; HttpOnly; Path=/; SameSite=lax"
                MutableHeaders(scope=message).append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# scope="function": the unit of work ends (commit or rollback) when the handler returns,
# BEFORE the response is sent. A failed commit then reaches the error handlers like any
# other error, and a client that got a 2xx finds the write on its next request. (FastAPI's
# default for `yield` dependencies runs their exit code after the response is sent.)
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
Reader = Annotated[ReadAccess, Depends(get_reader)]
