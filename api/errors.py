"""One error body for every non-2xx answer, mapped from exception types in one place:
``{"error": {"type": "...", "message": "...", "details": [...]}}``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemory
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from genq.contract.schemas import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)
# Redis full: results expire to make room, which takes a while.
FULL_RETRY_AFTER_S = 10


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers


def error_response(
    status: int,
    type: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(type=type, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def status_type(status: int) -> str:
    """The error type for a bare HTTP status: its phrase in snake case ("not_found")."""
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


def _describe(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    msg = str(error.get("msg", "invalid value"))
    return f"{'.'.join(loc)}: {msg}" if loc else msg


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Keep what helps a caller fix the request; drop the echoed input and pydantic's URLs.
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message = "; ".join(_describe(e) for e in errors[:5]) or "invalid request"
        return error_response(422, "invalid_request", message, _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, status_type(exc.status_code), str(exc.detail), headers=exc.headers
        )

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, headers=exc.headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unavailable: %s", exc)
        return error_response(
            503,
            "unavailable",
            "the job store is unreachable; retry shortly",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RedisOutOfMemory)
    async def _redis_full(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis refuses writes: %s", exc)
        return error_response(
            503,
            "unavailable",
            "the job store is full (Redis reached its maxmemory); nothing was accepted; retry "
            "later, as finished jobs expire",
            headers={"Retry-After": str(FULL_RETRY_AFTER_S)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; it has been logged")
