"""Soak: genq under long steady traffic stays bounded. Redis's memory, the waiting counters and the
processes' RSS level off once results expire; every accepted job ends once, and is seen ending.

    .venv/bin/python ops/bench/soak.py --jobs 5000 --rate 100                 # ~1 minute
    .venv/bin/python ops/bench/soak.py --jobs 100000 --rate 100 --out soak.json

The stack is real, each role a process of its own: an embedded Redis (redis-server), the API
(``genq api``, uvicorn), a worker (Celery process + engine host) and the webhooks sender
(``genq webhooks``). Only the engine is fake: the worker runs as ``python -m
ops.bench.soak_worker``, whose engine streams ``--tokens`` tokens a few ms apart and uses no
model, so the run fits a 2-core machine. Results expire after ``--result-ttl-s`` (30 s) and
finished streams after ``--stream-keep-s`` (5 s), so expiry happens many times within the run.
Everything, this client included, shares the machine's cores: on 2 cores the stack takes about
1.1 cores at 100 jobs/s and 1.4 at 200/s, so 200/s holds only on an otherwise idle machine (the
report's CPU line says what other processes took meanwhile).

The load is open loop: job i is sent at i / ``--rate`` seconds whatever the server does (at most
``--max-inflight`` jobs followed at once; a send held back by that limit counts as schedule lag).
The client is one asyncio process with aiohttp, as loadgen.py's: it shares the cores with the
server, so it must cost little (the report's CPU line shows what it took).
Each job is of one kind (``--mix``, seeded):

  poll      POST /v1/jobs, then GET /v1/jobs/{id} every ``--poll-s`` until it is finished
  wait      POST /v1/jobs with ``Prefer: wait=N``: answered once finished
  stream    POST, then GET /v1/jobs/{id}/stream (SSE) to its ``completed`` event; the deltas
            joined must be the job's output
  webhook   POST with a webhook to a receiver in this process, which answers 500 to
            ``--webhook-fail`` of the deliveries (the sender retries after 1, 2, 4 s); the job's
            end is what its ``completed`` event carries
  cancel    a longer job (``--cancel-tokens``), canceled (POST /v1/jobs/{id}/cancel) after a
            random pause: queued or running, it ends canceled (or succeeded if it was done)
  deadline  ``deadline_s`` (1 ms) shorter than any way to a worker: canceled while queued
  fail      a prompt the fake engine refuses: failed

Prints: the rate held and the schedule's lag; ``POST /v1/jobs`` latency (jobs sent without a
wait) over the first and the last 10 % of the jobs; Redis ``used_memory`` and keys over the
steady part of the run (once the first results expired) in thirds, and after the last results
expired; the waiting counters (``genq:jobs:queued`` and the model's) beside a recount of the job
records that say ``queued``, during the run (in one Lua step, so the two are of one moment) and
at its end (SCAN); every accepted job's end by kind (none lost, none run twice: the fake engine's
log of its runs, and each record's ``attempts``); webhook deliveries per job (every
``completed`` received, duplicates counted); the RSS of each process at 10 % of the run and at
its end; CPU by process. ``--out`` writes the same as a small JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import (  # noqa: E402
    DEFAULT_QUEUE,
    MODEL_WAITING_PREFIX,
    QUEUED_COUNT,
    WAITING_SET,
    WEBHOOK_QUEUE,
    WEBHOOK_SCHEDULE,
    job_key,
    model_queue,
    model_queued_key,
)
from genq.store.embedded import free_port  # noqa: E402
from ops.bench.bench import Stack  # noqa: E402
from ops.bench.hostwatch import HostWatch  # noqa: E402

MODEL = "soak-fake"
# The fake engine refuses a prompt with this in it (ops/bench/soak_worker.py, which the client
# does not import: importing it replaces the worker's engine class in the importing process).
FAIL_MARKER = "soak:fail"
KINDS = ("poll", "wait", "stream", "webhook", "cancel", "deadline", "fail")
DEFAULT_MIX = "poll=55,wait=15,stream=10,webhook=10,cancel=5,deadline=4,fail=1"
# The ends a job of each kind may have; a cancel that comes after the job finished gets 409.
EXPECTED = {
    "poll": {"succeeded"},
    "wait": {"succeeded"},
    "stream": {"succeeded"},
    "webhook": {"succeeded"},
    "cancel": {"canceled", "succeeded"},
    "deadline": {"canceled"},
    "fail": {"failed"},
}
TERMINAL = {"succeeded", "failed", "canceled"}
RETRY_SCHEDULE_S = [1.0, 2.0, 4.0]
MiB = 1 << 20

# The waiting counters and a recount of the job records that say "queued", read in one Lua step
# so that both are of the same moment while jobs come and go. A job's record is the key
# genq:job:<id> (its stream and deliveries list have one more ":" part).
RECOUNT = """
local prefix = ARGV[1]
local queued = 0
local records = 0
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', prefix .. '*', 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if not string.find(key, ':', #prefix + 1, true) then
      records = records + 1
      if redis.call('HGET', key, 'status') == 'queued' then queued = queued + 1 end
    end
  end
until cursor == '0'
return {queued, records, tonumber(redis.call('GET', KEYS[1]) or '0'),
        tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('ZCARD', KEYS[3]),
        redis.call('ZCARD', KEYS[4])}
"""


# -- pure parts (tests/fast/test_bench_soak.py) --------------------------------------------------


def parse_mix(spec: str) -> dict[str, float]:
    """``"poll=55,wait=15"`` -> shares that sum to 1, in KINDS order; unknown kinds refused."""
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, value = part.strip().partition("=")
        if name not in KINDS:
            raise ValueError(f"unknown job kind {name!r}; kinds: {', '.join(KINDS)}")
        weights[name] = float(value)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"--mix {spec!r}: weights must be >= 0 and not all 0")
    return {k: weights[k] / total for k in KINDS if weights.get(k)}


def plan_kinds(mix: dict[str, float], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return rng.choices(list(mix), weights=list(mix.values()), k=n)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def thirds(samples: list[dict], start: float, end: float) -> list[list[dict]]:
    """The samples taken in [start, end), cut into three equal spans of time."""
    span = (end - start) / 3
    out: list[list[dict]] = [[], [], []]
    for s in samples:
        if start <= s["t"] < end and span > 0:
            out[min(2, int((s["t"] - start) // span))].append(s)
    return out


def count_runs(lines: Iterable[str]) -> dict[str, Counter]:
    """The fake engine's log (``S``tarted, ``E``nded with a result, ``A``borted) -> per request
    id, how many of each."""
    runs: dict[str, Counter] = {}
    for line in lines:
        mark, _, request_id = line.strip().partition(" ")
        if request_id:
            runs.setdefault(request_id, Counter())[mark] += 1
    return runs


async def counters(redis: Redis, model: str) -> dict[str, int]:
    """The waiting counters and sets (all models', ``model``'s) and the job records that say
    queued, of one moment (RECOUNT); equal, unless the counters drifted."""
    keys = [QUEUED_COUNT, model_queued_key(model), WAITING_SET, MODEL_WAITING_PREFIX + model]
    values = await redis.register_script(RECOUNT)(keys=keys, args=[job_key("")])
    names = ("records_queued", "records", "counter", "model_counter", "waiting", "model_waiting")
    return dict(zip(names, (int(v) for v in values)))


def counters_agree(c: dict[str, int]) -> bool:
    return (
        c["records_queued"]
        == c["counter"]
        == c["model_counter"]
        == c["waiting"]
        == c["model_waiting"]
    )


def fake_text(tokens: int) -> str:
    """What the fake engine answers a job of ``tokens`` tokens (ops/bench/soak_worker.py)."""
    return "".join(f"t{i} " for i in range(tokens))


class SseParser:
    """Server-Sent Events, line by line: ``feed`` returns ``(event, data)`` at each blank line."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            if self.event is None and not self.data:
                return None
            out = (self.event or "message", "\n".join(self.data))
            self.event, self.data = None, []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


@dataclass(slots=True)
class Job:
    i: int
    kind: str
    due: float  # when the schedule sends it, seconds from the start
    tokens: int = 0
    sent: float | None = None
    submit_ms: float | None = None
    accepted: float | None = None  # when its submit was answered 2xx
    id: str | None = None
    refused: int | None = None  # the submit's status when not accepted
    final: str | None = None  # the end seen: succeeded, failed, canceled
    error_type: str | None = None
    attempts: int | None = None
    started: bool = False
    seen_by: str | None = None  # how the end was seen: get, wait, stream, webhook, cancel
    done: float | None = None
    problems: list[str] = field(default_factory=list)

    def observe(self, data: dict, how: str, now: float) -> bool:
        """Take a job object; True if it is finished."""
        if data.get("status") not in TERMINAL:
            return False
        self.final = data["status"]
        self.error_type = (data.get("error") or {}).get("type")
        self.attempts = data.get("attempts")
        self.started = data.get("started_at") is not None
        self.seen_by = how
        self.done = now
        output = (data.get("output") or {}).get("text")
        if self.final == "succeeded" and output != fake_text(self.tokens):
            self.problems.append("output")
        return True


def judge(job: Job, runs: dict[str, Counter]) -> str:
    """One accepted job's verdict: ok, lost (no end seen), unexpected (an end its kind should not
    have), twice (the engine ran it to the end twice, or a record says it started twice)."""
    if job.final is None:
        return "lost"
    ran = runs.get(job.id or "", Counter())
    if ran["E"] > 1 or (job.attempts or 0) > 1:
        return "twice"
    if job.final not in EXPECTED[job.kind]:
        return "unexpected"
    if job.kind == "deadline" and job.error_type != "deadline":
        return "unexpected"
    if job.final == "succeeded" and ran["E"] != 1:
        return "unexpected"  # a result the engine never made
    if job.problems:
        return "unexpected"
    return "ok"


@dataclass
class HookJob:
    """Deliveries of one job's webhooks, as the receiver answered them."""

    received: int = 0
    failed: int = 0  # answered 500
    ok: int = 0  # answered 200
    unverified: int = 0
    job: dict | None = None  # what the first delivery answered 200 carried, until taken


class Receiver:
    """The webhook receiver (aiohttp, in this process): verifies each delivery's signature,
    answers 500 to ``fail_rate`` of them at random (never more than ``max_fails`` times for one
    webhook-id, so that each event gets through within the sender's retries), 200 otherwise."""

    def __init__(self, secret: str, fail_rate: float, max_fails: int, seed: int):
        from standardwebhooks.webhooks import Webhook  # noqa: PLC0415 - a test dependency

        self.verifier = Webhook(secret)
        self.fail_rate = fail_rate
        self.max_fails = max_fails
        self.rng = random.Random(seed)
        self.jobs: dict[str, HookJob] = {}
        self.events: Counter = Counter()
        self.waiters: dict[str, asyncio.Future[dict]] = {}

    def answer(self, job_id: str, event: str, verified: bool, job: dict) -> int:
        self.events[event] += 1
        entry = self.jobs.setdefault(job_id, HookJob())
        if event != "completed":
            return 200
        entry.received += 1
        entry.unverified += not verified
        if entry.failed < self.max_fails and self.rng.random() < self.fail_rate:
            entry.failed += 1
            return 500
        entry.ok += 1
        waiter = self.waiters.pop(job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(job)
        elif entry.ok == 1:
            entry.job = job  # came before its job's client asked for it
        return 200

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            self.verifier.verify(body, headers)
            verified = True
        except Exception:  # noqa: BLE001 - counted, not fatal
            verified = False
        job = json.loads(body)
        status = self.answer(job["id"], headers.get("genq-event", ""), verified, job)
        return web.Response(status=status, text="ok")

    async def completed(self, job_id: str, timeout_s: float) -> dict | None:
        """The job its first accepted ``completed`` delivery carried (None: none in time)."""
        entry = self.jobs.get(job_id)
        if entry is not None and entry.job is not None:
            job, entry.job = entry.job, None
            return job
        waiter = self.waiters[job_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None
        finally:
            self.waiters.pop(job_id, None)

    def reset(self) -> None:
        self.jobs.clear()
        self.events.clear()


# -- the stack ---------------------------------------------------------------------------------

ROLES = {
    "api": ["-m", "genq.cli.main", "api"],
    "worker": ["-m", "ops.bench.soak_worker"],  # `genq worker` with the fake engine
    "webhooks": ["-m", "genq.cli.main", "webhooks"],
}


class SoakStack(Stack):
    """bench.Stack (Redis, API, worker, each a process) with the fake-engine worker and the
    webhooks sender."""

    def __init__(self, workdir: Path, worker_concurrency: int, env: dict[str, str]):
        super().__init__(workdir, worker_concurrency, "{}", env)
        self.procs.append(self._start("webhooks"))

    def _start(self, role: str) -> subprocess.Popen:
        with (self.logs / f"{role}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, *ROLES[role]],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def pids(self) -> dict[str, int]:
        """The processes whose RSS is followed: the engine host is the worker's child that
        names itself so (the other is multiprocessing's resource tracker)."""
        api, worker, webhooks = (p.pid for p in self.procs)
        out = {"api": api, "worker": worker, "webhooks": webhooks}
        for child in children(worker):
            if "engine host" in cmdline(child):
                out["engine host"] = child
        if self.redis.process is not None:
            out["redis"] = self.redis.process.pid
        return out


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_mib(pid: int) -> float | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# -- the load ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, stack: SoakStack, receiver: Receiver, hook: str):
        self.args = args
        self.url = stack.url
        self.stack = stack
        self.receiver = receiver
        self.hook_url = hook
        self.pids = stack.pids()
        self.redis = Redis.from_url(stack.redis.url, decode_responses=True)
        self.samples: list[dict] = []
        self.http_errors: Counter = Counter()
        self.t0 = 0.0
        self.sent = 0
        self.finished = 0
        self.rng = random.Random(args.seed + 1)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # each kind

    def request(self, job: Job) -> tuple[dict, dict]:
        body: dict[str, Any] = {"prompt": f"soak job {job.i}", "max_tokens": job.tokens}
        headers: dict[str, str] = {}
        if job.kind == "wait":
            headers["Prefer"] = f"wait={self.args.wait_s}"
        elif job.kind == "webhook":
            body["webhook"] = self.hook_url
        elif job.kind == "deadline":
            body["deadline_s"] = self.args.deadline_s
        elif job.kind == "fail":
            body["prompt"] = f"{FAIL_MARKER} {job.i}"
        return body, headers

    async def run_job(self, job: Job) -> None:
        job.sent = self.now()
        self.sent += 1
        try:
            await asyncio.wait_for(self._run(job), self.args.job_timeout_s)
        except TimeoutError:
            job.problems.append("timeout")
        except Exception as exc:  # noqa: BLE001 - the job's problem, not the run's end
            job.problems.append(f"client error: {type(exc).__name__}: {exc}")
        if job.id is not None and job.final is None:
            # One last look, while the record is still kept.
            try:
                await self.get(job, "get")
            except Exception:  # noqa: BLE001, S110 - it stays without an end: lost
                pass
        if job.final is not None:
            self.finished += 1

    async def _run(self, job: Job) -> None:
        body, headers = self.request(job)
        t = time.perf_counter()
        async with self.submits.post(f"{self.url}/v1/jobs", json=body, headers=headers) as r:
            data = await r.json()
            status = r.status
        if job.kind != "wait":
            job.submit_ms = (time.perf_counter() - t) * 1000
        if status not in (200, 202):
            job.refused = status
            self.http_errors[f"POST /v1/jobs {status}"] += 1
            return
        job.id = data["id"]
        job.accepted = self.now()
        if job.observe(data, "submit", self.now()):
            return
        if job.kind == "stream":
            await self.stream(job)
        elif job.kind == "webhook":
            # The completed event's body is the finished job.
            got = await self.receiver.completed(job.id, self.args.webhook_wait_s)
            if got is not None and job.observe(got, "webhook", self.now()):
                return
            job.problems.append("no webhook")
        elif job.kind == "cancel":
            await asyncio.sleep(self.rng.uniform(0, self.args.cancel_after_s))
            async with self.follow.post(f"{self.url}/v1/jobs/{job.id}/cancel") as r:
                answer = await r.json()
                if r.status == 200 and job.observe(answer, "cancel", self.now()):
                    return
                if r.status not in (200, 202, 409):
                    self.http_errors[f"POST cancel {r.status}"] += 1
        await self.poll(job)

    async def get(self, job: Job, how: str) -> bool:
        async with self.follow.get(f"{self.url}/v1/jobs/{job.id}") as r:
            if r.status == 404:
                job.problems.append("expired before its end was seen")
                return True
            if r.status != 200:
                self.http_errors[f"GET /v1/jobs {r.status}"] += 1
                return False
            return job.observe(await r.json(), how, self.now())

    async def poll(self, job: Job) -> None:
        while not await self.get(job, "get"):
            await asyncio.sleep(self.args.poll_s)

    async def stream(self, job: Job) -> None:
        parser = SseParser()
        text: list[str] = []
        async with self.follow.get(f"{self.url}/v1/jobs/{job.id}/stream") as r:
            if r.status != 200:
                self.http_errors[f"GET stream {r.status}"] += 1
                return await self.poll(job)
            async for raw in r.content:
                event = parser.feed(raw.decode())
                if event is None:
                    continue
                name, data = event
                if name == "start":
                    text = []  # a retry's text starts again (never expected here)
                elif name == "output":
                    text.append(json.loads(data)["text"])
                elif name == "completed":
                    done = json.loads(data)
                    job.observe(done, "stream", self.now())
                    if done["status"] == "succeeded" and "".join(text) != fake_text(job.tokens):
                        job.problems.append("stream deltas")
                    return None
                elif name == "error":
                    job.problems.append("stream error event")
                    return None
        job.problems.append("stream ended without completed")
        return None

    # sampling

    async def sample(self, recount: bool) -> dict:
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("memory")
        pipe.info("clients")
        pipe.dbsize()
        pipe.get(QUEUED_COUNT)
        pipe.llen(model_queue(DEFAULT_QUEUE, MODEL))
        pipe.zcard(WEBHOOK_SCHEDULE)
        memory, clients, keys, queued, broker, hooks = await pipe.execute()
        s = {
            "t": round(self.now(), 2),
            "sent": self.sent,
            "finished": self.finished,
            "used_memory": int(memory["used_memory"]),
            # used_memory is the data (the jobs' keys) plus Redis's overhead, of which the
            # clients' buffers grow with the connections open (the API's pools keep theirs).
            "dataset": int(memory["used_memory_dataset"]),
            "clients_memory": int(memory.get("mem_clients_normal", 0)),
            "connections": int(clients["connected_clients"]),
            "keys": keys,
            "queued_counter": int(queued or 0),
            "broker_queue": broker,
            "webhooks_scheduled": hooks,
            "rss_mib": {name: rss_mib(pid) for name, pid in self.pids.items()},
        }
        if recount:
            s["recount"] = await counters(self.redis, MODEL)
        return s

    async def sampler(self, stop: asyncio.Event) -> None:
        n = 0
        next_report = 0.1
        while not stop.is_set():
            s = await self.sample(recount=n % self.args.recount_every == 0)
            self.samples.append(s)
            n += 1
            if s["sent"] >= next_report * self.args.jobs:
                print(
                    f"  t={s['t']:.0f} s: {s['sent']:,} sent, {s['finished']:,} finished, "
                    f"Redis {s['used_memory'] / MiB:.1f} MiB, {s['keys']:,} keys",
                    file=sys.stderr,
                    flush=True,
                )
                next_report += 0.1
            try:
                await asyncio.wait_for(stop.wait(), self.args.sample_s)
            except TimeoutError:
                pass

    # the run

    async def warm_up(self) -> None:
        """One job of each kind, the receiver failing none: the whole path works (the webhooks
        process takes a few seconds to start) before the clock starts."""
        saved = self.receiver.fail_rate
        self.receiver.fail_rate = 0.0
        jobs = [Job(-1, kind, 0.0, self.tokens(kind)) for kind in KINDS]
        await asyncio.gather(*(asyncio.wait_for(self._run(j), 120) for j in jobs))
        bad = [
            (j.kind, j.final, j.problems)
            for j in jobs
            if j.final not in EXPECTED[j.kind] or j.problems
        ]
        if bad:
            raise RuntimeError(f"warm-up jobs did not end as expected: {bad}")
        await self.webhooks_drained(30)
        self.receiver.reset()
        self.receiver.fail_rate = saved

    def tokens(self, kind: str) -> int:
        return self.args.cancel_tokens if kind == "cancel" else self.args.tokens

    async def webhooks_drained(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            scheduled = await self.redis.zcard(WEBHOOK_SCHEDULE)
            queued = await self.redis.llen(WEBHOOK_QUEUE)
            if scheduled == 0 and queued == 0:
                await asyncio.sleep(1.0)  # a delivery taken off the queue is still being sent
                return True
            await asyncio.sleep(0.5)
        return False

    async def run(self, plan: list[Job]) -> dict:
        args = self.args
        submit_conn = aiohttp.TCPConnector(limit=args.submit_connections)
        follow_conn = aiohttp.TCPConnector(limit=args.connections)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=args.job_timeout_s)
        # Submits on connections of their own: their latency is the API's, not a wait for one
        # of the connections the jobs' follow-ups (polls, streams, waits) hold.
        self.submits = aiohttp.ClientSession(connector=submit_conn, timeout=timeout)
        self.follow = aiohttp.ClientSession(connector=follow_conn, timeout=timeout)
        result: dict[str, Any] = {}
        try:
            self.t0 = time.perf_counter()
            await self.warm_up()
            stop = asyncio.Event()
            inflight = asyncio.Semaphore(args.max_inflight)
            tasks: set[asyncio.Task] = set()
            with HostWatch(self.cpu_roots()) as watch:
                self.t0 = time.perf_counter()
                sampler = asyncio.ensure_future(self.sampler(stop))
                lags = []
                for job in plan:
                    wait = job.due - self.now()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await inflight.acquire()
                    lags.append(self.now() - job.due)
                    task = asyncio.ensure_future(self.run_job(job))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _: inflight.release())
                load_end = self.now()
                await asyncio.gather(*tasks)
                watch.stop()
            all_done = self.now()
            result["cpu"] = watch.summary()
            result["lag_s"] = {"p50": percentile(lags, 50), "p99": percentile(lags, 99)}
            result["lag_s"]["max"] = max(lags) if lags else None
            result["load_s"] = load_end
            result["all_done_s"] = all_done
            result["webhooks_drained"] = await self.webhooks_drained(60)
            stop.set()
            await sampler
            result["end"] = await self.sample(recount=True)
            result["end"]["scan"] = await self.scan_records()
            self.samples.append(result["end"])
            if args.expiry_wait:
                # Everything the run wrote expires: what is left is what genq keeps forever.
                await asyncio.sleep(args.result_ttl_s + args.stream_keep_s + 5)
                result["after_expiry"] = await self.sample(recount=True)
                result["after_expiry"]["key_kinds"] = await self.key_kinds()
        finally:
            await self.submits.close()
            await self.follow.close()
            await self.redis.aclose()
        return result

    def cpu_roots(self) -> dict[str, int]:
        roots = {"client": os.getpid()}
        roots |= {k: v for k, v in self.pids.items() if k != "engine host"}
        return roots

    async def scan_records(self) -> dict:
        """At the end, outside any script: every job record's status (SCAN), beside the
        counters and the broker's queue and unacknowledged messages."""
        statuses: Counter = Counter()
        prefix = job_key("")
        async for key in self.redis.scan_iter(match=prefix + "*", count=1000):
            if ":" not in key[len(prefix) :]:
                # None: expired between the SCAN that listed it and this read.
                statuses[await self.redis.hget(key, "status") or "expired meanwhile"] += 1
        return {
            "statuses": dict(statuses),
            "counter": int(await self.redis.get(QUEUED_COUNT) or 0),
            "model_counter": int(await self.redis.get(model_queued_key(MODEL)) or 0),
            "unacked": await self.redis.hlen("unacked"),
        }

    async def key_kinds(self) -> dict[str, int]:
        """The keys left, by name with ids replaced by *."""
        kinds: Counter = Counter()
        async for key in self.redis.scan_iter(count=1000):
            kinds[re.sub(r"[0-9a-f]{32}|genq-\d+@[^:]+|\d{6,}", "*", key)] += 1
        return dict(kinds)


# -- the report ----------------------------------------------------------------------------------


def summarize(args: argparse.Namespace, plan: list[Job], run: dict, runs: dict, hosts: list):
    accepted = [j for j in plan if j.id is not None]
    sends = [j.sent for j in plan if j.sent is not None]
    span = max(sends) - min(sends) if len(sends) > 1 else 0.0
    # Accepted per second: from the first send to the last acceptance, so that a server that
    # falls behind shows it here, not only in the latency.
    accepts = [j.accepted for j in accepted if j.accepted is not None]
    accept_span = max(accepts) - min(sends) if accepts and sends else 0.0
    verdicts = {j.i: judge(j, runs) for j in accepted}
    by_kind = {}
    for kind in KINDS:
        jobs = [j for j in plan if j.kind == kind]
        if not jobs:
            continue
        done = [j for j in jobs if j.id is not None]
        row = {"jobs": len(jobs), "accepted": len(done), "refused": len(jobs) - len(done)}
        row |= Counter(j.final or "none" for j in done)
        row |= {f"verdict_{v}": n for v, n in Counter(verdicts[j.i] for j in done).items()}
        if kind == "deadline":
            row["deadline_unrun"] = sum(
                1 for j in done if j.error_type == "deadline" and not j.started
            )
        if kind == "cancel":
            row["canceled_running"] = sum(1 for j in done if j.final == "canceled" and j.started)
        by_kind[kind] = row
    n = len(plan)
    tenth = max(1, n // 10)

    def lat(jobs: list[Job]) -> dict:
        ms = [j.submit_ms for j in jobs if j.submit_ms is not None and j.refused is None]
        return {
            "n": len(ms),
            "p50": percentile(ms, 50),
            "p99": percentile(ms, 99),
            "max": max(ms) if ms else None,
        }

    samples = [s for s in run["samples"] if s["t"] <= run["load_s"]]
    steady_from = args.result_ttl_s + args.stream_keep_s + 5
    phases = [_mem(part) for part in thirds(samples, steady_from, run["load_s"]) if part]
    recounts = [s["recount"] | {"t": s["t"]} for s in run["samples"] if "recount" in s]
    unequal = [r for r in recounts if not counters_agree(r)]
    hooks = [j for j in accepted if j.kind == "webhook"]
    receiver: Receiver = run["receiver"]
    got = [receiver.jobs.get(j.id) for j in hooks]
    webhook = {
        "jobs": len(hooks),
        "completed_received": sum(1 for g in got if g is not None and g.ok),
        "none_received": sum(1 for g in got if g is None or not g.ok),
        "deliveries": sum(g.received for g in got if g is not None),
        "answered_500": sum(g.failed for g in got if g is not None),
        "duplicates": sum(max(0, g.ok - 1) for g in got if g is not None),
        "unverified": sum(g.unverified for g in got if g is not None),
        "events": dict(receiver.events),
        "strays": len(set(receiver.jobs) - {j.id for j in hooks}),
        "drained": run["webhooks_drained"],
    }
    rss_at = {}
    for label, at in (("10%", run["load_s"] * 0.1), ("50%", run["load_s"] * 0.5)):
        rss_at[label] = min(samples, key=lambda s: abs(s["t"] - at))["rss_mib"] if samples else {}
    rss_at["end of load"] = samples[-1]["rss_mib"] if samples else {}
    rss_at["all done"] = run["end"]["rss_mib"]
    if "after_expiry" in run:
        rss_at["after expiry"] = run["after_expiry"]["rss_mib"]
    cores = {_cpu_name(k): v for k, v in run["cpu"].get("cores", {}).items()}
    busy = run["cpu"].get("host_busy_cores")
    if busy is not None:
        # What else ran on the machine meanwhile: the load's processes share their cores.
        cores["not the soak's processes"] = round(busy - sum(cores.values()), 2)
    engine_runs = Counter()
    for job_id, marks in runs.items():
        engine_runs["requests"] += 1
        engine_runs["ended twice"] += marks["E"] > 1
        engine_runs["started twice"] += marks["S"] > 1
    accepted_ids = {j.id for j in accepted}
    engine_runs["not a job of the run"] = sum(1 for r in runs if r not in accepted_ids)
    return {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": f"{os.cpu_count()} cores",
        "load": {
            "offered_per_s": args.rate,
            "sent": len(sends),
            "accepted": len(accepted),
            "refused": n - len(accepted),
            "sent_per_s": len(sends) / span if span else None,
            "accepted_per_s": len(accepted) / accept_span if accept_span else None,
            "load_s": run["load_s"],
            "all_done_s": run["all_done_s"],
            "lag_s": run["lag_s"],
            "http_errors": dict(run["http_errors"]),
        },
        "submit_latency_ms": {
            "first 10%": lat(plan[:tenth]),
            "last 10%": lat(plan[-tenth:]),
            "all": lat(plan),
        },
        "submit_latency_by_tenth_ms": [lat(plan[k * tenth : (k + 1) * tenth]) for k in range(10)],
        "redis": {
            "steady_from_s": steady_from,
            "thirds": phases,
            "start": _mem(run["samples"][:1]) if run["samples"] else None,
            "end": _mem([run["end"]]),
            "after_expiry": _mem([run["after_expiry"]]) if "after_expiry" in run else None,
            "keys_left": run.get("after_expiry", {}).get("key_kinds"),
        },
        "counters": {
            "checks_during_run": len(recounts),
            "unequal": unequal[:5],
            "max_queued_seen": max((r["counter"] for r in recounts), default=0),
            "end": run["end"]["scan"],
        },
        "jobs": by_kind,
        "verdicts": dict(Counter(verdicts.values())),
        "problems": dict(Counter(p.split(":")[0] for j in accepted for p in j.problems)),
        "lost_examples": [asdict(j) for j in accepted if verdicts[j.i] != "ok"][:5],
        "engine_runs": dict(engine_runs),
        "webhooks": webhook,
        "rss_mib": rss_at,
        "engine_host": hosts,
        "cpu_cores": cores,
        "host_busy_cores": busy,
        "samples": [
            {k: v for k, v in s.items() if k != "recount"}
            for s in _every(run["samples"], max(1, len(run["samples"]) // 40))
        ],
    }


def _cpu_name(name: str) -> str:
    # A process's comm is cut at 15 characters: "[genq engine ho".
    return "engine host" if name.startswith("worker/[genq") else name


def _mem(part: list[dict]) -> dict:
    """Redis's memory over some samples: means (and used_memory's max), in MiB."""

    def mean(key: str) -> float:
        return statistics.fmean(s[key] for s in part)

    return {
        "from_s": part[0]["t"],
        "to_s": part[-1]["t"],
        "used_mib_mean": mean("used_memory") / MiB,
        "used_mib_max": max(s["used_memory"] for s in part) / MiB,
        "dataset_mib_mean": mean("dataset") / MiB,
        "clients_mib_mean": mean("clients_memory") / MiB,
        "keys_mean": mean("keys"),
        "connections_mean": mean("connections"),
    }


def _every(items: list, step: int) -> list:
    return items[::step] + ([items[-1]] if items and (len(items) - 1) % step else [])


def _f(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def render(s: dict) -> str:
    a, load = s["args"], s["load"]
    lines = [
        f"genq soak: {load['sent']:,} jobs at {a['rate']:g}/s offered (open loop), "
        f"{s['machine']}; fake engine {a['tokens']} tokens x {a['token_s'] * 1000:g} ms; "
        f"GENQ_RESULT_TTL_S={a['result_ttl_s']} GENQ_STREAM_KEEP_S={a['stream_keep_s']}",
        "",
        "load      sent/s   accepted  refused  accepted/s  lag p50/p99/max s   load s  all done s",
        f"          {_f(load['sent_per_s'])}  {load['accepted']:>9,}  {load['refused']:>7,}  "
        f"{_f(load['accepted_per_s']):>10}  "
        f"{_f(load['lag_s']['p50'], '.3f')}/{_f(load['lag_s']['p99'], '.3f')}/"
        f"{_f(load['lag_s']['max'], '.2f'):<8}  {load['load_s']:>6.0f}  {load['all_done_s']:>10.0f}",
    ]
    held = (load["accepted_per_s"] or 0) >= 0.98 * a["rate"] and (load["lag_s"]["p99"] or 0) < 1
    lines.append(
        f"          rate held: {'yes' if held else 'NO'} (accepted/s >= 98% of the offered "
        "rate, and the schedule's lag p99 < 1 s)"
    )
    if load["http_errors"]:
        lines.append(f"          HTTP errors: {load['http_errors']}")
    lines += ["", "POST /v1/jobs (no wait)    jobs   p50 ms   p99 ms   max ms"]
    for label, row in s["submit_latency_ms"].items():
        lines.append(
            f"  {label:<22}{row['n']:>8,}{_f(row['p50']):>9}{_f(row['p99']):>9}{_f(row['max']):>9}"
        )
    for q in ("p50", "p99", "max"):
        lines.append(
            f"  {q} by tenth of the jobs: "
            + " ".join(
                _f(t[q], ".0f" if q != "p50" else ".1f") for t in s["submit_latency_by_tenth_ms"]
            )
        )
    r = s["redis"]
    lines += [
        "",
        f"Redis (steady: t >= {r['steady_from_s']} s; MiB)  from s  to s  used mean  used max  "
        "dataset  clients     keys  connections",
    ]
    rows = [("start of load", r["start"])]
    rows += list(zip(("steady, first third", "steady, middle third", "steady, last third"),
                     r["thirds"]))  # fmt: skip
    rows += [("all done", r["end"]), ("after expiry", r["after_expiry"])]
    for label, p in rows:
        if p:
            lines.append(
                f"  {label:<30}{p['from_s']:>8.0f}{p['to_s']:>6.0f}{p['used_mib_mean']:>11.1f}"
                f"{p['used_mib_max']:>10.1f}{p['dataset_mib_mean']:>9.1f}"
                f"{p['clients_mib_mean']:>9.1f}{p['keys_mean']:>9,.0f}{p['connections_mean']:>13.0f}"
            )
    if r["keys_left"]:
        lines.append(f"  keys left after expiry: {r['keys_left']}")
    c = s["counters"]
    end = c["end"]
    lines += [
        "",
        f"waiting counters: {c['checks_during_run']} checks during the run (counters, waiting "
        f"sets and records saying queued, one Lua step each): "
        f"{'all equal' if not c['unequal'] else 'UNEQUAL ' + json.dumps(c['unequal'])}; "
        f"most queued seen {c['max_queued_seen']}",
        f"  at the end: genq:jobs:queued={end['counter']} genq:jobs:queued:{MODEL}="
        f"{end['model_counter']}, records by status (SCAN) {end['statuses']}, "
        f"unacked messages {end['unacked']}",
        "",
        "jobs      sent  accepted succeeded failed canceled  none  ok  lost unexpected twice",
    ]
    total: Counter = Counter()
    for kind, row in s["jobs"].items():
        total.update(row)
        lines.append(_job_row(kind, row))
    lines.append(_job_row("all", total))
    if s["problems"]:
        lines.append(f"  problems seen: {s['problems']}")
    cancel = s["jobs"].get("cancel")
    if cancel:
        lines.append(
            f"  cancel jobs canceled while running: {cancel.get('canceled_running', 0)}, before "
            f"they ran: {cancel.get('canceled', 0) - cancel.get('canceled_running', 0)}"
        )
    dl = s["jobs"].get("deadline")
    if dl:
        lines.append(f"  deadline jobs canceled unrun (past their deadline when taken): "
                     f"{dl.get('deadline_unrun', 0)} of {dl['accepted']}")  # fmt: skip
    er = s["engine_runs"]
    lines.append(
        f"  fake engine: {er.get('requests', 0):,} requests; ran to the end twice: "
        f"{er.get('ended twice', 0)}; started twice: {er.get('started twice', 0)}; "
        f"not a job of the run (warm-up): {er.get('not a job of the run', 0)}"
    )
    w = s["webhooks"]
    lines += [
        "",
        f"webhooks: {w['jobs']:,} jobs; completed received (answered 200) {w['completed_received']:,}, "
        f"none {w['none_received']}; deliveries {w['deliveries']:,} ({w['answered_500']:,} answered "
        f"500, then retried); duplicates {w['duplicates']}; unverified {w['unverified']}; "
        f"strays {w['strays']}; schedule drained: {w['drained']}",
        "",
        "RSS MiB        " + "".join(f"{k:>14}" for k in s["rss_mib"]) + "   end - 10%",
    ]
    names = list(next(iter(s["rss_mib"].values()), {}) or {})
    for name in names:
        vals = [s["rss_mib"][k].get(name) for k in s["rss_mib"]]
        first, last = s["rss_mib"]["10%"].get(name), s["rss_mib"]["end of load"].get(name)
        growth = None if first is None or last is None else last - first
        lines.append(f"  {name:<13}" + "".join(f"{_f(v):>14}" for v in vals) + f"{_f(growth):>12}")
    hosts = s["engine_host"]
    lines += [
        "",
        "engine host: "
        + "; ".join(
            f"pid {h['pid']} {h['phase']}: main module {h['main_module']} as {h['main_name']}, "
            f"engine {h['engine_class']}, vllm loaded: {h['vllm_loaded']}, "
            f"torch loaded: {h['torch_loaded']}"
            for h in hosts
        ),
        f"CPU (cores, while the load ran): host busy {_f(s['host_busy_cores'], '.2f')}; "
        + ", ".join(f"{k} {v:.2f}" for k, v in s["cpu_cores"].items()),
    ]
    return "\n".join(lines)


def _job_row(kind: str, row: dict) -> str:
    return (
        f"  {kind:<8}{row.get('jobs', 0):>6,}{row.get('accepted', 0):>10,}"
        f"{row.get('succeeded', 0):>10,}{row.get('failed', 0):>7,}{row.get('canceled', 0):>9,}"
        f"{row.get('none', 0):>6,}{row.get('verdict_ok', 0):>8,}{row.get('verdict_lost', 0):>6,}"
        f"{row.get('verdict_unexpected', 0):>11,}{row.get('verdict_twice', 0):>6,}"
    )


def timeline(samples: list[dict], rows: int = 16) -> str:
    step = max(1, len(samples) // rows)
    out = ["t s      sent  finished  used MiB  dataset     keys  conns  queued  broker  hooks  "
           "RSS api/worker/host/webhooks MiB"]  # fmt: skip
    for s in _every(samples, step):
        rss = s["rss_mib"]
        out.append(
            f"{s['t']:>5.0f}{s['sent']:>9,}{s['finished']:>10,}{s['used_memory'] / MiB:>10.1f}"
            f"{s['dataset'] / MiB:>9.1f}{s['keys']:>9,}{s['connections']:>7,}"
            f"{s['queued_counter']:>8,}{s['broker_queue']:>8,}"
            f"{s['webhooks_scheduled']:>7,}  "
            + "/".join(_f(rss.get(k), ".0f") for k in ("api", "worker", "engine host", "webhooks"))
        )
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------------


def read_engine_logs(folder: Path) -> tuple[dict[str, Counter], list[dict]]:
    lines: list[str] = []
    for log in folder.glob("runs-*.log"):
        lines += log.read_text().splitlines()
    hosts = [json.loads(p.read_text()) for p in sorted(folder.glob("host-*.json"))]
    return count_runs(lines), hosts


async def soak(args: argparse.Namespace, work: Path) -> tuple[list[Job], dict, SoakStack]:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = Receiver(secret, args.webhook_fail, len(RETRY_SCHEDULE_S) - 1, args.seed + 2)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    env = {
        "GENQ_RESULT_TTL_S": str(args.result_ttl_s),
        "GENQ_STREAM_KEEP_S": str(args.stream_keep_s),
        "GENQ_MODEL": str(work / MODEL),  # never read: the fake engine loads nothing
        "GENQ_MODEL_NAME": MODEL,
        "GENQ_WARMUP__ENABLED": "false",
        "GENQ_DATA_DIR": str(work / "data"),
        "GENQ_CACHE_DIR": str(work / "cache"),
        "GENQ_API_WORKERS": str(args.api_workers),
        "GENQ_WEBHOOK_SECRET": secret,
        "GENQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "GENQ_WEBHOOK_RETRY_SCHEDULE_S": json.dumps(RETRY_SCHEDULE_S),
        "SOAK_ENGINE_DIR": str(work / "engine"),
        "SOAK_TOKEN_S": str(args.token_s),
    }
    print(f"soak: starting Redis, API, worker (fake engine), webhooks in {work} ...", flush=True)
    stack = SoakStack(work, args.worker_concurrency, env)
    try:
        await asyncio.to_thread(stack.wait_ready, 120)
        kinds = plan_kinds(parse_mix(args.mix), args.jobs, args.seed)
        plan = [
            Job(i, kind, i / args.rate, args.cancel_tokens if kind == "cancel" else args.tokens)
            for i, kind in enumerate(kinds)
        ]
        soak_run = Soak(args, stack, receiver, f"http://127.0.0.1:{hook_port}/hook")
        print(
            f"soak: {args.jobs:,} jobs at {args.rate:g}/s ({args.jobs / args.rate:.0f} s) ...",
            flush=True,
        )
        run = await soak_run.run(plan)
        run |= {
            "samples": soak_run.samples,
            "http_errors": soak_run.http_errors,
            "receiver": receiver,
        }
        return plan, run, stack
    except BaseException:
        stack.stop()
        raise
    finally:
        await runner.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--rate", type=float, default=100.0, help="jobs sent per second")
    p.add_argument("--mix", default=DEFAULT_MIX, help="kinds' weights")
    p.add_argument("--tokens", type=int, default=16, help="each job's output tokens")
    p.add_argument("--token-s", type=float, default=0.004, help="the fake engine's time a token")
    p.add_argument("--cancel-tokens", type=int, default=250, help="a cancel job's tokens")
    p.add_argument("--cancel-after-s", type=float, default=0.5, help="cancel within this")
    p.add_argument("--deadline-s", type=float, default=0.001)
    p.add_argument("--wait-s", type=int, default=30, help="Prefer: wait=N")
    p.add_argument("--poll-s", type=float, default=0.25)
    p.add_argument("--webhook-fail", type=float, default=0.1, help="deliveries answered 500")
    p.add_argument("--webhook-wait-s", type=float, default=20.0)
    p.add_argument("--result-ttl-s", type=int, default=30)
    p.add_argument("--stream-keep-s", type=int, default=5)
    p.add_argument("--worker-concurrency", type=int, default=64)
    p.add_argument("--api-workers", type=int, default=1)
    p.add_argument("--max-inflight", type=int, default=2000, help="jobs followed at once")
    p.add_argument("--connections", type=int, default=512, help="for polls, streams, waits")
    p.add_argument("--submit-connections", type=int, default=64)
    p.add_argument("--job-timeout-s", type=float, default=25.0)
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--recount-every", type=int, default=5, help="samples between Lua recounts")
    p.add_argument("--no-expiry-wait", dest="expiry_wait", action="store_false")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, help="the summary as JSON")
    p.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = p.parse_args()
    parse_mix(args.mix)
    if args.job_timeout_s >= args.result_ttl_s:
        p.error(
            "--job-timeout-s must be shorter than --result-ttl-s (a late look needs the record)"
        )

    work = Path(tempfile.mkdtemp(prefix="genq-soak-"))
    try:
        import uvloop  # noqa: PLC0415 - the client's loop costs less CPU on uvloop

        plan, run, stack = uvloop.run(soak(args, work))
    except ImportError:
        plan, run, stack = asyncio.run(soak(args, work))
    stack.stop()
    runs, hosts = read_engine_logs(work / "engine")
    summary = summarize(args, plan, run, runs, hosts)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        for log in work.glob("*.log"):
            (args.logs / log.name).write_bytes(log.read_bytes())
    shutil.rmtree(work, ignore_errors=True)  # Redis's append-only file: tens of MB a long run
    print()
    print(timeline(run["samples"]))
    print()
    print(render(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str))
    bad = summary["verdicts"].keys() - {"ok"}
    return 1 if bad or summary["counters"]["unequal"] else 0


if __name__ == "__main__":
    sys.exit(main())
