"""`make run` (`genq up`) as its user reads it: its URLs, the worker's start-up a phase a line,
"ready", one line per job; no health-check polls. Then Ctrl-C, which a terminal sends to the whole
foreground process group (the embedded Redis is in it): it ends with "genq: stopped", exit code 0,
and nothing alarming on the way (no traceback, no vLLM ``EngineDeadError``, no nanobind "leaked"
list)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from genq.store.embedded import free_port
from tests.e2e.conftest import UpOutput, kill_up

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]  # a cold start on 2 shared cores

READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60
# One screen: the URLs, the worker's start a phase a line, "ready"; ~30 lines on a CPU, a few of
# them lines the engine's own processes print before any logging applies.
MAX_LINES_UNTIL_READY = 50
ALARMING = ("Traceback", "EngineDeadError", "leaked", "ERROR", "CRITICAL")


def test_up_starts_quietly_and_a_ctrl_c_stops_it_cleanly(tmp_path: Path) -> None:
    api_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GENQ_REDIS_URL")}
    for name in ("GENQ_LOG_LEVEL", "VLLM_LOGGING_LEVEL", "GENQ_FLOWER_BASIC_AUTH"):
        env.pop(name, None)  # the defaults, as `make run` has them
    env |= {
        "GENQ_API_PORT": str(api_port),
        "GENQ_FLOWER_PORT": str(flower_port),
        "GENQ_DATA_DIR": str(tmp_path / "data"),
        "GENQ_WORKER_CONCURRENCY": "8",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "genq.cli.main", "up"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    out = UpOutput(up)
    seen, read_until = out.seen, out.read_until

    started: list[psutil.Process] = []
    try:
        read_until(r"^genq: ready", READY_TIMEOUT_S)
        until_ready = "".join(seen)
        print(f"{len(seen)} lines until ready:\n{until_ready}")
        assert len(seen) <= MAX_LINES_UNTIL_READY, until_ready
        # No health-check polls: neither the API's access lines nor genq up's own requests.
        assert "/readyz" not in until_ready and "HTTP Request:" not in until_ready
        # Celery's and Flower's start-up narrative, uvicorn's, vLLM's: held back.
        for chatter in ("Registered tasks", "Uvicorn running", "Resolved architecture", "] ready."):
            assert chatter not in until_ready, chatter
        # The worker's start-up, a phase a line with its seconds, then its summary.
        assert re.search(r"Loading weights took [\d.]+ s", until_ready)
        assert re.search(r"init engine \(.*\) took [\d.]+ s", until_ready)
        assert re.search(r"genq: worker \S+ warm in [\d.]+ s", until_ready)

        answer = httpx.post(
            f"http://127.0.0.1:{api_port}/generate",
            json={"prompt": "What is the capital of France?"},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["id"]
        read_until(rf"job {job_id} succeeded in \d+ ms", 30)

        started = psutil.Process(up.pid).children(recursive=True)
        mark = len(seen)
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
        assert up.wait(STOP_TIMEOUT_S) == 0
    finally:
        if up.poll() is None:
            kill_up(up)
        out.close()
    after = "".join(seen[mark:])
    for word in ALARMING:
        assert word not in after, after
    assert seen[-1] == "genq: stopped\n", after
    assert psutil.wait_procs(started, timeout=10)[1] == []
