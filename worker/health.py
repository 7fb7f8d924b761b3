"""The worker's own HTTP endpoint, on ``GENQ_WORKER_HTTP_PORT``: what a container orchestrator
and Prometheus ask a worker directly.

- ``GET /healthz``: 200 while the process lives (from its first second: start-up takes minutes).
- ``GET /readyz``: 200 only once the engine is built, warmed up and the worker consumes the
  queue; 503 with the reason before that and once it is shutting down. The compose healthcheck
  and the k8s readiness probe use it.
- ``GET /metrics``: Prometheus text: ``genq_worker_ready``,
  ``genq_worker_startup_seconds{phase}`` (the phases of ``WorkerInfo.startup_s``), then the
  engine host's (worker.host.main): the job and engine metrics of worker.host.metrics and its
  default registry: that process's ``process_*``/``python_*`` and vLLM's own ``vllm:*`` metrics
  (vLLM registers them there).

A standard-library server on a daemon thread: it must answer while the engine is being built.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

log = logging.getLogger(__name__)


class WorkerHealth:
    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: noise on every counter and histogram
        self.registry = CollectorRegistry()
        self._ready = Gauge(
            "genq_worker_ready",
            "1 once the worker is warm and consuming the queue, else 0",
            registry=self.registry,
        )
        self._startup = Gauge(
            "genq_worker_startup_seconds",
            "Seconds each start-up phase of this worker took (total: process start to warm)",
            ["phase"],
            registry=self.registry,
        )
        # The engine host's metrics (worker.host.main): genq's job and engine metrics, vLLM's.
        self.engine_metrics: Callable[[], bytes] | None = None
        self.not_ready_because = "the engine is starting"
        self._server: ThreadingHTTPServer | None = None

    @property
    def ready(self) -> bool:
        return self.not_ready_because == ""

    def set_startup(self, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self._startup.labels(phase=phase).set(seconds)

    def set_ready(self) -> None:
        self.not_ready_because = ""
        self._ready.set(1)

    def set_not_ready(self, why: str) -> None:
        self.not_ready_because = why
        self._ready.set(0)

    def exposition(self) -> bytes:
        """Readiness and start-up, then the engine host's metrics (or, before it is up, this
        process's default registry)."""
        own = generate_latest(self.registry)
        if self.engine_metrics is not None:
            try:
                return own + self.engine_metrics()
            except Exception:  # noqa: BLE001 - a scrape must not fail on a busy or gone host
                log.warning("engine host metrics unavailable", exc_info=True)
        return own + generate_latest(REGISTRY)

    def serve(self, host: str, port: int) -> int:
        """Start serving on a daemon thread; returns the port (0 picks a free one)."""
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/healthz":
                    self._send(200, "application/json", b'{"status": "ok"}')
                elif self.path == "/readyz":
                    if health.ready:
                        self._send(200, "application/json", b'{"status": "ready"}')
                    else:
                        error = {"type": "not_ready", "message": health.not_ready_because}
                        self._send(503, "application/json", json.dumps({"error": error}).encode())
                elif self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, health.exposition())
                else:
                    self._send(404, "application/json", b'{"error": {"type": "not_found"}}')

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # probes every few seconds: not worth a log line each

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="genq-worker-http", daemon=True
        ).start()
        bound = self._server.server_address[1]
        log.info("worker HTTP endpoint on %s:%d (/healthz, /readyz, /metrics)", host, bound)
        return bound
