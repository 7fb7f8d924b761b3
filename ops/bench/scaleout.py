"""Scaling out: one model on one GPU, the same on two GPUs, two models side by side, and tensor
parallel 2; every case the same fixed workload (forced output length) at saturation, through the
whole stack (API -> Redis -> workers), one case after another on the same machine.

    python3 ops/bench/scaleout.py --cases one,two,models,tp2 --out $OUT/scaleout.json

Cases (each a fresh Redis, API and workers; concurrency per engine ``--concurrency``):
  one     ``genq worker --gpus 0``                        model a, c in flight
  two     ``genq worker --gpus 0,1``: two engines          model a, 2c in flight, 2x the jobs
  models  ``--gpus 0`` serving a, ``--gpus 1`` serving b   a and b alternating, 2c in flight
  tp2     ``--gpus 0,1`` with tensor_parallel_size 2       model a, c in flight
Reports tok/s (server side: first job accepted -> last result stored), the ratio to ``one``,
scale-out efficiency tok/s(two) / (2 x tok/s(one)), each model of ``models`` against ``one``,
latency and TTFT percentiles. Both models of ``models`` are the same weights under two names,
so "each meets its single-model throughput" compares like with like.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from ops.bench import loadgen, workloads  # noqa: E402
from ops.bench.bench import meta, wait_ok  # noqa: E402
from ops.bench.report import pct  # noqa: E402

# case -> (workers: (gpus, model name, extra engine args), models of the jobs, jobs x c)
CASES = {
    "one": ([("0", "a", {})], ["a"], 1),
    "two": ([("0,1", "a", {})], ["a"], 2),
    "models": ([("0", "a", {}), ("1", "b", {})], ["a", "b"], 2),
    "tp2": ([("0,1", "a", {"tensor_parallel_size": 2})], ["a"], 1),
}


class Stack:
    """Redis, one API process and the case's workers (each a `genq worker --gpus ...`)."""

    def __init__(self, work: Path, args: argparse.Namespace, workers: list[tuple]):
        self.redis = EmbeddedRedis(work).start()
        self.url = f"http://127.0.0.1:{free_port()}"
        base = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "GENQ_API_PORT": self.url.rsplit(":", 1)[1],
            "GENQ_API_WORKERS": str(args.api_workers),
            "GENQ_MODELS": ",".join(dict.fromkeys(name for _, name, _ in workers)),
            "GENQ_WORKER_CONCURRENCY": str(args.concurrency),
            "GENQ_LOG_LEVEL": "WARNING",
        }
        self.engines = sum(
            len(gpus.split(",")) // extra.get("tensor_parallel_size", 1)
            for gpus, _, extra in workers
        )
        self.procs = [self._start(work / "api.log", ["api"], base)]
        for i, (gpus, name, extra) in enumerate(workers):
            env = base | {
                "GENQ_MODEL_NAME": name,
                "GENQ_WORKER_NAME": f"bench-{i}",
                "GENQ_ENGINE_ARGS": json.dumps(json.loads(args.engine_args) | extra),
            }
            self.procs.append(
                self._start(work / f"worker-{i}.log", ["worker", "--gpus", gpus], env)
            )

    @staticmethod
    def _start(log: Path, role: list[str], env: dict[str, str]) -> subprocess.Popen:
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "genq.cli.main", *role],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

    def wait_warm(self, timeout_s: float = 900) -> list[dict]:
        wait_ok(f"{self.url}/healthz", self.procs, 60, "API")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a process of the stack exited")
            workers = httpx.get(f"{self.url}/v1/workers").json()["workers"]
            if len(workers) == self.engines:
                return workers
            time.sleep(1)
        raise TimeoutError(f"{self.engines} engines not warm within {timeout_s} s")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
        self.redis.stop()


def summarize(run: dict, records: list[dict], model: str | None = None) -> dict:
    """Server-side throughput and latencies of ``records`` (those of ``model``, if given)."""
    mine = [r for r in records if model is None or r["model"] == model]
    created = min(r["created"] for r in mine)
    completed = max(r["completed"] for r in mine)
    tokens = sum(r["metrics"]["output_tokens"] for r in mine)
    return {
        "jobs": len(mine),
        "output_tokens": tokens,
        "server_seconds": completed - created,
        "tok_s": tokens / (completed - created),
        "latency_s": [r["metrics"]["total_ms"] / 1000 for r in mine],
        "ttft_s": [(r["metrics"]["queue_ms"] + r["metrics"]["ttft_ms"]) / 1000 for r in mine],
        "client_tok_s": run["output_tokens"] / run["seconds"] if model is None else None,
    }


def run_case(case: str, args: argparse.Namespace, work: Path) -> dict:
    workers, models, scale = CASES[case]
    c = args.concurrency * scale
    jobs = workloads.fixed(args.prompts * scale, args.tokens)
    for i, job in enumerate(jobs):
        job["model"] = models[i % len(models)]
    print(f"{case}: starting {workers} ...", flush=True)
    t0 = time.monotonic()
    stack = Stack(work, args, workers)
    try:
        warm = stack.wait_warm()
        ready_s = time.monotonic() - t0
        print(f"{case}: {len(warm)} engines warm in {ready_s:.0f} s; {len(jobs)} jobs at c={c}")
        # A short round first, every engine full: first requests pay one-time kernel builds.
        short = [job | {"max_tokens": 8, "min_tokens": 8} for job in jobs[:c]]
        loadgen.run_genq(stack.url, short, c)
        run = loadgen.run_genq(stack.url, jobs, c, keep_records=True)
    finally:
        stack.stop()
    records = run.pop("records")
    out = {
        "case": case,
        "workers": [{"gpus": g, "model": m, "engine_args": e} for g, m, e in workers],
        "engines": [{k: w[k] for k in ("name", "model", "devices")} for w in warm],
        "concurrency": c,
        "ready_s": ready_s,
        "all": summarize(run, records),
    }
    if len(models) > 1:
        out["per_model"] = {m: summarize(run, records, m) for m in models}
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(runs: list[dict]) -> str:
    """A row per run (and per model of a two-model run), ratios to the median of the ``one``
    runs; then the ratios the scale-out targets name, from the medians of each case's runs."""
    by_case: dict[str, list[dict]] = {}
    for r in runs:
        by_case.setdefault(r["case"], []).append(r)
    one = _median([r["all"]["tok_s"] for r in by_case.get("one", [])])
    lines = [
        "| case | round | engines (GPUs) | conc. | jobs | tok/s | x one (median) "
        "| latency p50/p95 s | TTFT p50/p95 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, n: int, engines: str, c: int | str, s: dict) -> None:
        lines.append(
            f"| {name} | {n} | {engines} | {c} | {s['jobs']} | {s['tok_s']:.0f} "
            f"| {s['tok_s'] / one:.2f} "
            f"| {pct(s['latency_s'], 50):.2f}/{pct(s['latency_s'], 95):.2f} "
            f"| {pct(s['ttft_s'], 50):.2f}/{pct(s['ttft_s'], 95):.2f} |"
        )

    for r in runs:
        engines = ", ".join(f"{e['model']} ({e['devices']})" for e in r["engines"])
        row(r["case"], r["round"], engines, r["concurrency"], r["all"])
        for model, s in r.get("per_model", {}).items():
            row(f"{r['case']}: its model {model} jobs", r["round"], model, "-", s)
    lines.append("")
    for case, rs in by_case.items():
        values = ", ".join(f"{r['all']['tok_s']:.0f}" for r in rs)
        lines.append(
            f"{case}: median {_median([r['all']['tok_s'] for r in rs]):.0f} tok/s ({values})"
        )
    if "two" in by_case:
        two = _median([r["all"]["tok_s"] for r in by_case["two"]])
        lines.append(f"scale-out efficiency tok/s(two) / (2 x tok/s(one)) = {two / (2 * one):.3f}")
    if "models" in by_case:
        each = ", ".join(
            f"{m} {_median([r['per_model'][m]['tok_s'] for r in by_case['models']]) / one:.3f}x"
            for m in by_case["models"][0]["per_model"]
        )
        lines.append(f"two models at once, each model's tok/s vs one model alone: {each}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cases", default="one,two,models,tp2")
    p.add_argument("--rounds", type=int, default=1, help="run the cases, in order, this often")
    p.add_argument("--prompts", type=int, default=1024, help="jobs of case one (others: scaled)")
    p.add_argument("--tokens", type=int, default=256, help="output tokens of each job")
    p.add_argument("--concurrency", type=int, default=256, help="per engine; = its max_num_seqs")
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument(
        "--engine-args",
        default=os.environ.get(
            "GENQ_ENGINE_ARGS", '{"load_format": "dummy", "max_num_batched_tokens": 16384}'
        ),
    )
    p.add_argument("--out", type=Path)
    p.add_argument("--logs", type=Path, help="copy the processes' logs here at the end")
    args = p.parse_args()
    model = os.environ.get("GENQ_MODEL", "the default model")
    result: dict = {"meta": meta(model, args), "runs": []}
    if args.out and args.out.exists():  # a later call on the same machine adds its cases
        result = json.loads(args.out.read_text())
    work = Path(tempfile.mkdtemp(prefix="genq-scaleout-"))
    try:
        for _ in range(args.rounds):
            for case in args.cases.split(","):
                n = 1 + sum(r["case"] == case for r in result["runs"])
                (work / f"{case}-{n}").mkdir()
                result["runs"].append(run_case(case, args, work / f"{case}-{n}") | {"round": n})
                if args.out:
                    args.out.write_text(json.dumps(result, indent=1, default=str))
                print(table(result["runs"]), flush=True)
    finally:
        if args.logs:
            shutil.copytree(work, args.logs, dirs_exist_ok=True)
    print(f"logs: {args.logs or work}")


if __name__ == "__main__":
    main()
