"""The one place where errors become HTTP responses. No input and no fault gives a 500.

* Domain errors map by type (404, 409, 422).
* Request validation: 422 listing each problem's location and message, never echoing the
  input (it may be huge, or not even encodable).
* Database errors that validation did not catch map by SQLSTATE class: 22 (data exception)
  -> 422, 23 (integrity violation) -> 409, 40 (deadlock, serialization failure) -> 409,
  safe to retry. Their bodies never carry SQL, parameters, table or constraint names.
* The database being unavailable (no pooled connection in time, connection refused or
  lost, connect or statement timeout, lock timeout, server shutting down) -> 503 with
  `Retry-After`.
* Anything else is a bug: 500 with a JSON body that says nothing more.
Every body is JSON `{"detail": ...}`, encoded ASCII-safe.
"""

import json
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa

from ..db import sqlstate
from ..errors import ConflictError, DomainError, InvalidOperationError, NotFoundError

# SQLSTATE classes and codes that mean "the database cannot serve this now, try again":
# 08 connection exception, 53 insufficient resources, 57 operator intervention (also
# statement_timeout and server shutdown), 55P03 lock_not_available (lock_timeout),
# 25P03 idle_in_transaction_session_timeout.
_UNAVAILABLE = ("08", "53", "57", "55P03", "25P03")
_CLIENT_ERRORS = {
    "22": (status.HTTP_422_UNPROCESSABLE_CONTENT, "A value is not valid for its field."),
    "23": (status.HTTP_409_CONFLICT, "The request conflicts with the current data."),
    "40": (
        status.HTTP_409_CONFLICT,
        "The request conflicted with a concurrent one and was not applied; retry it.",
    ),
}
_MESSAGE_LIMIT = 200


class DatabaseUnavailableError(Exception):
    """Raised where a check (not a driver) finds the database unavailable: a 503."""


class ErrorBody(BaseModel):
    detail: str


class ErrorResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate from the input cannot break encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _status_of_domain_error(exc: DomainError) -> int:
    if isinstance(exc, NotFoundError):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, ConflictError):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, InvalidOperationError):
        return status.HTTP_422_UNPROCESSABLE_CONTENT
    return status.HTTP_400_BAD_REQUEST


def is_unavailable(exc: BaseException) -> bool:
    """The database could not serve the request, through no fault of the request."""
    if isinstance(
        exc, DatabaseUnavailableError | sa.TimeoutError | OSError | asyncpg.InterfaceError
    ):
        return True  # pool checkout, refused/reset connections, connect/command timeouts
    if isinstance(exc, sa.DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, sa.InterfaceError)
    ):
        return True
    return sqlstate(exc).startswith(_UNAVAILABLE)


def unavailable(request: Request) -> ErrorResponse:
    retry_after = request.app.state.settings.http_retry_after
    return ErrorResponse(
        {"detail": "The database is unavailable; retry later."},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(retry_after)},
    )


async def domain_error(_: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, DomainError)
    return ErrorResponse({"detail": str(exc)}, status_code=_status_of_domain_error(exc))


async def validation_error(_: Request, exc: Exception) -> ErrorResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "loc": [_short(part) for part in error.get("loc", ())],
            "msg": _short(error.get("msg", "")),
            "type": _short(error.get("type", "")),
        }
        for error in exc.errors()[:20]
    ]
    return ErrorResponse({"detail": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _short(value: object) -> object:
    if isinstance(value, int):
        return value
    text = str(value)
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "…"


async def database_error(request: Request, exc: Exception) -> ErrorResponse:
    """Driver and SQLAlchemy errors, and the OS errors of a connection that failed."""
    if is_unavailable(exc):
        return unavailable(request)
    known = _CLIENT_ERRORS.get(sqlstate(exc)[:2])
    if known is None:
        return await unexpected_error(request, exc)
    code, message = known
    return ErrorResponse({"detail": message}, status_code=code)


async def unexpected_error(_: Request, exc: Exception) -> ErrorResponse:
    return ErrorResponse(
        {"detail": "Internal server error."},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    for error in (
        DatabaseUnavailableError,
        sa.DBAPIError,
        sa.TimeoutError,
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ):
        app.add_exception_handler(error, database_error)
    app.add_exception_handler(Exception, unexpected_error)


# Documented on every route, so clients and fuzzers know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "Unknown id"},
    status.HTTP_409_CONFLICT: {"model": ErrorBody, "description": "Conflict with current data"},
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "model": ErrorBody,
        "description": "Database unavailable; retry after `Retry-After` seconds",
    },
}
