"""The janitor's cost with many jobs running: genq's leases (sorted sets read from their low end,
genq/store/lua/lapsed.lua) beside a scan of every running job (a set of running ids and a lease
key each, checked one by one), side by side in one run on one Redis.

    .venv/bin/python ops/bench/janitor.py                      # 10,000 running, 100 workers
    .venv/bin/python ops/bench/janitor.py --running 100000 --lapsed 50

Each engine host runs the janitor on every heartbeat (GENQ_HEARTBEAT_S, 5 s), inside one Lua
script, which blocks Redis while it runs. With ``--workers`` hosts that is workers / 5 calls a
second. Prints, for each way, the time per call (p50, p99, measured around the script call on
loopback) and the share of Redis's time the janitors take at that rate. ``--lapsed`` jobs have an
ended lease (a dead worker's), the rest a live one; the jobs' records are real job hashes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import LAPSED_SET, LEASES_SET, job_key  # noqa: E402
from genq.store import scripts  # noqa: E402
from genq.store.embedded import EmbeddedRedis  # noqa: E402

# The scan, for comparison: every running job's lease key checked, on every call.
SCAN_SET = "bench:janitor:processing"
SCAN_LEASE = "bench:janitor:lease:"
SCAN_LAPSED = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    if redis.call('HGET', ARGV[2] .. id, 'status') == 'processing' then
      table.insert(out, id)
    end
  end
end
return out
"""


def fill(client: redis.Redis, running: int, lapsed: int, workers: int) -> None:
    now_ms = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(running):
        job = f"bench-{i}"
        dead = i < lapsed
        pipe.hset(job_key(job), mapping={"status": "processing", "worker": f"w{i % workers}"})
        # genq's way: the lease's end in a sorted set.
        pipe.zadd(LEASES_SET, {job: now_ms - 1000 if dead else now_ms + 3_600_000})
        # the scan's way: a set of running ids and a lease key each.
        pipe.sadd(SCAN_SET, job)
        if not dead:
            pipe.set(SCAN_LEASE + job, f"w{i % workers}", px=3_600_000)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def timed(call, n: int, reset=None) -> list[float]:
    """ms per ``call``; ``reset`` (untimed) runs after each."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
        if reset is not None:
            reset()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--running", type=int, default=10_000, help="jobs running")
    p.add_argument("--workers", type=int, default=100, help="engine hosts, each a janitor")
    p.add_argument("--lapsed", type=int, default=0, help="of the running, with an ended lease")
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            fill(client, args.running, args.lapsed, args.workers)
            leases = client.register_script(scripts.LAPSED)
            scan = client.register_script(SCAN_LAPSED)
            job_prefix = job_key("")

            found: list[str] = []

            def genq_call() -> None:
                found[:] = leases(keys=[LEASES_SET, LAPSED_SET], args=[600, 1000])

            def genq_reset() -> None:
                # The lapsed jobs back where they were, so that every call finds them, as every
                # call of the scan does (the real janitor finds each once per resend period).
                if found:
                    client.zadd(LEASES_SET, dict.fromkeys(found, 0))
                    client.delete(LAPSED_SET)

            def scan_call() -> None:
                scan(keys=[SCAN_SET], args=[SCAN_LEASE, job_prefix])

            rows = []
            ways = (
                ("sorted sets (genq)", genq_call, genq_reset),
                ("scan of every job", scan_call, None),
            )
            for name, call, reset in ways:
                call()  # the script loaded
                if reset is not None:
                    reset()
                ms = timed(call, args.calls, reset)
                p50 = statistics.median(ms)
                p99 = sorted(ms)[int(len(ms) * 0.99) - 1]
                busy = args.workers / args.heartbeat_s * p50 / 1000
                rows.append((name, p50, p99, busy))
            client.close()
        finally:
            server.stop()

    print(
        f"janitor: {args.running:,} jobs running ({args.lapsed} lapsed), {args.workers} workers "
        f"each calling it every {args.heartbeat_s:g} s"
    )
    print(f"{'way':<22}{'p50 ms':>10}{'p99 ms':>10}{'Redis busy':>12}")
    for name, p50, p99, busy in rows:
        print(f"{name:<22}{p50:>10.3f}{p99:>10.3f}{busy:>11.1%}")
    print(f"the scan / genq, p50: {rows[1][1] / rows[0][1]:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
