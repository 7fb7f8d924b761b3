"""Why the engine runs in a process of its own: how fast Celery's consumer takes messages while
another thread of its process keeps the GIL busy, as vLLM's output handling does in a process that
hosts ``AsyncLLM`` at saturation.

    .venv/bin/python ops/bench/consumer_gil.py            # ~1 min; Redis: REDIS_URL or embedded
    .venv/bin/python ops/bench/consumer_gil.py --busy 0 --consumers stock,batched,stock,batched

Each case is a fresh process: a Celery worker (threads pool, genq's settings: late acks,
prefetch 1, task events) with N tasks waiting in its queue, and a thread that holds the GIL
``busy`` of the time (pure-Python bursts, each followed by 0.2 ms asleep). Prints the
messages per second the consumer got through, against the case with no busy thread.
``--consumers``: Celery's stock consumer (``stock``), with task events in batches
(``batched``: worker.consumer, as genq's worker runs), or a list of them in turn, side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MARKER = "CONSUMER-RATE "


def child(url: str, busy: float, n: int, concurrency: int, consumer: str) -> None:
    from celery import Celery  # noqa: PLC0415

    from genq.contract.settings import CommonSettings  # noqa: PLC0415
    from genq.store.queue import celery_config  # noqa: PLC0415

    app = Celery("consumer-gil")
    # genq's own Celery settings (late acks, prefetch 1, task events, JSON), on a queue of its own.
    app.conf.update(celery_config(CommonSettings(redis_url=url, queue="consumer-gil")))
    if consumer == "batched":
        app.conf.worker_consumer = "worker.consumer:BatchedEventsConsumer"
    done: list[float] = []

    @app.task(name="consumer_gil.noop")
    def noop(i: int) -> None:
        done.append(time.perf_counter())

    app.control.purge()
    for i in range(n):
        noop.apply_async((i,))

    def hold_the_gil() -> None:
        burst_s = 0.0002 * busy / (1 - busy)  # then 0.2 ms asleep: `busy` of the time
        while True:
            end = time.perf_counter() + burst_s
            while time.perf_counter() < end:
                sum(range(50))
            time.sleep(0.0002)

    if busy > 0:
        threading.Thread(target=hold_the_gil, daemon=True).start()

    def report() -> None:
        while len(done) < n:
            time.sleep(0.05)
        print(f"{MARKER}{n / (done[-1] - done[0]):.1f}", flush=True)
        os._exit(0)

    threading.Thread(target=report, daemon=True).start()
    app.Worker(pool="threads", concurrency=concurrency, loglevel="WARNING", quiet=True).start()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", default="0,0.5,0.75,0.9", help="shares of time the busy thread holds")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--consumers", default="stock", help="stock, batched, or a list of them")
    p.add_argument("--consumer", default="stock", help=argparse.SUPPRESS)
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.url, args.child, args.messages, args.concurrency, args.consumer)
        return

    from genq.store.embedded import EmbeddedRedis  # noqa: PLC0415

    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = EmbeddedRedis(Path(os.environ.get("TMPDIR", "/tmp"))).start()
        url = server.url
    try:
        rows = []
        for consumer in args.consumers.split(","):
            for busy in [float(b) for b in args.busy.split(",")]:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(busy), "--url", url,
                     "--messages", str(args.messages), "--concurrency", str(args.concurrency),
                     "--consumer", consumer],
                    capture_output=True, text=True, timeout=600, check=True,
                )  # fmt: skip
                (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith(MARKER)]
                rows.append((consumer, busy, float(line[len(MARKER) :])))
    finally:
        if server is not None:
            server.stop()
    alone = {c: r for c, b, r in reversed(rows) if b == 0}  # each consumer's first run alone
    stock_alone = [r for c, b, r in rows if c == "stock" and b == 0]
    stock = statistics.mean(stock_alone) if stock_alone else 0.0
    print(
        "| consumer | another thread holds the GIL | messages/s taken | x alone | x stock, alone |"
    )
    print("|---|---|---|---|---|")
    for consumer, busy, rate in rows:
        vs_alone = f"{rate / alone[consumer]:.2f}" if consumer in alone else "-"
        vs_stock = f"{rate / stock:.2f}" if stock else "-"
        print(f"| {consumer} | {busy:.0%} of the time | {rate:.0f} | {vs_alone} | {vs_stock} |")


if __name__ == "__main__":
    main()
