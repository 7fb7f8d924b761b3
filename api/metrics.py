"""The API's Prometheus metrics, served at ``/metrics`` (api.routes.metrics).

- ``genq_api_jobs_submitted_total``: jobs accepted (new ones; an Idempotency-Key replay is not).
- ``genq_api_jobs_rejected_total{reason}``: job submissions answered with an error, by the error
  type of the body (``invalid_request``, ``request_entity_too_large``, ``overloaded``, ...; these
  from 0).
- ``genq_api_request_duration_seconds{method,route,status}``: every request, by route template
  (``/v1/jobs/{job_id}``, never the raw path) and status class (``2xx``).
- Read from Redis at scrape time: ``genq_queue_length{queue}`` (messages in each Celery queue's
  list: the jobs' and the webhooks'), ``genq_jobs_waiting`` (jobs accepted and not started, what
  ``GENQ_MAX_QUEUED`` bounds) and ``genq_api_redis_up``. Every API process reports the same
  values: aggregate them with ``max``, not ``sum``.

``genq api`` may run several uvicorn processes (``GENQ_API_WORKERS``); a scrape reaches one of
them. So the counters use prometheus_client's multiprocess mode whenever
``PROMETHEUS_MULTIPROC_DIR`` is set (``genq api`` always sets it, to a fresh directory): each
process writes its values there and a scrape sums them all. Without it (an app made in a test),
the process's own values are served.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from genq.contract.constants import QUEUED_COUNT

log = logging.getLogger(__name__)

disable_created_metrics()  # no *_created series (and none in the multiprocess files)

REGISTRY = CollectorRegistry()

JOBS_SUBMITTED = Counter(
    "genq_api_jobs_submitted",
    "Jobs accepted by the API (new jobs; a replayed Idempotency-Key is not counted)",
    registry=REGISTRY,
)
JOBS_REJECTED = Counter(
    "genq_api_jobs_rejected",
    "Job submissions refused, by the error type of the answer",
    ["reason"],
    registry=REGISTRY,
)
# The reasons a submission is refused at the door, served from 0: a series that first appears at
# 1 is a rise rate() never sees, so the first rejection of each would be missing from the
# dashboard. (Other reasons, e.g. a failed job's type on /generate, appear when they happen.)
for _reason in (
    "invalid_request",
    "request_entity_too_large",
    "overloaded",
    "idempotency_conflict",
    "unavailable",
    "unauthorized",
    "rate_limited",
):
    JOBS_REJECTED.labels(_reason)
REQUEST_SECONDS = Histogram(
    "genq_api_request_duration_seconds",
    "Seconds the API took to answer, by route template and status class",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)


class QueueDepths(Collector):
    """The queue gauges, from values read from Redis for this scrape."""

    def __init__(self, lengths: dict[str, int] | None, waiting: int | None):
        self.lengths = lengths
        self.waiting = waiting

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "genq_api_redis_up",
            "1 if Redis answered this scrape",
            value=int(self.lengths is not None),
        )
        if self.lengths is None:
            return
        length = GaugeMetricFamily(
            "genq_queue_length",
            "Messages waiting in each Celery queue's Redis list",
            labels=["queue"],
        )
        for queue, n in self.lengths.items():
            length.add_metric([queue], n)
        yield length
        yield GaugeMetricFamily(
            "genq_jobs_waiting",
            "Jobs accepted and not started yet, all models (GENQ_MAX_QUEUED bounds each model's)",
            value=self.waiting or 0,
        )


def _counters() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


async def read_queues(redis: Redis, queues: list[str]) -> QueueDepths:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            pipe.get(QUEUED_COUNT)
            *lengths, waiting = await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the counters are served all the same
        log.warning("metrics: Redis unreachable: %s", exc)
        return QueueDepths(None, None)
    return QueueDepths(dict(zip(queues, map(int, lengths))), int(waiting or 0))


async def exposition(redis: Redis, queues: list[str]) -> bytes:
    depths = CollectorRegistry()
    depths.register(await read_queues(redis, queues))
    return generate_latest(_counters()) + generate_latest(depths)
