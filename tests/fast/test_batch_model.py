"""ops/bench/batch_model.py, small: the model runs genq's real admission rules on its own clock,
and reads as the GPU measured (docs/performance.md, "A burst into an empty batch is gathered")."""

from __future__ import annotations

import time

from ops.bench import batch_model
from worker.host import scheduler as engine_scheduler
from worker.host.scheduler import CONFIG_KEY, GATHER_KEY, HOLD_KEY

SMALL = ["--batch", "32", "--jobs", "512", "--tokens", "32", "--in-flight", "128",
         "--intake", "160", "--accepted-s", "0.1", "0.3", "--serve-first-s", "0.3"]  # fmt: skip


def test_gathering_puts_the_batch_in_step_and_no_system_beats_the_offline_limit():
    args = batch_model.parser().parse_args(SMALL)
    waves = {CONFIG_KEY: 8, HOLD_KEY: 4}
    limit = batch_model.run(args, "limit")
    serve = batch_model.run(args, "serve")
    apart = batch_model.run(args, "genq", {**waves, GATHER_KEY: 0})
    gathered = batch_model.run(args, "genq", {**waves, GATHER_KEY: 1000})
    for other in (serve, apart, gathered):
        assert other["tok_s"] < limit["tok_s"]
    assert gathered["admissions_per_wave"] < apart["admissions_per_wave"]
    assert gathered["jobs_each"] > apart["jobs_each"]
    assert gathered["tok_s"] > apart["tok_s"]
    assert engine_scheduler.time.monotonic is time.monotonic  # the model's clock is put back
