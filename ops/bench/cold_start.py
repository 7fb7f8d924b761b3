"""Cold start, measured: a worker's time to ready by phase beside a bare ``LLM(...)``, what the
first jobs pay with and without warm-up, and a restart that keeps the compile caches.

    .venv/bin/python ops/bench/cold_start.py --out docs/bench/cold-start-cpu.json   # ~8 min
    MODEL_DIR=... bash ops/bench/gpu-cold-start.sh                                    # the GPU

Runs, each in fresh processes, in this order (``--runs`` picks some; ``--out`` is merged into,
so runs made in several calls add up):

  bare_cold       ``import vllm; LLM(model, genq's engine args)`` in a new Python process: its
                  time to ready by phase, then its first chat request vs the next ones
  genq_cold       Redis + API + ``genq worker`` with its warm-up policy, caches empty: the
                  worker's phases (WorkerInfo.startup_s), then the probe (below)
  genq_cached     the same again, caches kept
  genq_no_warmup  caches kept, ``GENQ_WARMUP__ENABLED=false``: what warm-up buys
  bare_cached     the bare ``LLM(...)`` again, its caches kept

Caches: each run points the compile caches (worker.host.engine.cache_env: vLLM's torch.compile
cache, Triton's, CUDA's, FlashInfer's) at a folder under ``--cache-root``, one for the bare runs and
one for genq's; a ``*_cold`` run empties its folder first.

The probe: a job queued before the worker starts (how soon after ready it is consumed, and how
long it runs), then shape by shape the first job of that shape after ready vs the median of the
next ones, each alone through ``POST /generate`` (client latency): a short chat, a long prompt,
top-p, top-k with seed and penalties, a JSON Schema job (structured output; each request's schema
its own, so no compiled grammar is reused), and ``--batch`` jobs at once. Every request has text of its
own, so no prefix cache makes a repeat cheaper than the first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MARKER = "GENQ-COLD-START "
RUNS = ("bare_cold", "genq_cold", "genq_cached", "genq_no_warmup", "bare_cached")
QUESTION = "Request {i}: what is the capital of France? Answer in one sentence."
WORDS = "river stone light market winter garden paper engine silver window harbor forest".split()


def long_prompt(i: int, words: int) -> str:
    rng = random.Random(i)
    return f"Request {i}. Summarize: " + " ".join(rng.choice(WORDS) for _ in range(words))


def shapes(args: argparse.Namespace) -> dict[str, tuple[dict, int]]:
    """shape -> (a /generate body with ``{i}`` to make each request's text its own, repeats)."""
    n = args.repeats
    out = {"max_tokens": args.max_tokens, "min_tokens": args.max_tokens}
    return {
        "short": ({"prompt": QUESTION, **out}, n),
        "long_prompt": ({"prompt": "LONG", **out}, max(5, n // 2)),
        "top_p": ({"prompt": QUESTION, "temperature": 0.8, "top_p": 0.95, **out}, n),
        "top_k_seed_penalties": (
            {
                "prompt": QUESTION,
                "temperature": 1.0,
                "top_k": 50,
                "seed": 7,
                "presence_penalty": 0.5,
                "frequency_penalty": 0.5,
                "repetition_penalty": 1.1,
                **out,
            },
            n,
        ),
        # Not forced to length: past the schema's end the grammar allows no more text.
        "json_schema": (
            {"prompt": QUESTION, "json_schema": "SCHEMA", "max_tokens": args.max_tokens},
            n,
        ),
    }


def body_for(template: dict, i: int, args: argparse.Namespace) -> dict:
    prompt = template["prompt"]
    text = long_prompt(i, args.long_words) if prompt == "LONG" else prompt.format(i=i)
    body = {**template, "prompt": text}
    if body.get("json_schema") == "SCHEMA":
        field = f"answer_{i}"
        body["json_schema"] = {
            "type": "object",
            "properties": {field: {"type": "string", "maxLength": 40}},
            "required": [field],
        }
    return body


# -- the bare engine, in a child process ----------------------------------------------------------


def bare_child(args: argparse.Namespace) -> None:
    """Runs in a new process: import vLLM, build LLM(...), then the short probe."""
    from worker.clock import process_age_s  # noqa: PLC0415
    from worker.host import vllm_log  # noqa: PLC0415 - standard library only

    lines = vllm_log.capture()
    age_at_main = process_age_s()
    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams  # noqa: PLC0415

    t1 = time.perf_counter()
    built_at = time.time()
    llm = LLM(**json.loads(args.engine_kwargs))
    t2 = time.perf_counter()
    phases = {
        "process": age_at_main,
        "imports": t1 - t0,
        "engine": t2 - t1,
        **vllm_log.phases(lines, built_at),
        "total": process_age_s(),
    }
    params = SamplingParams(max_tokens=args.max_tokens, min_tokens=args.max_tokens)
    latencies = []
    for i in range(args.repeats + 1):
        messages = [{"role": "user", "content": QUESTION.format(i=i)}]
        t = time.perf_counter()
        llm.chat(messages, params, use_tqdm=False)
        latencies.append((time.perf_counter() - t) * 1000)
    result = {
        "phases": phases,
        "probe": {"short": {"first_ms": latencies[0], "rest_ms": latencies[1:]}},
    }
    print(MARKER + json.dumps(result), flush=True)


def run_bare(args: argparse.Namespace, engine_kwargs: dict, env: dict[str, str], log: Path) -> dict:
    cmd = [sys.executable, __file__, "--bare-child", "--engine-kwargs", json.dumps(engine_kwargs)]
    cmd += ["--repeats", str(args.repeats), "--max-tokens", str(args.max_tokens)]
    t0 = time.time()
    with log.open("wb") as out:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=out, cwd=ROOT)
    text = proc.stdout.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bare LLM run failed ({proc.returncode}); log: {log}")
    return {"wall_s": time.time() - t0, **json.loads(lines[-1][len(MARKER) :])}


# -- genq: Redis + API + worker -------------------------------------------------------------------


def run_genq(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict:
    import httpx  # noqa: PLC0415

    from ops.bench.bench import Stack, wait_ok  # noqa: PLC0415

    spawned_at = time.time()
    stack = Stack(work, args.worker_concurrency, args.engine_args, extra_env=env)
    try:
        api = stack.url
        wait_ok(f"{api}/healthz", stack.procs, 60, f"the API (logs in {work})")
        early = httpx.post(f"{api}/v1/jobs", json=body_for(shapes(args)["short"][0], 10_000, args))
        early.raise_for_status()
        stack.wait_ready(args.ready_timeout_s)
        info = stack.worker_info()
        result = {"spawn_to_ready_s": info["ready_at"] - spawned_at, "worker": info}
        early_job = wait_job(api, early.json()["id"])
        result["prequeued"] = {
            "consumed_after_ready_ms": (ts(early_job["started_at"]) - info["ready_at"]) * 1000,
            "run_ms": run_ms(early_job),
            "engine_ms": early_job["metrics"]["generation_ms"],
            "first_batch": early_job["metrics"]["first_batch"],
        }
        result["probe"] = probe(api, args)
        later = stack.worker_info()
        result["prequeued"]["first_job_at"] = later["first_job_at"]
        return result
    finally:
        stack.stop()


def ts(value: str) -> float:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(value).timestamp()


def run_ms(job: dict) -> float:
    """Claimed by the worker -> result stored."""
    return (ts(job["completed_at"]) - ts(job["started_at"])) * 1000


def wait_job(api: str, job_id: str, timeout_s: float = 600) -> dict:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{api}/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} not done in {timeout_s} s")


def probe(api: str, args: argparse.Namespace) -> dict:
    import httpx  # noqa: PLC0415

    clients = threading.local()  # one HTTP client per thread: one connection each

    def client() -> httpx.Client:
        if not hasattr(clients, "client"):
            clients.client = httpx.Client(timeout=600)
        return clients.client

    def one(body: dict) -> tuple[float, dict]:
        http = client()  # made before the clock starts: a new client loads its CA bundle (~20 ms)
        sent = time.time()
        t = time.perf_counter()
        response = http.post(f"{api}/generate", json=body)
        latency = (time.perf_counter() - t) * 1000
        response.raise_for_status()
        job = http.get(f"{api}/v1/jobs/{response.json()['id']}").json()
        job["sent_at"] = sent
        return latency, job

    out: dict = {}
    i = 0
    for name, (template, repeats) in shapes(args).items():
        runs = []
        for _ in range(repeats + 1):
            i += 1
            runs.append(one(body_for(template, i, args)))
        out[name] = {
            "first_ms": runs[0][0],
            "rest_ms": [lat for lat, _ in runs[1:]],
            "first_engine_ms": runs[0][1]["metrics"]["generation_ms"],
            "rest_engine_ms": [job["metrics"]["generation_ms"] for _, job in runs[1:]],
            "first_parts": parts(*runs[0]),
            "rest_parts": [parts(*run) for run in runs[1:]],
        }
    # A batch as wide as --batch, sent at once: its wall time, first batch vs the next ones.
    walls, batch_parts = [], []
    with ThreadPoolExecutor(args.batch) as pool:
        # The client's own first batch (threads, connections) is not the server's: open them.
        list(pool.map(lambda _: client().get(f"{api}/healthz"), range(args.batch * 4)))
        for _ in range(max(3, args.repeats // 4) + 1):
            bodies = []
            for _ in range(args.batch):
                i += 1
                bodies.append(body_for(shapes(args)["short"][0], i, args))
            t = time.perf_counter()
            done = list(pool.map(one, bodies))
            walls.append((time.perf_counter() - t) * 1000)
            each = [parts(*run) for run in done]
            batch_parts.append({k: statistics.median(p[k] for p in each) for k in each[0]})
    out[f"batch_{args.batch}"] = {
        "first_ms": walls[0],
        "rest_ms": walls[1:],
        # medians over each batch's jobs
        "first_parts": batch_parts[0],
        "rest_parts": batch_parts[1:],
    }
    return out


def parts(latency_ms: float, job: dict) -> dict[str, float]:
    """Where a job's client latency went, in ms."""
    m = job["metrics"]
    created, started, completed = (ts(job[k]) for k in ("created_at", "started_at", "completed_at"))
    return {
        "accept": (created - job["sent_at"]) * 1000,  # client send -> API stored it
        "queue": m["queue_ms"],  # stored -> a worker claimed it
        "to_engine": (completed - started) * 1000 - m["generation_ms"],  # claim/store, no engine
        "engine": m["generation_ms"],
        "back": latency_ms - m["total_ms"] - (created - job["sent_at"]) * 1000,  # stored -> client
    }


# -- orchestration --------------------------------------------------------------------------------


def caches(folder: Path, empty: bool) -> dict[str, str]:
    from worker.host.engine import cache_env  # noqa: PLC0415

    if empty and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return cache_env(folder)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--out", type=Path)
    p.add_argument("--cache-root", type=Path, help="default: a new temporary folder")
    p.add_argument("--worker-concurrency", type=int, default=32, help="= max_num_seqs")
    p.add_argument("--batch", type=int, default=32, help="the probe's batch width")
    p.add_argument("--repeats", type=int, default=20, help="identical-shape jobs after the first")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--long-words", type=int, default=2000, help="the long prompt, in words")
    p.add_argument("--engine-args", default=os.environ.get("GENQ_ENGINE_ARGS", "{}"))
    p.add_argument("--ready-timeout-s", type=float, default=900)
    p.add_argument("--logs", type=Path, help="copy the processes' logs here")
    p.add_argument("--bare-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine-kwargs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_child:
        bare_child(args)
        return

    from genq.contract.settings import WorkerSettings  # noqa: PLC0415
    from ops.bench import report_cold_start  # noqa: PLC0415
    from worker.host.engine import resolve_engine_args  # noqa: PLC0415 - imports vLLM's platform
    from worker.model_files import prepare_default_model  # noqa: PLC0415

    settings = WorkerSettings()
    model = settings.model or str(prepare_default_model(settings.cache_dir))
    engine_kwargs = resolve_engine_args(
        model, json.loads(args.engine_args), args.worker_concurrency
    )
    cache_root = args.cache_root or Path(tempfile.mkdtemp(prefix="genq-cold-cache-"))
    result = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    result["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "gpu": gpu_name(),
        "model": model,
        "engine_kwargs": engine_kwargs,
        "warmup": settings.warmup.model_dump(),
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("bare_child",)},
    }
    runs = result.setdefault("runs", {})

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))

    for name in args.runs.split(","):
        if name not in RUNS:
            sys.exit(f"unknown run {name!r}; runs: {', '.join(RUNS)}")
        work = Path(tempfile.mkdtemp(prefix=f"genq-cold-{name}-"))
        kind, _, _ = name.partition("_")
        env = caches(cache_root / kind, empty=name.endswith("_cold"))
        print(f"{name} ...", flush=True)
        t0 = time.monotonic()
        if kind == "bare":
            runs[name] = run_bare(args, engine_kwargs, {**os.environ, **env}, work / "bare.log")
        else:
            env["GENQ_MODEL"] = model
            if name == "genq_no_warmup":
                env["GENQ_WARMUP__ENABLED"] = "false"
            runs[name] = run_genq(args, work, env)
        print(f"{name}: {time.monotonic() - t0:.0f} s", flush=True)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.logs / f"{name}-{log.name}")
        save()
    print()
    print(report_cold_start.render(result))


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip().splitlines()[0]


if __name__ == "__main__":
    main()
