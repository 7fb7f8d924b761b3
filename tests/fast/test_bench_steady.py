"""The benchmark's steady-state numbers (ops/bench/report.py): tokens made while every request
slot was busy, from the first answer to the last request sent; the engine's wave period; how
often new jobs joined its batch."""

from __future__ import annotations

import pytest

from ops.bench.report import admissions, burst_way_in, steady_tps, wave_period_s


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


def test_wave_period_is_the_median_gap_between_waves() -> None:
    # Waves of 2 jobs answered at 1, 3, 5.5 and 7.5 s: gaps 2, 2.5, 2 s.
    done = [1.0, 1.0, 3.0, 3.0, 5.5, 5.5, 7.5, 7.5]
    run = {"concurrency": 4, "span_s": [[0.0, d] for d in done]}
    assert wave_period_s(run, batch=2) == 2.0
    assert wave_period_s(run | {"concurrency": 3}, batch=2) is None  # no wave waits behind another


def test_admissions_count_genq_first_tokens_from_the_api_accept() -> None:
    # 40 s, a step a second admits 4 jobs. genq's time to first token counts from the API's
    # accept, which came 0-60 ms after each send: with the accept time put back, the 4 first
    # tokens of a step fall together again.
    spans, accepted_ms, ttfts = [], [], []
    for second in range(40):
        for k in range(4):
            spans.append([second - 0.02 * k, second + 3.0])
            accepted_ms.append(20.0 * k)
            ttfts.append(0.1)
    run = {"span_s": spans, "ttft_s": ttfts, "send_to_accept_ms": accepted_ms}
    per_s, p50, p90 = admissions(run)
    assert per_s == pytest.approx(1.0, rel=0.1) and (p50, p90) == (4, 4)
    # Without the accept times every first token stands alone.
    assert admissions(run | {"send_to_accept_ms": None})[1] == 1
    assert admissions(run | {"ttft_s": [None] * len(spans)}) is None  # not streamed


def test_the_burst_column_gives_when_its_jobs_were_accepted_then_started() -> None:
    # 8 jobs in flight, sent at 0 s; the API accepts the k-th at 0.1 * (k + 1) s and the worker
    # starts each 0.5 s later; a second round (sent later) does not move the first c.
    sends = [0.0] * 8 + [5.0] * 8
    run = {
        "concurrency": 8,
        "span_s": [[sent, sent + 3] for sent in sends],
        "send_to_accept_ms": [100.0 * (k % 8 + 1) for k in range(16)],
        "queue_ms": [500.0] * 16,
    }
    assert burst_way_in(run) == "0.10/0.20/0.80 -> 0.60/0.70/1.30"
