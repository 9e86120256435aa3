"""The one place where errors become HTTP responses. No input may produce a 500.

Domain errors map by type; database errors that validation did not catch map by their
SQLSTATE class (22: data exception -> 422, 23: integrity violation -> 409, 40: transaction
rollback such as a deadlock or serialization failure -> 409, safe to retry).
"""

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from ..errors import ConflictError, DomainError, InvalidOperationError, NotFoundError


class ErrorBody(BaseModel):
    detail: str


def _status_of_domain_error(exc: DomainError) -> int:
    if isinstance(exc, NotFoundError):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, ConflictError):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, InvalidOperationError):
        return status.HTTP_422_UNPROCESSABLE_CONTENT
    return status.HTTP_400_BAD_REQUEST


def _status_of_database_error(exc: DBAPIError) -> int | None:
    sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
    return {
        "22": status.HTTP_422_UNPROCESSABLE_CONTENT,
        "23": status.HTTP_409_CONFLICT,
        "40": status.HTTP_409_CONFLICT,
    }.get(sqlstate[:2])


async def domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return JSONResponse({"detail": str(exc)}, status_code=_status_of_domain_error(exc))


async def database_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    code = _status_of_database_error(exc)
    if code is None:
        raise exc
    # The driver's first line says what was wrong without echoing parameters.
    message = str(exc.orig).splitlines()[0] if exc.orig is not None else "database error"
    return JSONResponse({"detail": message}, status_code=code)


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(DBAPIError, database_error)


# Documented on every route, so clients and fuzzers know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "Unknown id"},
    status.HTTP_409_CONFLICT: {"model": ErrorBody, "description": "Conflict with current data"},
}
