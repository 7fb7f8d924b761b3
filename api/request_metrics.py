"""Per-request metrics as pure ASGI middleware, outermost: it sees every answer, the 413s of
api.limits included. Records ``genq_api_request_duration_seconds`` by route template, and
``genq_api_jobs_rejected_total{reason}`` for job submissions answered with an error (the reason
is the error type of the body, which is small: it is read only for those answers)."""

from __future__ import annotations

import json
import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.errors import status_type

# (method, route template) of the routes that submit a job.
SUBMIT_ROUTES = {("POST", "/v1/jobs"), ("POST", "/v1/batches"), ("POST", "/generate")}
UNMATCHED = "unmatched"  # any path no route takes (404s): one label, not one per path


def route_template(scope: Scope) -> str:
    """The template of the route that took (or would take) the request."""
    route = scope.get("route")
    if route is None:  # answered before routing (e.g. a 413 on Content-Length)
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", UNMATCHED)


def error_type(body: bytes, status: int) -> str:
    try:
        return str(json.loads(body)["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return status_type(status)


class RequestMetrics:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts
        error_body = bytearray()

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                if len(error_body) < 4096:
                    error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            route = route_template(scope)
            method = scope["method"]
            metrics.REQUEST_SECONDS.labels(method, route, f"{status // 100}xx").observe(
                time.perf_counter() - started
            )
            if status >= 400 and (method, route) in SUBMIT_ROUTES:
                metrics.JOBS_REJECTED.labels(error_type(bytes(error_body), status)).inc()
