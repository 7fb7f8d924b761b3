"""``GET /metrics``: Prometheus text (api.metrics says what is there)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api import metrics
from api.deps import ServicesDep
from genq.contract.constants import WEBHOOK_QUEUE, model_queue

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(svc: ServicesDep) -> Response:
    models = await svc.models.known()
    queues = [model_queue(svc.settings.queue, m) for m in models] + [WEBHOOK_QUEUE]
    body = await metrics.exposition(svc.redis, queues)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
