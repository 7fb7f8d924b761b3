"""`genq worker --gpus`: the supervisor of one worker per GPU group (genq/cli/gpus.py, on
genq/cli/supervisor.py, whose rules tests/fast/test_supervisor.py tests alone).

No engine and no GPU: the supervisor runs as a real process, but its children are a stand-in
for the worker (``STAND_IN_WORKER``, written to tmp_path), which records the environment it got
and then waits for SIGTERM, or exits with a code of its own after a delay, as a worker whose
engine fails to load or dies would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genq.cli.gpus import GpuSpecError, gpu_groups
from genq.contract.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]

# The worker's stand-in: argv[1] is the file it records to, one JSON line per event. STAND_IN_EXIT
# maps a CUDA_VISIBLE_DEVICES value to [seconds, code]: that child exits so, after so long.
STAND_IN_WORKER = """
import json, os, signal, sys, time

def record(event):
    line = {"event": event, "pid": os.getpid()}
    for name in ("CUDA_VISIBLE_DEVICES", "GENQ_WORKER_NAME", "GENQ_WORKER_HTTP_PORT",
                 "GENQ_WORKER_GPUS"):
        line[name] = os.environ.get(name)
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(line) + "\\n")

def on_sigterm(signum, frame):
    record("sigterm")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_sigterm)
record("start")
plan = json.loads(os.environ.get("STAND_IN_EXIT", "{}")).get(os.environ["CUDA_VISIBLE_DEVICES"])
deadline = time.monotonic() + (plan[0] if plan else 30)
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(plan[1] if plan else 0)
"""

# A test-only entry: the production supervisor, with the stand-in as its children.
SUPERVISOR = """
import logging, sys
from genq.contract.settings import WorkerSettings
from genq.cli import gpus
logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
gpus_, stand_in, record, restart_after_s = sys.argv[1:]
sys.exit(gpus.run(WorkerSettings(), gpus_, argv=[sys.executable, stand_in, record],
                  restart_after_s=float(restart_after_s), restart_delay_s=0.2))
"""


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without the shell's GENQ_*, REDIS_URL and CUDA_VISIBLE_DEVICES."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GENQ_") and k not in ("CUDA_VISIBLE_DEVICES", "REDIS_URL")
    }
    env["PYTHONPATH"] = str(REPO)
    env["GENQ_SHUTDOWN_GRACE_S"] = "0"  # the stand-in stops at once; the grace is then 10 s
    env.update(extra)
    return env


class Supervisor:
    def __init__(self, tmp_path: Path, gpus: str, restart_after_s: float = 60.0, **env: str):
        stand_in = tmp_path / "stand_in_worker.py"
        stand_in.write_text(STAND_IN_WORKER)
        self.record = tmp_path / "record.jsonl"
        self.process = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, gpus, str(stand_in), str(self.record)]
            + [str(restart_after_s)],
            env=_env(**env),
            stderr=subprocess.PIPE,
            text=True,
        )

    def events(self, event: str = "start") -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        # Whole lines only: a stand-in may be writing the last one.
        lines = [json.loads(line) for line in self.record.read_text().split("\n")[:-1]]
        return [line for line in lines if line["event"] == event]

    def finish(self, timeout_s: float = 8.0) -> tuple[int, str]:
        try:
            _, stderr = self.process.communicate(timeout=timeout_s)
        finally:
            self.process.kill()
        return self.process.returncode, stderr


Start = Callable[..., Supervisor]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(gpus, restart_after_s=60, **env)``: a supervisor, killed at the end whatever
    happened (its stand-ins then get SIGTERM from their parent-death signal)."""
    started: list[Supervisor] = []

    def run(gpus: str, restart_after_s: float = 60.0, **env: str) -> Supervisor:
        started.append(Supervisor(tmp_path, gpus, restart_after_s, **env))
        return started[-1]

    yield run
    for sup in started:
        sup.process.kill()
        sup.process.communicate(timeout=5)


def _wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_gpus_split_into_groups_of_the_tensor_parallel_size() -> None:
    assert gpu_groups("0,1") == [["0"], ["1"]]
    assert gpu_groups(" 0, 1 ,2,3", 2) == [["0", "1"], ["2", "3"]]
    assert gpu_groups("3,2,1,0", 4) == [["3", "2", "1", "0"]]
    for spec, tp, message in [
        ("0,1,2", 2, "do not split into engines of tensor_parallel_size 2"),
        ("0,1,0", 1, "listed twice"),
        ("1,01", 1, "listed twice"),
        ("0,,1", 1, "empty GPU id"),
        ("", 1, "empty GPU id"),
        ("0,a", 1, "not a GPU index: a"),
        ("0,-1", 1, "not a GPU index: -1"),
        ("0,1", 0, "is not a count"),
        ("0,1", "2", "is not a count"),
    ]:
        with pytest.raises(GpuSpecError, match=message):
            gpu_groups(spec, tp)


def test_the_engine_args_give_the_tensor_parallel_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_ENGINE_ARGS", '{"tensor_parallel_size": 2}')
    monkeypatch.setenv("GENQ_WORKER_GPUS", "")  # compose passes an unset variable as ""
    settings = WorkerSettings()
    assert settings.worker_gpus is None
    assert gpu_groups("0,1,2,3", settings.engine_args["tensor_parallel_size"]) == [
        ["0", "1"],
        ["2", "3"],
    ]


def test_each_child_gets_its_gpus_name_and_port_and_sigterm_stops_all(start: Start) -> None:
    sup = start(
        "0,1",
        GENQ_WORKER_NAME="w",
        GENQ_WORKER_HTTP_PORT="9300",
        GENQ_WORKER_GPUS="0,1",
    )
    _wait_for(lambda: len(sup.events()) == 2)
    started = sorted(sup.events(), key=lambda e: e["CUDA_VISIBLE_DEVICES"])
    seen = [
        (e["CUDA_VISIBLE_DEVICES"], e["GENQ_WORKER_NAME"], e["GENQ_WORKER_HTTP_PORT"])
        for e in started
    ]
    assert seen == [("0", "w-gpu0", "9300"), ("1", "w-gpu1", "9301")]
    assert all(e["GENQ_WORKER_GPUS"] is None for e in started)  # ordinary workers

    sup.process.send_signal(signal.SIGTERM)
    code, stderr = sup.finish()
    assert code == 0, stderr
    assert len(sup.events("sigterm")) == 2
    assert all(_gone(e["pid"]) for e in started)
    assert "worker w-gpu1: CUDA_VISIBLE_DEVICES=1, port 9301" in stderr


def test_tensor_parallel_groups_share_one_child(start: Start) -> None:
    sup = start("0,1,2,3", GENQ_ENGINE_ARGS='{"tensor_parallel_size": 2}')
    _wait_for(lambda: len(sup.events()) == 2)
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in sup.events()) == ["0,1", "2,3"]
    assert any(e["GENQ_WORKER_NAME"].endswith("-gpu0-1") for e in sup.events())
    assert all(e["GENQ_WORKER_HTTP_PORT"] is None for e in sup.events())  # no port: none
    sup.process.send_signal(signal.SIGINT)
    assert sup.finish()[0] == 0


def test_a_child_that_fails_at_start_stops_all_with_its_code(start: Start) -> None:
    sup = start("0,1", STAND_IN_EXIT='{"1": [0.5, 3]}')
    code, stderr = sup.finish()
    assert code == 3, stderr
    assert "start-up failed" in stderr
    (survivor,) = [e for e in sup.events() if e["CUDA_VISIBLE_DEVICES"] == "0"]
    assert [e["pid"] for e in sup.events("sigterm")] == [survivor["pid"]]
    assert _gone(survivor["pid"])


def test_a_child_that_dies_after_it_was_up_is_restarted(start: Start) -> None:
    # Up 1.2 s > restart_after_s (1 s), then exits 70: a worker whose engine died.
    sup = start("0,1", restart_after_s=1.0, STAND_IN_EXIT='{"1": [1.2, 70]}')
    _wait_for(lambda: sum(e["CUDA_VISIBLE_DEVICES"] == "1" for e in sup.events()) >= 2)
    assert sup.process.poll() is None  # still supervising
    assert sum(e["CUDA_VISIBLE_DEVICES"] == "0" for e in sup.events()) == 1  # not touched
    sup.process.send_signal(signal.SIGTERM)
    code, stderr = sup.finish()
    assert code == 0, stderr
    assert "worker genq@" in stderr and "-gpu1 exited (70)" in stderr
    assert "restart #1" in stderr


def test_children_stop_when_the_supervisor_is_killed(start: Start) -> None:
    sup = start("0,1")
    _wait_for(lambda: len(sup.events()) == 2)
    sup.process.kill()  # no chance to forward anything: the children's parent-death signal
    sup.finish()
    _wait_for(lambda: len(sup.events("sigterm")) == 2)


def test_the_supervisor_imports_no_engine() -> None:
    code = (
        "import sys, genq.cli.gpus; print(sorted({'torch', 'vllm', 'celery'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=10
    )
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["worker", "--gpus", "0,,1"], "genq worker: --gpus '0,,1': empty GPU id"),
        (["up", "--gpus", "0,1,2"], "3 GPUs do not split into engines of tensor_parallel_size 2"),
    ],
)
def test_the_cli_refuses_bad_gpus_in_one_line(command: list[str], message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "genq.cli.main", *command],
        env=_env(GENQ_ENGINE_ARGS='{"tensor_parallel_size": 2}' if command[0] == "up" else "{}"),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
