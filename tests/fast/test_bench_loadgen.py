"""The benchmark's closed loop (ops/bench/loadgen.py): c requests in flight, a new one sent as one
returns; with a ramp, the first c go out evenly over it instead of at once."""

from __future__ import annotations

import asyncio

from ops.bench.loadgen import _closed_loop


async def _answer_after(session: object, job: dict) -> dict:
    await asyncio.sleep(job["s"])
    return {"n": job["n"]}


def _first_sends(ramp_s: float) -> list[float]:
    jobs = [{"n": n, "s": 0.3} for n in range(8)]  # 2 rounds of 4 clients
    done, _ = asyncio.run(_closed_loop(jobs, 4, _answer_after, ramp_s=ramp_s))
    assert sorted(r["n"] for r in done) == list(range(8))  # every job sent once
    return sorted(r["span_s"][0] for r in done)[:4]


def test_without_a_ramp_the_first_requests_go_out_at_once() -> None:
    assert max(_first_sends(0.0)) < 0.05


def test_a_ramp_spreads_the_first_requests_evenly_over_it() -> None:
    firsts = _first_sends(0.2)  # 4 clients: at 0, 0.05, 0.1 and 0.15 s
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert all(0.03 < g < 0.12 for g in gaps), firsts
