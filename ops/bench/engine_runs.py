"""The engine on its own, no queue and no HTTP: the references genq is measured against.

    --mode offline   vLLM's offline ``LLM.generate``:
                     ``limit``  every job of a workload in one call (the engine's own limit);
                     ``seed``   one blocking ``generate`` per request, one after another (the
                                seed's pattern), on the first ``--seed-requests`` fixed jobs.
    --mode async     vLLM's ``AsyncLLM`` (what a genq worker hosts) with exactly ``c`` requests
                     in flight, a new one starting as one ends: the engine's own throughput at
                     that concurrency, so the table can tell genq's cost from the engine's
                     batch-size curve.

Same engine options as a genq worker (``worker.host.engine.resolve_engine_args``); every prompt is
rendered with the chat template, as genq and ``vllm serve`` do. Prints one JSON line. Run by
ops/bench/bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from worker.host.engine import resolve_engine_args  # noqa: E402

MARKER = "GENQ-BENCH-RESULT "


def chat_ids(tokenizer: Any, job: dict) -> dict:
    # The same rendering as worker.host.engine: chat template as text, no extra special tokens.
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": job["prompt"]}], tokenize=False, add_generation_prompt=True
    )
    return {"prompt_token_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}


def params(job: dict, delta: bool = False) -> Any:
    """Greedy, forced length; ``delta``: each output carries only its new tokens (as genq's
    worker and ``vllm serve`` ask)."""
    from vllm import SamplingParams  # noqa: PLC0415
    from vllm.sampling_params import RequestOutputKind  # noqa: PLC0415

    kind = RequestOutputKind.DELTA if delta else RequestOutputKind.CUMULATIVE
    return SamplingParams(
        temperature=0,
        max_tokens=job["max_tokens"],
        min_tokens=job["min_tokens"],
        output_kind=kind,
    )


def offline(args: argparse.Namespace, workloads: dict[str, list[dict]]) -> dict:
    from vllm import LLM, SamplingParams  # noqa: PLC0415

    t0 = time.perf_counter()
    llm = LLM(**resolve_engine_args(args.model, json.loads(args.engine_args), args.max_num_seqs))
    construct_s = time.perf_counter() - t0
    tok = llm.get_tokenizer()
    llm.generate(["Warm-up."], SamplingParams(max_tokens=8), use_tqdm=False)
    result: dict[str, Any] = {"construct_s": construct_s, "limit": {}}
    for name, jobs in workloads.items():
        prompts = [chat_ids(tok, j) for j in jobs]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, [params(j) for j in jobs], use_tqdm=False)
        seconds = time.perf_counter() - t0
        result["limit"][name] = {
            "jobs": len(jobs),
            "seconds": seconds,
            "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
        }
    seed_jobs = workloads["fixed"][: args.seed_requests]
    latencies, tokens = [], 0
    t0 = time.perf_counter()
    for job in seed_jobs:
        t1 = time.perf_counter()
        out = llm.generate([chat_ids(tok, job)], params(job), use_tqdm=False)[0]
        latencies.append(time.perf_counter() - t1)
        tokens += len(out.outputs[0].token_ids)
    result["seed"] = {
        "jobs": len(seed_jobs),
        "seconds": time.perf_counter() - t0,
        "output_tokens": tokens,
        "latencies_s": latencies,
    }
    return result


async def at_concurrency(args: argparse.Namespace, workloads: dict[str, list[dict]]) -> dict:
    from vllm import AsyncEngineArgs  # noqa: PLC0415
    from vllm.v1.engine.async_llm import AsyncLLM  # noqa: PLC0415

    engine_args = resolve_engine_args(args.model, json.loads(args.engine_args), args.max_num_seqs)
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args))
    tok = llm.get_tokenizer()
    levels: dict[str, list[int]] = json.loads(args.concurrency)
    runs = []
    try:
        async for _ in llm.generate("Warm-up.", params({"max_tokens": 8, "min_tokens": 0}), "w"):
            pass
        for name, cs in levels.items():
            for c in cs:
                jobs = workloads[name][: max(args.seed_requests, c * args.jobs_per_slot)]
                todo = list(reversed(jobs))
                done: list[dict] = []

                async def client(worker: int) -> None:
                    while todo:
                        job = todo.pop()
                        sent = time.perf_counter()
                        ttft, tokens = None, 0
                        rid = f"{name}-{c}-{len(todo)}-{worker}"
                        async for out in llm.generate(chat_ids(tok, job), params(job, True), rid):
                            if ttft is None and out.outputs[0].token_ids:
                                ttft = time.perf_counter() - sent
                            tokens += len(out.outputs[0].token_ids)
                        done.append(
                            {
                                "latency_s": time.perf_counter() - sent,
                                "ttft_s": ttft,
                                "tokens": tokens,
                            }
                        )

                t0 = time.perf_counter()
                await asyncio.gather(*(client(w) for w in range(c)))
                runs.append(
                    {
                        "workload": name,
                        "concurrency": c,
                        "jobs": len(jobs),
                        "seconds": time.perf_counter() - t0,
                        "output_tokens": sum(d["tokens"] for d in done),
                        "latency_s": [d["latency_s"] for d in done],
                        "ttft_s": [d["ttft_s"] for d in done],
                    }
                )
                print(f"engine at c={c} ({name}) done", file=sys.stderr, flush=True)
    finally:
        llm.shutdown()
    return {"runs": runs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["offline", "async"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--workloads-file", required=True, help='JSON {"fixed": [jobs], "mix": [jobs]}')
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--engine-args", default="{}")
    p.add_argument("--seed-requests", type=int, default=8)
    p.add_argument("--jobs-per-slot", type=int, default=4, help="async: jobs run at c: c x this")
    p.add_argument("--concurrency", default='{"fixed": [1, 16]}', help="async: levels per workload")
    args = p.parse_args()
    workloads = json.loads(Path(args.workloads_file).read_text())
    if args.mode == "offline":
        result = offline(args, workloads)
    else:
        result = asyncio.run(at_concurrency(args, workloads))
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":  # vLLM spawns its engine core process
    main()
