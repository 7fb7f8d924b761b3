"""The engine on its own, no queue: vLLM's offline ``LLM.generate``.

- ``limit``: every prompt in one ``generate`` call (the engine's own throughput limit);
- ``seed``: one blocking ``generate`` per request, one after another (the seed's pattern).

Same engine options as a genq worker (``worker.engine.resolve_engine_args``). Prints one JSON line.
Run by ``ops/bench/bench.py``; alone: ``python ops/bench/offline.py --model DIR --prompts-file F``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from worker.engine import resolve_engine_args  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument(
        "--prompts-file", required=True, help="JSON list of {prompt, max_tokens, min_tokens}"
    )
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--engine-args", default="{}")
    p.add_argument("--seed-requests", type=int, default=8, help="requests run one at a time")
    p.add_argument(
        "--chat", action="store_true", help="ask each prompt as one user turn, as /generate does"
    )
    args = p.parse_args()

    from vllm import LLM, SamplingParams  # noqa: PLC0415

    jobs = json.load(open(args.prompts_file))
    t0 = time.perf_counter()
    llm = LLM(**resolve_engine_args(args.model, json.loads(args.engine_args), args.max_num_seqs))
    construct_s = time.perf_counter() - t0

    def params(job: dict) -> SamplingParams:
        return SamplingParams(
            temperature=0, max_tokens=job["max_tokens"], min_tokens=job["min_tokens"]
        )

    def prompt(job: dict) -> object:
        if not args.chat:
            return job["prompt"]
        # The same rendering as worker.engine: chat template as text, no extra special tokens.
        tok = llm.get_tokenizer()
        text = tok.apply_chat_template(
            [{"role": "user", "content": job["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        return {"prompt_token_ids": tok(text, add_special_tokens=False)["input_ids"]}

    llm.generate(["Warm-up."], SamplingParams(max_tokens=8), use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate([prompt(j) for j in jobs], [params(j) for j in jobs], use_tqdm=False)
    limit_s = time.perf_counter() - t0
    limit_tokens = sum(len(o.outputs[0].token_ids) for o in outs)

    seed_jobs = jobs[: args.seed_requests]
    latencies, seed_tokens = [], 0
    t0 = time.perf_counter()
    for job in seed_jobs:
        t1 = time.perf_counter()
        out = llm.generate([prompt(job)], params(job), use_tqdm=False)[0]
        latencies.append(time.perf_counter() - t1)
        seed_tokens += len(out.outputs[0].token_ids)
    seed_s = time.perf_counter() - t0
    print(
        "GENQ-BENCH-RESULT "
        + json.dumps(
            {
                "construct_s": construct_s,
                "limit": {"jobs": len(jobs), "seconds": limit_s, "output_tokens": limit_tokens},
                "seed": {
                    "jobs": len(seed_jobs),
                    "seconds": seed_s,
                    "output_tokens": seed_tokens,
                    "latencies_s": latencies,
                },
            }
        )
    )


if __name__ == "__main__":  # LLM() spawns its engine core process
    main()
