"""The benchmark's steady-state rate (ops/bench/report.steady_tps): tokens made while every
request slot was busy, from the first answer to the last request sent."""

from __future__ import annotations

from ops.bench.report import steady_tps


def test_counts_only_tokens_made_inside_the_window() -> None:
    # Two slots: jobs of 10 tok/s each. Slot 1 answers at 2 s and sends again; slot 2 runs 0-4 s;
    # the last job is sent at 4 s. Window 2-4 s: slot 1's second job and half of slot 2's.
    run = {
        "span_s": [[0, 2], [0, 4], [2, 4], [4, 6]],
        "job_tokens": [20, 40, 20, 20],
    }
    assert steady_tps(run) == (20.0, 2)


def test_runs_without_spans_have_none() -> None:
    assert steady_tps({"latency_s": [1.0]}) is None
    assert steady_tps({"span_s": [[0, 1]], "job_tokens": [5]}) is None  # one job: no window
