"""The worker's one engine, and everything that lives as long as it, in the engine host process
(worker.host.main serves the Celery process's requests with it).

:meth:`WorkerRuntime.start` builds the engine, runs the warm-up policy on it (``worker.host.warmup``),
opens the Redis connections jobs will use and records the start-up by phase; until it returns,
the worker receives no job, and if a warm-up request fails it never does. :meth:`~WorkerRuntime.
announce` (once Celery's consumer is up) publishes the worker as warm in Redis and keeps it fresh
with a heartbeat; ``/readyz`` counts such workers. :meth:`~WorkerRuntime.stop` withdraws the
worker and shuts the engine down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from redis.asyncio import Redis

from genq.contract.constants import CANCEL_CHANNEL, WORKERS_SET, worker_key
from genq.contract.schemas import JobPayload, WorkerInfo
from genq.contract.settings import WorkerSettings
from genq.store.jobs import JobStore
from genq.store.models import register
from genq.store.pubsub import listen_forever
from genq.store.redis_client import async_redis
from worker.clock import process_age_s
from worker.host import warmup
from worker.host.engine import Engine, EngineFailed, cache_env, engine_features
from worker.host.metrics import WorkerMetrics
from worker.host.runner import REQUEUE, JobEnd, RunningJob, RunOptions, run_job
from worker.host.streams import OutputStreams
from worker.model_files import prepare_default_model
from worker.protocol import EXIT_ENGINE_DEAD

log = logging.getLogger(__name__)


def use_cache_dir(settings: WorkerSettings) -> None:
    """The compile caches (worker.host.engine.cache_env) under GENQ_CACHE_DIR/compile, each unless
    set already: one persistent path, and a restart reuses the compiled work. Before vLLM is
    imported."""
    for name, path in cache_env(settings.cache_dir / "compile").items():
        os.environ.setdefault(name, path)


class WorkerRuntime:
    def __init__(
        self,
        settings: WorkerSettings,
        name: str,
        engine: Engine,
        resend: Callable[[JobPayload], None],
        metrics: WorkerMetrics | None = None,
    ):
        self.settings = settings
        self.name = name
        self.engine = engine
        self.info: WorkerInfo  # set once warm
        self._resend = resend
        self.options = RunOptions(
            worker=name,
            lease_s=settings.lease_s,
            max_job_s=settings.max_job_seconds,
            max_attempts=settings.max_attempts,
            on_end=self._job_ended,
            resume=settings.resume,
        )
        self._metrics = metrics
        self._redis: Redis | None = None
        self._store: JobStore | None = None
        self._background: list[concurrent.futures.Future[None]] = []
        # Jobs running now (touched on the engine loop only), and when recent jobs ended here
        # with how many tokens each made: (monotonic time, output tokens).
        self.running: dict[str, RunningJob] = {}
        self._finished: deque[tuple[float, int]] = deque()
        self._started = time.monotonic()

    # -- start-up ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        settings: WorkerSettings,
        name: str,
        resend: Callable[[JobPayload], None],
        metrics: WorkerMetrics | None = None,
        parent_age_s: float = 0.0,
    ) -> WorkerRuntime:
        t0 = time.perf_counter()
        # Interpreter start, imports of genq and Celery, Celery's own set-up (``parent_age_s``:
        # the Celery process's, when it started this one), this process's start.
        before_init = parent_age_s + process_age_s()
        use_cache_dir(settings)
        model = settings.model or str(prepare_default_model(settings.cache_dir))
        t_model = time.perf_counter() - t0
        engine = Engine(
            model,
            settings.engine_args,
            max_num_seqs=settings.worker_concurrency,
            on_stats=metrics.engine_stats if metrics is not None else None,
            admission_wave=settings.admission_wave,
            admission_hold_steps=settings.admission_hold_steps,
            admission_gather_ms=settings.admission_gather_ms,
        )
        phases = engine.start()

        t1 = time.perf_counter()
        features = engine_features()
        steps = warmup.plan(
            settings.warmup, default_batch=settings.worker_concurrency, features=features
        )
        runtime = cls(settings, name, engine, resend, metrics)
        try:
            if steps:
                log.info(
                    "warming up: %d steps, %d requests",
                    len(steps),
                    sum(len(step.jobs) for step in steps),
                )
            warmed = engine.submit(warmup.run(engine, steps)).result()
            # Every job talks to Redis from the engine loop: open as many connections as jobs
            # can run at once now, not during the first burst.
            engine.submit(runtime._connect(settings.worker_concurrency)).result()
        except BaseException:
            engine.stop()
            raise
        # torch, vLLM and the engine's start-up made millions of objects that live as long as the
        # process: freeze them, so the collector's full passes do not walk them while jobs run
        # (vLLM's own server does the same after start-up).
        gc.collect()
        gc.freeze()
        warmup_s = time.perf_counter() - t1

        ready_at = time.time()
        startup = {
            "process": before_init,
            "model": t_model,
            **phases,
            "warmup": warmup_s,
            "total": before_init + time.perf_counter() - t0,
        }
        runtime.info = WorkerInfo(
            name=name,
            model=settings.served_model(),
            model_path=model,
            queue=settings.model_queue(),
            devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
            concurrency=settings.worker_concurrency,
            ready_at=ready_at,
            startup_s={phase: round(s, 3) for phase, s in startup.items()},
            warmup_steps=warmed,
            heartbeat_at=ready_at,
            features=features,
        )
        log.info("worker %s warm: %s", name, runtime.info.startup_s)
        listen = listen_forever(runtime._redis, CANCEL_CHANNEL, runtime._on_cancel)
        runtime._background.append(engine.submit(listen))
        if runtime.options.streams is not None:
            runtime._background.append(engine.submit(runtime.options.streams.run()))
        return runtime

    async def _connect(self, connections: int) -> None:
        # The Redis client belongs to the engine loop, like every job coroutine that uses it.
        self._redis = async_redis(self.settings.broker_url())
        self._store = JobStore(self._redis, self.settings.result_ttl_s, self.settings.stream_keep_s)
        if self.settings.stream_interval_s > 0:
            self.options.streams = OutputStreams(self._redis, self.settings.stream_interval_s)
        try:
            await asyncio.gather(*(self._redis.ping() for _ in range(connections)))
        except Exception:  # noqa: BLE001 - Redis may be restarting: the pool fills on demand
            log.warning("could not open Redis connections ahead of jobs", exc_info=True)

    def _on_cancel(self, data: str) -> None:
        """Cancel requests go to every worker; the one running the job aborts it."""
        request = json.loads(data)
        if (job := self.running.get(request["id"])) is not None:
            log.info("canceling job %s (%s)", request["id"], request["reason"])
            job.cancel(request["reason"])

    # -- jobs -------------------------------------------------------------------------------

    async def run(self, payload: dict[str, Any], redelivered: bool = False) -> dict[str, str]:
        """Run a job on the engine (on its loop). A job sent again after its worker died
        (``redelivered`` by kombu, or ``resent`` by a janitor) is claimed before the engine sees
        it (worker.host.runner). If the engine dies under it, the process exits (:meth:`die`)."""
        job = JobPayload.model_validate(payload)
        assert self._store is not None
        claim_first = redelivered or job.resent
        try:
            status = await run_job(
                job, self._store, self.engine, self.options, self.running, claim_first
            )
        except EngineFailed as exc:
            # die() waits on this loop: call it from a thread of its own, and never answer.
            why = f"the engine died while running job {job.id}: {exc}"
            threading.Thread(target=self.die, args=(why,)).start()
            await asyncio.Event().wait()
        return {"id": job.id, "status": status.value}

    def shutting_down(self) -> None:
        """SIGTERM: the consumer stops taking jobs; running ones get ``shutdown_grace_s`` to end,
        then go back to the queue."""
        timer = threading.Timer(self.settings.shutdown_grace_s, self.requeue_running)
        timer.daemon = True
        timer.start()

    def requeue_running(self) -> None:
        """Shutdown's grace is over: hand the jobs still running back to the queue."""

        def requeue() -> None:
            for job in self.running.values():
                job.cancel(REQUEUE)

        self.engine.loop.call_soon_threadsafe(requeue)

    def die(self, why: str) -> NoReturn:
        """The engine is gone: hand every running job back at once (drop their leases, so the
        janitor of a live worker resends them), leave the warm set, and exit non-zero so that
        whatever supervises the worker (`genq up`, compose, k8s) starts a fresh one. A hard
        exit: Celery's graceful shutdown would wait forever on jobs the dead engine holds."""
        log.critical("%s; exiting", why)
        assert self._store is not None
        try:
            claimed = [job_id for job_id, job in self.running.items() if job.claimed]
            self.engine.submit(self._store.release_leases(claimed)).result(timeout=5)
            self.engine.submit(self._withdraw()).result(timeout=5)
        except Exception:  # noqa: BLE001 - exiting anyway; the leases lapse on their own
            log.warning("could not hand jobs back before exiting", exc_info=True)
        logging.shutdown()
        os._exit(EXIT_ENGINE_DEAD)

    def _job_ended(self, ended: JobEnd) -> None:
        self._finished.append((time.monotonic(), ended.output_tokens))
        if self._metrics is not None:
            self._metrics.job_ended(ended)

    def _rates(self, window_s: float = 60.0) -> tuple[float, float]:
        """Jobs and output tokens per second that ended here over the last ``window_s``."""
        now = time.monotonic()
        while self._finished and self._finished[0][0] < now - window_s:
            self._finished.popleft()
        seconds = min(window_s, max(1.0, now - self._started))
        tokens = sum(t for _, t in self._finished)
        return round(len(self._finished) / seconds, 3), round(tokens / seconds, 2)

    # -- presence -----------------------------------------------------------------------------

    def announce(self) -> None:
        """Publish this worker as warm and consuming, and keep it fresh."""
        self.engine.submit(self._beat()).result()
        self._background.append(self.engine.submit(self._beat_forever()))

    async def _beat(self) -> None:
        assert self._redis is not None
        claimed = [job_id for job_id, job in self.running.items() if job.claimed]
        if claimed:
            await self._store.renew_leases(claimed, self.settings.lease_s)
        self.info.heartbeat_at = time.time()
        self.info.jobs_running = len(self.running)
        self.info.engine_requests = self.engine.unfinished_requests()
        self.info.jobs_per_s, self.info.tokens_per_s = self._rates()
        self.info.first_job_at = self.options.first_batch.first_started_at
        ttl = max(1, int(self.settings.heartbeat_s * 3))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(worker_key(self.name), self.info.model_dump_json(), ex=ttl)
            pipe.sadd(WORKERS_SET, self.name)
            register(pipe, self.info.model)
            await pipe.execute()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            if self.engine.is_dead:
                # Found idle; a running job's thread finds it too. Exit from a thread of its own
                # so that this loop can still serve die()'s last Redis calls.
                threading.Thread(target=self.die, args=("the engine died",)).start()
                return
            try:
                await self._beat()
                await self._recover_lapsed()
            except Exception:  # noqa: BLE001 - Redis may be restarting; the next beat retries
                log.warning("heartbeat failed", exc_info=True)

    async def _recover_lapsed(self) -> None:
        """The janitor: recount what waits; a processing job whose lease lapsed lost its worker:
        send it again (the first worker to claim it runs it; ``attempts`` counts the starts)."""
        assert self._store is not None
        # The waiting counters recounted: a job whose record expired while it waited (its
        # message lost, no worker for its model for a day) leaves them, so that the queue's
        # limit comes back (genq/store/lua/waiting.lua).
        await self._store.recount_waiting([self.settings.served_model()])
        resend_after_s = max(10, int(self.settings.lease_s * 2))
        for job_id in await self._store.lapsed_jobs(resend_after_s):
            record = await self._store.get(job_id)
            if record is None:
                continue
            payload = JobPayload(
                id=record.id,
                input=record.input,
                created_at=record.created_at,
                webhook=record.webhook_spec(),
                model=record.model,
            )
            await asyncio.get_running_loop().run_in_executor(None, self._resend, payload)
            log.warning("job %s lost its worker %s; sent again", job_id, record.worker)

    async def _withdraw(self) -> None:
        if self._redis is None:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(worker_key(self.name))
            pipe.srem(WORKERS_SET, self.name)
            await pipe.execute()
        await self._redis.aclose()

    def stop(self) -> None:
        for task in self._background:
            task.cancel()
        try:
            self.engine.submit(self._withdraw()).result(timeout=5)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.warning("could not withdraw worker %s from Redis", self.name, exc_info=True)
        self.engine.stop()
