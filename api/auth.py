"""Who is calling, as the routes' dependency: an API key (api.access) required on every ``/v1``
route and on ``POST /generate`` once any key is configured, its request rate checked; and jobs
visible to the key that made them.

Routes take ``caller: CallerDep`` and read jobs with :func:`owned_job`. With no key configured
(no keys file, no ``GENQ_API_KEYS``) the API is in dev mode: anyone may call it, a warning says so
at start, and nothing here touches Redis. Health checks and ``/metrics`` never ask for a key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.access import DEV_CALLER, Access, Caller
from api.deps import Services
from api.errors import ApiError
from genq.contract.schemas import ErrorBody, JobRecord


async def _caller(request: Request) -> Caller:
    # No sub-dependencies, the header read directly: this runs on every request of the
    # 2,000 jobs/s path, and FastAPI's bookkeeping per dependency is not free (api.deps).
    access: Access = request.app.state.services.access
    ring = access.keys()
    if ring is None:
        return DEV_CALLER
    key = access.authenticate(ring, request.headers.get("authorization"))
    await access.check_rate(key)
    return Caller(key.name)


CallerDep = Annotated[Caller, Depends(_caller)]
# For routes that need a key but no caller: ``include_router(..., dependencies=AUTHENTICATED,
# responses=AUTH_ERRORS)``.
AUTHENTICATED = [Depends(_caller)]
AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
    429: {"model": ErrorBody, "description": "the key is over its rate limit"},
}


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no job with id {job_id!r} (unknown or expired)")


async def owned_job(svc: Services, caller: Caller, job_id: str) -> JobRecord:
    """The job, if ``caller`` may see it. Another key's job is 404 like an unknown one, not 403:
    ids cannot be probed. In dev mode every job is everyone's."""
    record = await svc.store.get(job_id)
    if record is None or (caller.key_name is not None and record.owner != caller.key_name):
        raise not_found(job_id)
    return record
