"""Celery's threads pool, plus the one signal it lacks.

Prefork children cannot host vLLM (they are daemonic, and the engine core is a child process),
and the stock threads pool sends no ``worker_process_init``. This pool sends it from ``on_start``,
which Celery runs before the consumer connects: the engine is built and warmed before the worker
takes its first job. Its threads then share that one engine. Selected with the ``worker_pool``
setting (the CLI's ``-P`` refuses a class path).
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

from celery import signals
from celery.concurrency import thread

from worker.celery_app import engine


class WarmThreadPool(thread.TaskPool):
    def on_start(self) -> None:
        signals.worker_process_init.send(sender=None)
        engine.host()  # raises if the engine failed to start: the worker exits non-zero
        super().on_start()
        self._start_every_thread()

    def _start_every_thread(self) -> None:
        """The executor starts a thread per task until it has ``limit``: start them all now, so
        that a first burst of jobs does not wait on thread starts (part of the warm-up)."""
        gate = threading.Barrier(self.limit + 1)
        for _ in range(self.limit):
            self.executor.submit(gate.wait)
        gate.wait()

    def _get_info(self) -> dict[str, Any]:
        """What ``celery inspect stats`` shows, and Flower's worker page under Pool: the
        engine's start-up by phase and the warm-up it ran, beside Celery's own pool numbers.
        Lists of strings, which Flower prints as they are (GET /v1/workers has the same as
        numbers)."""
        info = super()._get_info()
        try:
            worker = engine.host().info
        except RuntimeError:
            return info
        info["genq-ready-at"] = [datetime.fromtimestamp(worker.ready_at, timezone.utc).isoformat()]
        info["genq-startup-s"] = [f"{phase} {s:g}" for phase, s in worker.startup_s.items()]
        info["genq-warm-up"] = [
            f"{step.name}: {step.requests} x {step.prompt_tokens} tokens in {step.seconds:g} s"
            for step in worker.warmup_steps
        ]
        return info
