"""Celery's threads pool, plus the one signal it lacks.

Prefork children cannot host vLLM (they are daemonic, and the engine core is a child process),
and the stock threads pool sends no ``worker_process_init``. This pool sends it from ``on_start``,
which Celery runs before the consumer connects: the engine is built and warmed before the worker
takes its first job. Its threads then share that one engine. Selected with the ``worker_pool``
setting (the CLI's ``-P`` refuses a class path).
"""

from __future__ import annotations

from celery import signals
from celery.concurrency import thread

from worker import runtime


class WarmThreadPool(thread.TaskPool):
    def on_start(self) -> None:
        signals.worker_process_init.send(sender=None)
        runtime.current()  # raises if the engine failed to start: the worker exits non-zero
        super().on_start()
