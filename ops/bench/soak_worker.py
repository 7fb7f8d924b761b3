"""A genq worker with a FAKE engine, for the soak benchmark (ops/bench/soak.py) only: everything
of ``genq worker`` is real (Celery, the engine host process, claims, leases, output streams,
results, cancels, the heartbeat and the janitor) except vLLM, which a :class:`FakeEngine` replaces.

    REDIS_URL=redis://... SOAK_ENGINE_DIR=/tmp/soak .venv/bin/python -m ops.bench.soak_worker

(ops/bench/soak.py starts it so, with the stack's GENQ_* settings; GENQ_MODEL may name any path,
and unset, no model is prepared: nothing is loaded.)

How the fake gets into the engine host: importing this module replaces the ``Engine`` that the
host's runtime builds (``worker.host.runtime.Engine``). The engine host is started with
multiprocessing's "spawn" context, whose child imports the parent's main module again (as
``__mp_main__``) before it runs ``host_main``; so started with ``python -m ops.bench.soak_worker``,
the host applies the same replacement before it builds its engine, and never imports vLLM.
Each host writes ``host-<pid>.json`` in ``SOAK_ENGINE_DIR`` when its engine starts and when it
stops (its main module, whether vLLM is loaded), so that the benchmark can check this.

The fake streams ``max_tokens`` tokens (``SOAK_TOKEN_S`` apart, 4 ms unless set) into the job's
progress, as vLLM's deltas would come, and returns a GenerationResult; a prompt containing
``soak:fail`` is refused as invalid input (the job ends ``failed``). It logs every engine request
to ``SOAK_ENGINE_DIR/runs-<pid>.log``, one line each: ``S <id>`` when it starts, ``E <id>`` when
it ends with a result, ``A <id>`` when it is aborted (canceled): the benchmark counts how many
times each job ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# What `genq worker` does before it imports the worker: its metrics live in memory; a directory
# meant for the API's processes would make prometheus_client (imported below) write files.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from genq.contract.schemas import JobInput  # noqa: E402
from worker.host import runtime  # noqa: E402
from worker.host.engine import Engine, GenerationResult, InvalidInput, Progress  # noqa: E402

FAIL_MARKER = "soak:fail"  # the same in ops/bench/soak.py
DEFAULT_TOKEN_S = 0.004


def engine_dir() -> Path:
    return Path(os.environ.get("SOAK_ENGINE_DIR") or ".")


def host_report(phase: str) -> dict[str, Any]:
    """What the benchmark checks of the process its engine runs in."""
    main = sys.modules.get("__main__")
    return {
        "pid": os.getpid(),
        "phase": phase,
        "main_module": getattr(getattr(main, "__spec__", None), "name", None),
        "main_name": getattr(main, "__name__", None),
        "engine_class": f"{runtime.Engine.__module__}.{runtime.Engine.__qualname__}",
        "vllm_loaded": "vllm" in sys.modules,
        "torch_loaded": "torch" in sys.modules,
    }


class FakeEngine(Engine):
    """vLLM's place taken by a timer: the same loop thread and ``submit`` as the real Engine (the
    runtime runs every job coroutine, Redis write and heartbeat on it), no model."""

    def __init__(self, model: str, engine_args: dict[str, Any], max_num_seqs: int, **_: Any):
        super().__init__(model, engine_args, max_num_seqs)
        self.token_s = float(os.environ.get("SOAK_TOKEN_S") or DEFAULT_TOKEN_S)
        self._active = 0
        self._log: Any = None

    def start(self) -> dict[str, float]:
        folder = engine_dir()
        folder.mkdir(parents=True, exist_ok=True)
        # Line-buffered: a host that is killed still leaves every line it wrote.
        self._log = (folder / f"runs-{os.getpid()}.log").open("a", buffering=1)
        self._write_report("started")
        self._thread.start()
        return {"imports": 0.0, "engine": 0.0}

    def _write_report(self, phase: str) -> None:
        path = engine_dir() / f"host-{os.getpid()}-{phase}.json"
        path.write_text(json.dumps(host_report(phase)))

    async def generate(
        self, request_id: str, job: JobInput, progress: Progress | None = None
    ) -> GenerationResult:
        p = progress or Progress()
        p.started = time.perf_counter()
        self._log.write(f"S {request_id}\n")
        self._active += 1
        try:
            text = job.prompt or (job.messages[-1].content if job.messages else "")
            if FAIL_MARKER in text:
                raise InvalidInput(f"the fake engine refuses prompts with {FAIL_MARKER!r}")
            p.prompt_tokens = len(text.split())
            for i in range(job.sampling.max_tokens):
                await asyncio.sleep(self.token_s)
                if p.ttft_s is None:
                    p.ttft_s = time.perf_counter() - p.started
                p.pieces.append(f"t{i} ")
                p.output_tokens += 1
            p.finish_reason = "length"
        except asyncio.CancelledError:
            self._log.write(f"A {request_id}\n")
            raise
        finally:
            self._active -= 1
        self._log.write(f"E {request_id}\n")
        return p.result()

    def unfinished_requests(self) -> int:
        return self._active

    @property
    def is_dead(self) -> bool:
        return False

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
        if self._log is not None:
            self._write_report("stopped")
            self._log.close()
            self._log = None


def no_model(cache_dir: Path) -> Path:
    """What the runtime prepares when GENQ_MODEL is unset (a download, otherwise): a name only."""
    return cache_dir / "fake-model"


# The replacement, at import: in the Celery process (which never builds an engine) and, through
# spawn's import of the main module, in the engine host, before host_main builds the runtime.
runtime.Engine = FakeEngine
runtime.prepare_default_model = no_model


def main() -> int:
    from genq.cli.main import main as genq_main  # noqa: PLC0415 - `genq worker`, as the CLI runs it

    return genq_main(["worker"])


if __name__ == "__main__":
    sys.exit(main())
