"""The benchmark's jobs, the same list for every system.

- ``fixed``: N prompts, every one forced to exactly ``tokens`` output tokens
  (``min_tokens = max_tokens``): clean tokens per second.
- ``mix``: prompt and output lengths drawn from long-tailed (log-normal) distributions with a
  fixed seed, since varied lengths are where a server that batches statically loses. Output
  lengths are forced too, so every system produces the same tokens.

A job is ``{"prompt", "max_tokens", "min_tokens", "prompt_tokens"}``; the prompt is asked as one
user chat turn by every system. Prompt lengths are counted with the model's own tokenizer, before
the chat template adds its few tokens.
"""

from __future__ import annotations

import random
from typing import Any

TOPICS = [
    "a lighthouse",
    "the sea",
    "a clockmaker",
    "a city at night",
    "a long journey",
    "a garden",
    "the mountains",
    "an old library",
]

# Text to cut prompts of a given token length from.
_FILLER = (
    "The harbour town woke slowly. Fishing boats knocked against the pier, gulls argued over the "
    "nets, and the baker on the corner pulled the first loaves from an oven older than anyone "
    "could remember. Up on the cliff the lighthouse keeper wrote the night's weather in a "
    "leather book: wind from the north-west, a swell of two metres, one ship passing at three in "
    "the morning with its lights low. "
)


def fixed(n: int, tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"Write story number {i} about {TOPICS[i % len(TOPICS)]}.",
            "max_tokens": tokens,
            "min_tokens": tokens,
        }
        for i in range(n)
    ]


def mix(
    n: int,
    tokenizer: Any,
    *,
    seed: int = 0,
    prompt_median: int = 64,
    output_median: int = 64,
    sigma: float = 1.0,
    max_prompt: int = 1024,
    max_output: int = 512,
) -> list[dict[str, Any]]:
    """``n`` jobs whose prompt and output lengths are log-normal around the medians (``sigma`` in
    natural-log units: 1.0 puts ~16% of jobs above 2.7x the median), clipped to the maxima."""
    rng = random.Random(seed)
    filler_ids = tokenizer(_FILLER * (max_prompt // 40 + 2), add_special_tokens=False)["input_ids"]
    jobs = []
    for i in range(n):
        want_in = min(max_prompt, max(8, round(rng.lognormvariate(0, sigma) * prompt_median)))
        want_out = min(max_output, max(4, round(rng.lognormvariate(0, sigma) * output_median)))
        start = rng.randrange(0, 40)  # a different cut each time: no two prompts share a prefix
        text = tokenizer.decode(filler_ids[start : start + want_in])
        prompt = f"Request {i}. Read this and continue the story:\n{text}"
        jobs.append(
            {
                "prompt": prompt,
                "max_tokens": want_out,
                "min_tokens": want_out,
                "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
            }
        )
    return jobs


def describe(jobs: list[dict[str, Any]]) -> str:
    outs = sorted(j["max_tokens"] for j in jobs)
    ins = sorted(j.get("prompt_tokens", 0) for j in jobs)

    def q(v: list[int], p: float) -> int:
        return v[min(len(v) - 1, round(p * (len(v) - 1)))]

    text = f"{len(jobs)} jobs; output tokens p50/p90/max {q(outs, 0.5)}/{q(outs, 0.9)}/{outs[-1]}"
    if ins[-1]:
        text += f"; prompt tokens p50/p90/max {q(ins, 0.5)}/{q(ins, 0.9)}/{ins[-1]}"
    return text
