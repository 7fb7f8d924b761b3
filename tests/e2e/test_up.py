"""`genq up` (what `make run` ends in): the whole stack on embedded defaults, then Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from genq.store.embedded import free_port
from tests.e2e.conftest import UpOutput, kill_up

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]  # two cold starts on 2 shared cores


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_flower_metrics(port: int, fragments: list[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        lines = [ln for ln in text.splitlines() if ln.startswith("flower_events_total{")]
        online = [ln for ln in text.splitlines() if ln.startswith("flower_worker_online{")]
        if (
            online
            and online[0].endswith(" 1.0")
            and any(all(f in ln for f in fragments) for ln in lines)
        ):
            return
        time.sleep(0.5)
    raise AssertionError(f"Flower never showed {fragments}:\n{text[-3000:]}")


def test_up_serves_restarts_a_dead_worker_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    api_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GENQ_REDIS_URL")}
    env |= {
        "GENQ_API_PORT": str(api_port),
        "GENQ_FLOWER_PORT": str(flower_port),
        "GENQ_DATA_DIR": str(tmp_path / "data"),
        "GENQ_WORKER_CONCURRENCY": "8",
    }
    env.pop("GENQ_FLOWER_BASIC_AUTH", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "genq.cli.main", "up"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out = UpOutput(up)
    seen, read_until = out.seen, out.read_until

    try:
        read_until("genq: ready", 300)
        printed = "".join(seen)
        assert f"http://127.0.0.1:{api_port}" in printed
        assert f"http://127.0.0.1:{flower_port}" in printed
        assert "embedded Redis at redis://127.0.0.1:" in printed
        # No GENQ_WEBHOOK_SECRET: one is made, kept under the data dir and printed once.
        secret = (tmp_path / "data" / "webhook_secret").read_text().strip()
        assert secret.startswith("whsec_") and printed.count(secret) == 1
        # No GENQ_FLOWER_BASIC_AUTH: a Flower login is made the same way, for the dashboard and
        # its API alike.
        login_file = tmp_path / "data" / "flower_login"
        login = login_file.read_text().strip()
        assert login.startswith("genq:") and printed.count(login) == 1
        assert login_file.stat().st_mode & 0o777 == 0o600
        user, _, password = login.partition(":")

        answer = httpx.post(
            f"http://127.0.0.1:{api_port}/generate",
            json={"prompt": "What is the capital of France?"},
            timeout=60,
        )
        assert answer.status_code == 200 and "Paris" in answer.json()["generated_text"]
        assert httpx.get(f"http://127.0.0.1:{flower_port}/healthcheck").text == "OK"
        # Flower saw the worker and the task (from Celery's events, as its dashboard does).
        _wait_for_flower_metrics(flower_port, ['type="task-succeeded"', 'task="genq.generate"'])
        # Its worker page (Pool) shows the worker's start-up by phase and its warm-up.
        flower_api = f"http://127.0.0.1:{flower_port}/api/workers"
        assert httpx.get(flower_api, timeout=30).status_code == 401
        workers = httpx.get(
            flower_api, params={"refresh": "true"}, auth=(user, password), timeout=30
        ).json()
        (pool,) = [
            w["stats"]["pool"]
            for w in workers.values()
            if "genq-startup-s" in w["stats"].get("pool", {})
        ]
        assert any(line.startswith("warmup ") for line in pool["genq-startup-s"])
        assert pool["genq-warm-up"][-1].startswith("batch_8: 8 x ")
        # The embedded Redis keeps an append-only file.
        assert list((tmp_path / "data" / "redis").glob("appendonly*"))

        # A worker that dies is restarted, and serves again once warm.
        (worker,) = [
            p
            for p in psutil.Process(up.pid).children()
            if "celeryd" in (cmd := " ".join(p.cmdline())) and "genq-webhooks" not in cmd
        ]
        os.killpg(worker.pid, signal.SIGKILL)
        read_until("restart #1", 30)
        read_until("genq: ready", 300)
        again = httpx.post(
            f"http://127.0.0.1:{api_port}/generate",
            json={"prompt": "What is the capital of France?"},
            timeout=60,
        )
        assert again.status_code == 200 and "Paris" in again.json()["generated_text"]

        started = psutil.Process(up.pid).children(recursive=True)
        # redis, api, worker (+ engine core, engine worker), webhooks, flower
        assert len(started) >= 6
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            kill_up(up)
        out.close()

    gone, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], f"left running: {[(p.pid, p.name()) for p in alive]}"
    assert _port_is_free(api_port) and _port_is_free(flower_port)
