"""ops/bench/engine_core.py on small made-up inputs: py-spy's raw stacks sorted into step phases,
and first tokens grouped into admission events."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ops.bench.engine_core import admission_events, phase_shares

STEP = "run_busy_loop (vllm/v1/engine/core.py:1199);EngineCoreProc._process_engine_step (c.py:1)"


def test_phase_shares_of_the_main_thread(tmp_path: Path) -> None:
    lines = [
        f"thread (1): MainThread;{STEP};GPUModelRunner._model_forward (g.py:1);LlamaModel.forward (l.py:2) 3",
        f"thread (1): MainThread;{STEP};Scheduler.schedule (s.py:3) 6",
        "thread (1): MainThread 1",  # idle: an empty stack
        # another thread, busier in total but never in a step: not the main one
        "thread (2): Thread-2 (process_output_sockets);socket.recv (z.py:9) 50",
    ]
    profile = tmp_path / "x-core-profile.txt.gz"
    with gzip.open(profile, "wt") as out:
        out.write("\n".join(lines) + "\n")
    shares = phase_shares(profile)
    assert shares["model forward run by Python (no full CUDA graph)"] == pytest.approx(0.3)
    assert shares["scheduler: schedule"] == pytest.approx(0.6)
    assert shares["idle (empty stack)"] == pytest.approx(0.1)


def test_first_tokens_within_10_ms_are_one_admission() -> None:
    # 40 s of jobs: every second, one step admits 4 jobs (first tokens 2 ms apart) and another,
    # half a second later, admits 1; the first and last 8 s are trimmed.
    span_s, ttft_s = [], []
    for second in range(40):
        for k in range(4):
            span_s.append([second + 0.002 * k, second + 3.0])
            ttft_s.append(0.05)
        span_s.append([second + 0.5, second + 3.5])
        ttft_s.append(0.05)
    result = {
        "genq": [{"concurrency": 8, "span_s": span_s, "ttft_s": ttft_s}],
        "vllm_serve_plain": [{"concurrency": 8, "span_s": span_s, "ttft_s": [None] * len(span_s)}],
        "offline": {"tok_s": 1.0},
    }
    (row,) = admission_events(result)  # not streamed: no first tokens, no row
    assert row["system"] == "genq" and row["concurrency"] == 8
    assert row["events_per_s"] == pytest.approx(2.0, rel=0.1)
    assert (row["size_p50"], row["size_p90"]) == (4, 4)
