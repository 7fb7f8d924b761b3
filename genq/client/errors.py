"""The client's exceptions: one class per kind of error answer, each carrying the API's error
body (``{"error": {"type", "message", "details"?}}``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import httpx
from pydantic import ValidationError

from genq.contract.schemas import ErrorBody
from genq.contract.webhooks import parse_retry_after


class GenqError(Exception):
    """An error answer of the API: ``status`` (None for a stream's ``error`` event), the body's
    ``type`` and ``message``, the body itself (``body``: parsed JSON, or the text if it was not
    JSON) and ``retry_after`` (seconds, from ``Retry-After``, where the answer had one)."""

    def __init__(
        self,
        status: int | None,
        type: str,
        message: str,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{message} ({status or 'stream'} {type})")
        self.status = status
        self.type = type
        self.message = message
        self.body = body
        self.retry_after = retry_after


class InvalidRequest(GenqError):
    """400, 413, 422: the request itself is wrong; ``body["error"]["details"]`` says where."""


class Unauthorized(GenqError):
    """401 (no or a wrong API key), 403."""


class NotFound(GenqError):
    """404: no such job (unknown, expired, or another key's)."""


class Conflict(GenqError):
    """409: e.g. canceling a finished job, an ``Idempotency-Key`` reused with another body."""


class RateLimited(GenqError):
    """429: too many requests or a full queue; retry after ``retry_after`` seconds."""


class ServerError(GenqError):
    """5xx (503: the job store is unreachable; ``retry_after`` set)."""


class StreamRestarted(GenqError):
    """``stream()`` only: the job ran again after its worker was lost and its new text differs
    from the text already handed out (with greedy sampling, the default, it does not)."""


_BY_STATUS: dict[int, type[GenqError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def error_from_response(response: httpx.Response) -> GenqError:
    """The exception for an error answer: its class from the status, the rest from the body
    (``{"error": {"type", "message"}}``; a body of another shape, e.g. a proxy's, is kept whole)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    try:
        detail = ErrorBody.model_validate(body).error
        type_, message = detail.type, detail.message
    except ValidationError:
        try:
            phrase = HTTPStatus(response.status_code).phrase
        except ValueError:
            phrase = f"HTTP {response.status_code}"
        type_ = phrase.lower().replace(" ", "_").replace("-", "_")
        message = response.text.strip()[:200] or phrase
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else GenqError
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return cls(response.status_code, type_, message, body, retry_after)
