"""The anchor for the API's ceiling (ops/bench/api_ceiling.py): the least a FastAPI endpoint that
accepts a job can do. It validates the same request model as ``POST /v1/jobs``, makes an id and
answers 202 with a small JSON body; no Redis, no queue. Whatever genq's API reaches beside it is
the cost of genq's own work per job.

    uvicorn --factory ops.bench.trivial_api:create_app
"""

from __future__ import annotations

import time
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from genq.contract.schemas import JobCreate


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/jobs", status_code=202)
    async def create_job(body: JobCreate) -> JSONResponse:
        job_id = uuid.uuid4().hex
        return JSONResponse(
            {"id": job_id, "status": "queued", "created_at": time.time()}, status_code=202
        )

    return app
