"""The API's own ceiling: jobs accepted per second by ``POST /v1/jobs`` with no worker attached,
beside a trivial FastAPI endpoint on the same machine (ops/bench/trivial_api.py) as the anchor.

    .venv/bin/python ops/bench/api_ceiling.py [--connections 16,64] [--seconds 10] [--api-workers
        1,2] [--keys]

Load comes from wrk (Debian package ``wrk``), a C load generator, so the client is not what
limits; it shares the machine's cores with the server, as any load generator on one machine does.
Each run: a fresh embedded Redis, the server started and warmed for 2 s, then ``--seconds`` of
load at each connection count. Every accepted job is a real job: its record and its queue message
are in Redis (checked after each run: jobs queued == 2xx answers). ``--keys`` adds a run with an
API key configured and sent (api.auth: the key's check, its rate limiter and its active-jobs set
on every request; limits set too high to refuse any).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import DEFAULT_QUEUE, QUEUED_COUNT, model_queue  # noqa: E402
from genq.contract.keys import create_key  # noqa: E402
from genq.store.embedded import EmbeddedRedis, free_port  # noqa: E402

BODY = {"prompt": "Write a story about a lighthouse.", "max_tokens": 64}
MODEL = "bench"  # the one model the API serves here (no worker: it is only a queue's name)
QUEUE = model_queue(DEFAULT_QUEUE, MODEL)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_script(workdir: Path, headers: dict[str, str]) -> Path:
    script = workdir / f"post-{len(headers)}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        + "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())
    )
    return script


def keys_env(workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of an API with one key, limits too high to refuse anything, and the
    headers that send the key."""
    path = workdir / "api_keys.json"
    path.unlink(missing_ok=True)
    key = create_key(path, "bench")
    env = {
        "GENQ_API_KEYS_FILE": str(path),
        "GENQ_RATE_LIMIT_RPS": "1e9",
        "GENQ_RATE_LIMIT_BURST": str(10**9),
        "GENQ_MAX_ACTIVE_JOBS_PER_KEY": str(10**9),
    }
    return env, {"Authorization": f"Bearer {key}"}


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * _UNITS[unit]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "p50_ms": latency("50%"),
        "p90_ms": latency("90%"),
        "p99_ms": latency("99%"),
        "raw": out,
    }


def serve(
    kind: str,
    workers: int,
    redis_url: str,
    port: int,
    log: Path,
    extra_env: dict[str, str],
    headers: dict[str, str],
) -> subprocess.Popen:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "GENQ_API_PORT": str(port),
        "GENQ_API_WORKERS": str(workers),
        "GENQ_MAX_QUEUED": str(10**9),
        # With no worker registered, the API knows the models of GENQ_MODELS only.
        "GENQ_MODELS": MODEL,
        "GENQ_LOG_LEVEL": "WARNING",
        # No keys unless this run adds them (a keys file under GENQ_DATA_DIR would add some).
        "GENQ_API_KEYS_FILE": str(log.parent / "no-keys.json"),
        **extra_env,
    }
    if kind.startswith("genq"):
        cmd = [sys.executable, "-m", "genq.cli.main", "api"]
    else:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "ops.bench.trivial_api:create_app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
    with log.open("ab") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/jobs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json=BODY, headers=headers).status_code == 202:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} API did not start; see {log}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--connections", default="16,64")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--api-workers", default="1,2", help="uvicorn processes, each tried")
    p.add_argument("--out", type=Path)
    p.add_argument("--keys", action="store_true", help="also run genq with an API key")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="genq-api-ceiling-"))
    server = EmbeddedRedis(work).start()
    kinds = ["trivial", "genq"] + (["genq-keys"] if args.keys else [])
    client = redis.Redis.from_url(server.url, decode_responses=True)
    rows = []
    try:
        for workers in [int(w) for w in args.api_workers.split(",")]:
            for kind in kinds:
                port = free_port()
                extra_env, headers = keys_env(work) if kind == "genq-keys" else ({}, {})
                script = wrk_script(work, {"Content-Type": "application/json", **headers})
                proc = serve(
                    kind, workers, server.url, port, work / f"{kind}.log", extra_env, headers
                )
                url = f"http://127.0.0.1:{port}/v1/jobs"
                try:
                    run_wrk(url, script, 16, 2)  # warm-up
                    for conns in [int(c) for c in args.connections.split(",")]:
                        client.flushdb()
                        result = run_wrk(url, script, conns, args.seconds)
                        if kind.startswith("genq"):
                            # Every 2xx is a real job: a record and a message on the queue.
                            accepted = result["requests"] - result["non_2xx"]
                            time.sleep(1)  # requests cut off when wrk stopped, now answered
                            result["jobs_queued"] = int(client.get(QUEUED_COUNT) or 0)
                            result["messages_queued"] = client.llen(QUEUE)
                            assert result["jobs_queued"] == result["messages_queued"], result
                            assert result["jobs_queued"] >= accepted, result
                        rows.append(
                            {"system": kind, "workers": workers, "connections": conns, **result}
                        )
                        print(
                            f"{kind:8} workers={workers} c={conns}: "
                            f"{result['requests_per_s']:.0f} req/s",
                            flush=True,
                        )
                finally:
                    proc.terminate()
                    proc.wait(30)
    finally:
        server.stop()

    print()
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; load: wrk -t2, {args.seconds:g} s")
    print(
        "| system | API processes | connections | accepted/s | x trivial | latency p50/p90/p99 ms "
        "| non-2xx |"
    )
    print("|---|---|---|---|---|---|---|")
    anchor = {
        (r["workers"], r["connections"]): r["requests_per_s"]
        for r in rows
        if r["system"] == "trivial"
    }
    for r in rows:
        name = {
            "genq": "genq `POST /v1/jobs`",
            "genq-keys": "genq `POST /v1/jobs`, API key",
        }.get(r["system"], "trivial FastAPI endpoint")
        ratio = r["requests_per_s"] / anchor[(r["workers"], r["connections"])]
        print(
            f"| {name} | {r['workers']} | {r['connections']} | {r['requests_per_s']:.0f} "
            f"| {ratio:.2f} | {r['p50_ms']:.1f}/{r['p90_ms']:.1f}/{r['p99_ms']:.1f} "
            f"| {r['non_2xx']} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
