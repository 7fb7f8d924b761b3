"""The warm-up policy: what a worker runs before it consumes, and that one failed request keeps
it from starting. A FAKE engine stands in for vLLM here (fast tier); tests/e2e runs the real
policy on the real engine."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from genq.contract.schemas import JobInput
from genq.contract.settings import WarmupPolicy, WorkerSettings
from worker.host import warmup
from worker.host.engine import GenerationResult, InvalidInput, Progress


class FakeEngine:
    """Records every request; answers with ``tokens`` tokens, or fails the requests whose id
    contains ``fail``."""

    def __init__(self, fail: str | None = None, tokens: int = 4):
        self.fail = fail
        self.tokens = tokens
        self.requests: list[tuple[str, JobInput]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def generate(
        self, request_id: str, job: JobInput, progress: Progress | None = None
    ) -> GenerationResult:
        self.requests.append((request_id, job))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if self.fail and self.fail in request_id:
            raise InvalidInput("the prompt is longer than the model's context")
        words = len(job.messages[0].content.split())
        return GenerationResult("x", "length", words + 5, self.tokens, 0.001, 0.01)


def test_the_default_policy_covers_prompt_lengths_sampling_options_and_the_batch() -> None:
    policy = WarmupPolicy()
    steps = warmup.plan(policy, default_batch=32)
    names = [s.name for s in steps]
    assert names == [
        "prompt_16",
        "prompt_512",
        "prompt_2048",
        *(f"sampling_{i}" for i in range(len(policy.sampling))),
        "batch_32",
    ]
    longest = steps[2].jobs[0].messages[0].content
    assert len(longest.split()) == 2048
    batch = steps[-1].jobs
    assert len(batch) == 32
    # The batch mixes every sampling option users send, each forced to the warm-up length.
    kinds = {(j.sampling.temperature, j.sampling.top_p, j.sampling.top_k) for j in batch}
    assert kinds == {(o.temperature, o.top_p, o.top_k) for o in policy.sampling}
    assert all(j.sampling.max_tokens == j.sampling.min_tokens == 16 for s in steps for j in s.jobs)


def test_the_policy_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_WARMUP", '{"prompt_tokens": [8, 100], "batch": 4}')
    policy = WorkerSettings().warmup
    assert (policy.prompt_tokens, policy.batch, policy.enabled) == ([8, 100], 4, True)
    monkeypatch.delenv("GENQ_WARMUP")
    monkeypatch.setenv("GENQ_WARMUP__ENABLED", "false")
    monkeypatch.setenv("GENQ_WARMUP__SAMPLING", '[{"temperature": 0.5, "top_p": 0.5}]')
    policy = WorkerSettings().warmup
    assert not policy.enabled and policy.sampling[0].top_p == 0.5
    assert warmup.plan(policy, default_batch=8) == []


@pytest.mark.parametrize(
    "value",
    ['{"prompt_tokens": [0]}', '{"prompt_tokens": []}', '{"batch": 0}', '{"tempo": 1}'],
)
def test_a_bad_policy_is_refused_before_the_engine_starts(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GENQ_WARMUP", value)
    with pytest.raises(ValidationError):
        WorkerSettings()


def test_every_step_runs_in_order_and_the_batch_runs_at_once() -> None:
    engine = FakeEngine()
    steps = warmup.plan(WarmupPolicy(prompt_tokens=[4, 64], batch=8), default_batch=32)
    results = asyncio.run(warmup.run(engine, steps))
    assert [r.name for r in results] == [s.name for s in steps]
    assert [r.requests for r in results] == [len(s.jobs) for s in steps]
    assert results[1].prompt_tokens == 64 + 5  # as the engine counted it
    assert results[-1].output_tokens == 8 * 4
    assert len(engine.requests) == sum(len(s.jobs) for s in steps)
    assert engine.most_in_flight == 8


def test_a_failed_warm_up_request_stops_the_start_and_says_which() -> None:
    engine = FakeEngine(fail="prompt_64")
    steps = warmup.plan(WarmupPolicy(prompt_tokens=[4, 64, 128]), default_batch=4)
    with pytest.raises(warmup.WarmupFailed, match=r"step prompt_64 .*longer than the model"):
        asyncio.run(warmup.run(engine, steps))
    # Nothing after the failed step ran.
    assert not any("prompt_128" in request_id for request_id, _ in engine.requests)


def test_a_warm_up_request_that_generates_nothing_fails_the_start() -> None:
    steps = warmup.plan(WarmupPolicy(prompt_tokens=[4]), default_batch=2)
    with pytest.raises(warmup.WarmupFailed, match="generated no token"):
        asyncio.run(warmup.run(FakeEngine(tokens=0), steps))
