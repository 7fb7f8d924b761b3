"""The worker's HTTP endpoint (worker.health), served for real on a free port: /readyz tells
"not yet, and why" until the worker is warm and consuming, /metrics carries the start-up."""

from __future__ import annotations

import httpx

from worker.health import WorkerHealth


def test_readyz_turns_green_only_when_ready_and_metrics_show_the_start_up() -> None:
    health = WorkerHealth()
    port = health.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/healthz").status_code == 200
    starting = httpx.get(f"{url}/readyz")
    assert starting.status_code == 503
    assert starting.json()["error"] == {"type": "not_ready", "message": "the engine is starting"}
    assert "genq_worker_ready 0.0" in httpx.get(f"{url}/metrics").text

    health.set_startup({"engine": 21.5, "warmup": 3.25, "total": 30.0})
    health.set_not_ready("warm; the consumer is connecting")
    assert httpx.get(f"{url}/readyz").status_code == 503
    health.set_ready()
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "genq_worker_ready 1.0" in metrics.text
    assert 'genq_worker_startup_seconds{phase="warmup"} 3.25' in metrics.text

    health.set_not_ready("shutting down")
    assert httpx.get(f"{url}/readyz").json()["error"]["message"] == "shutting down"
    assert httpx.get(f"{url}/nothing").status_code == 404
