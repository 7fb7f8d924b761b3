"""Webhook delivery: one try of one event, and the schedule that feeds the delivery queue.

Light on purpose (no torch, no vLLM): it runs in the webhooks process (``genq webhooks``,
genq.webhooks.app), never beside the engine, so a slow or dead receiver costs the GPU nothing.

- :class:`Deliverer` makes one try: re-checks where the URL points (genq.contract.ssrf) and connects
  to that checked address (no second lookup, so DNS cannot change it in between), signs the job
  object (the batch object for a batch's ``completed``: header ``genq-object`` says which),
  POSTs it without following redirects, reads at most a few KiB of the answer, records the
  attempt on the job (or batch) and, for ``completed`` without a final answer, schedules the
  retry.
- :class:`Scheduler` moves due deliveries from the schedule (a Redis sorted set, score = due
  time) onto the Celery queue, each in one Lua step: a delivery waiting hours survives restarts
  of every process, and is never pushed twice by two webhooks processes. (Celery's own
  countdown/ETA on the Redis broker would redeliver any task due past the visibility timeout.)
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from celery import Celery

from genq.contract import ssrf
from genq.contract.batches import BatchPublic
from genq.contract.constants import (
    TASK_WEBHOOK,
    WEBHOOK_QUEUE,
    WEBHOOK_SCHEDULE,
    batch_deliveries_key,
    deliveries_key,
    job_key,
)
from genq.contract.schemas import JobPublic, JobRecord, WebhookAttempt
from genq.contract.settings import WebhookSettings
from genq.contract.webhooks import (
    Delivery,
    is_retryable,
    next_delay,
    parse_retry_after,
    signed_headers,
)
from genq.store import scripts
from genq.store.batches import read_batch
from genq.store.jobs import decode_record
from genq.store.queue import celery_message

log = logging.getLogger(__name__)

USER_AGENT = "genq-webhooks"


@dataclass
class Outcome:
    """One try: the answer's status, or why there was none."""

    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    retry_after: float | None = None
    refused: bool = False  # not sent: the URL points somewhere genq does not send to

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        return not self.refused and not self.ok and is_retryable(self.status_code)


@dataclass
class _Payload:
    """One delivery's target, signed body, earlier attempts and where its attempts are kept."""

    url: str | None
    body: bytes
    attempts: list[WebhookAttempt]
    deliveries_key: str


class Deliverer:
    def __init__(
        self,
        client: redis.Redis,
        settings: WebhookSettings,
        secrets: list[str],
        http: httpx.Client | None = None,
    ):
        self.redis = client
        self.settings = settings
        self.secrets = secrets
        self.allow = settings.webhook_allow_list()
        self.http = http or httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(settings.webhook_timeout_s),
            headers={"user-agent": USER_AGENT},
        )

    def load(self, job_id: str) -> JobRecord | None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(job_key(job_id))
            pipe.lrange(deliveries_key(job_id), 0, -1)
            raw, deliveries = pipe.execute()
        return decode_record(raw, deliveries) if raw else None

    def _payload(self, delivery: Delivery) -> _Payload | None:
        """What this delivery sends, as things stand now; None if its job or batch is gone."""
        if delivery.object == "batch":
            found = read_batch(self.redis, delivery.job_id)
            if found is None:
                return None
            batch, statuses = found
            public = BatchPublic.from_record(batch, statuses, batch.url, batch.job_url)
            return _Payload(
                batch.webhook,
                public.model_dump_json().encode(),
                batch.webhook_deliveries,
                batch_deliveries_key(batch.id),
            )
        record = self.load(delivery.job_id)
        if record is None:
            return None
        return _Payload(
            record.webhook,
            JobPublic.from_record(record, record.url or "").model_dump_json().encode(),
            record.webhook_deliveries,
            deliveries_key(record.id),
        )

    def deliver(self, delivery: Delivery) -> Outcome | None:
        """One try; None if the job (or batch) expired, or has no webhook."""
        payload = self._payload(delivery)
        if payload is None or payload.url is None:
            log.info(
                "webhook %s dropped: %s %s is gone",
                delivery.webhook_id,
                delivery.object,
                delivery.job_id,
            )
            return None
        attempt = 1 + sum(1 for a in payload.attempts if a.webhook_id == delivery.webhook_id)
        at = time.time()
        outcome = self.send(payload.url, delivery, payload.body)
        self._record(delivery, payload.deliveries_key, attempt, at, outcome)
        if delivery.event == "completed" and outcome.retryable:
            delay = next_delay(
                self.settings.webhook_retry_schedule_s, delivery.n, outcome.retry_after
            )
            if delay is None:
                log.warning("webhook %s: gave up after %d tries", delivery.webhook_id, attempt)
            else:
                self.redis.zadd(
                    WEBHOOK_SCHEDULE, {delivery.next_try().encode(): time.time() + delay}
                )
        return outcome

    def send(self, url: str, delivery: Delivery, body: bytes) -> Outcome:
        started = time.perf_counter()

        def done(**fields: Any) -> Outcome:
            return Outcome(duration_ms=round((time.perf_counter() - started) * 1000, 3), **fields)

        try:
            target = ssrf.resolve(url, self.allow)
        except ssrf.UnsafeUrl as exc:
            return done(error=f"refused: {exc}", refused=True)
        except (OSError, UnicodeError, ValueError) as exc:
            return done(error=f"does not resolve: {exc}")
        headers = signed_headers(self.secrets, delivery.webhook_id, body, time.time())
        headers |= {
            "content-type": "application/json",
            "host": _host_header(target),
            "genq-event": delivery.event,
            "genq-object": delivery.object,  # job or batch: what the body is
        }
        # Connect to the address just checked, not to a fresh lookup of the name.
        pinned = httpx.URL(url).copy_with(host=str(target.ips[0]))
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        deadline = time.monotonic() + self.settings.webhook_timeout_s
        try:
            with self.http.stream(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            ) as response:
                read = 0
                cap = self.settings.webhook_max_response_bytes
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read >= cap or time.monotonic() > deadline:
                        break
                return done(
                    status_code=response.status_code,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
        except httpx.TimeoutException as exc:
            return done(error=f"timeout after {self.settings.webhook_timeout_s:g} s ({_name(exc)})")
        except httpx.HTTPError as exc:
            return done(error=f"{_name(exc)}: {exc}" if str(exc) else _name(exc))

    def _record(
        self, delivery: Delivery, key: str, attempt: int, at: float, outcome: Outcome
    ) -> None:
        entry = {
            "event": delivery.event,
            "webhook_id": delivery.webhook_id,
            "attempt": attempt,
            "at": at,
            "duration_ms": outcome.duration_ms,
        }
        if outcome.status_code is not None:
            entry["status_code"] = outcome.status_code
        if outcome.error is not None:
            entry["error"] = outcome.error
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(entry, separators=(",", ":")))
            pipe.expire(key, self.settings.result_ttl_s)
            pipe.execute()
        log.info(
            "webhook %s attempt %d: %s",
            delivery.webhook_id,
            attempt,
            outcome.status_code or outcome.error,
        )


def _name(exc: Exception) -> str:
    return type(exc).__name__


def _host_header(target: ssrf.Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


class Scheduler:
    """Every ``poll_s``, move the deliveries that are due onto the webhooks queue."""

    BATCH = 100

    def __init__(self, client: redis.Redis, celery: Celery, poll_s: float):
        self.redis = client
        self.celery = celery
        self.poll_s = poll_s
        self._move = client.register_script(scripts.MOVE_DUE_WEBHOOKS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def move_due(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        moved = 0
        while True:
            members = self.redis.zrangebyscore(WEBHOOK_SCHEDULE, "-inf", now, 0, self.BATCH)
            if not members:
                return moved
            messages = []
            for member in members:
                fields = json.loads(member)
                delivery = Delivery.decode(fields)
                messages.append(
                    celery_message(
                        self.celery,
                        TASK_WEBHOOK,
                        uuid.uuid4().hex,
                        [fields],
                        WEBHOOK_QUEUE,
                        repr(f"{delivery.webhook_id} try {delivery.n + 1}"),
                    )
                )
            moved += int(
                self._move(
                    keys=[WEBHOOK_SCHEDULE, WEBHOOK_QUEUE],
                    args=[len(members), *members, *messages],
                )
            )
            if len(members) < self.BATCH:
                return moved

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.move_due()
            except Exception:  # noqa: BLE001 - Redis may be restarting; the next poll retries
                log.warning("webhook schedule poll failed", exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
