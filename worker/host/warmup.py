"""The warm-up a worker runs before it consumes: the policy (genq.contract.settings.WarmupPolicy) as
engine requests, run through the same ``Engine.generate`` as every job.

Steps, in order (each waits for the one before):

1. ``prompt_<n>``: one greedy request alone per prompt length: the chat template, tokenization
   and prefill of that length.
2. ``sampling_<i>``: one request alone per sampling option: the sampler's path for a batch of
   only that kind (greedy alone takes an argmax fast path; top-p/top-k, seeds and penalties
   take others).
3. ``batch_<b>``: ``b`` requests at once, mixing the sampling options: the widest decode batch
   the worker will run, and mixed sampling within it.

Every request must end with at least one output token, or :class:`WarmupFailed` says which one
failed and why, and the worker does not start.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

from genq.contract.schemas import (
    STRUCTURED_OUTPUT,
    ChatMessage,
    JobInput,
    SamplingOptions,
    WarmupStepInfo,
)
from genq.contract.settings import WarmupPolicy
from worker.host.engine import GenerationResult
from worker.host.runner import GeneratingEngine

# Common English words that most BPE vocabularies hold as one token each (with their leading
# space), so that a prompt of n words is about n tokens.
_WORDS = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "on")


class WarmupFailed(Exception):
    pass


@dataclass
class WarmupStep:
    name: str
    jobs: list[JobInput]


def filler_prompt(tokens: int) -> str:
    """A prompt of about ``tokens`` tokens (before the chat template)."""
    return " ".join(itertools.islice(itertools.cycle(_WORDS), tokens))


def plan(
    policy: WarmupPolicy, default_batch: int, features: list[str] | None = None
) -> list[WarmupStep]:
    """The policy as steps of requests (empty when warm-up is switched off). A sampling option
    with structured output is left out where the engine lacks it (``features``, from
    worker.host.engine.engine_features; None: it has everything)."""
    if not policy.enabled:
        return []
    sampling = [
        options
        for options in policy.sampling
        if features is None or not options.structure() or STRUCTURED_OUTPUT in features
    ] or [SamplingOptions()]

    def job(tokens: int, sampling: SamplingOptions) -> JobInput:
        options = sampling.model_copy(
            update={"max_tokens": policy.max_tokens, "min_tokens": policy.max_tokens}
        )
        return JobInput(
            messages=[ChatMessage(role="user", content=filler_prompt(tokens))], sampling=options
        )

    shortest = min(policy.prompt_tokens)
    greedy = SamplingOptions()
    steps = [WarmupStep(f"prompt_{n}", [job(n, greedy)]) for n in policy.prompt_tokens]
    steps += [
        WarmupStep(f"sampling_{i}", [job(shortest, options)]) for i, options in enumerate(sampling)
    ]
    width = policy.batch or default_batch
    mixed = itertools.islice(itertools.cycle(sampling), width)
    steps.append(WarmupStep(f"batch_{width}", [job(shortest, options) for options in mixed]))
    return steps


async def run(engine: GeneratingEngine, steps: list[WarmupStep]) -> list[WarmupStepInfo]:
    """Run the steps in order; raises :class:`WarmupFailed` at the first request that fails."""
    results = []
    for step in steps:
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                engine.generate(f"genq-warmup-{step.name}-{i}", job)
                for i, job in enumerate(step.jobs)
            ),
            return_exceptions=True,
        )
        seconds = time.perf_counter() - t0
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                raise WarmupFailed(
                    f"warm-up step {step.name} (request {i + 1} of {len(step.jobs)}) failed: "
                    f"{type(outcome).__name__}: {outcome}; the worker does not start. "
                    "Fit GENQ_WARMUP to the model (see genq.contract.settings.WarmupPolicy)."
                ) from outcome
            if outcome.output_tokens < 1:
                raise WarmupFailed(
                    f"warm-up step {step.name} (request {i + 1} of {len(step.jobs)}) generated "
                    f"no token (finish reason {outcome.finish_reason!r}); the worker does not start"
                )
        done = [o for o in outcomes if isinstance(o, GenerationResult)]
        results.append(
            WarmupStepInfo(
                name=step.name,
                requests=len(step.jobs),
                seconds=round(seconds, 3),
                prompt_tokens=max(o.prompt_tokens for o in done),
                output_tokens=sum(o.output_tokens for o in done),
            )
        )
    return results
