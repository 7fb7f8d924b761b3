"""genq's scheduler (worker/host/scheduler.py) on the installed vLLM's own scheduler classes: every
private field it reads, writes or overrides is there, mixed onto them it holds a backlog and lets
it in as the fake-base tests (test_engine_scheduler.py) expect, and on a vLLM that lacks a field
the worker runs vLLM's own scheduler instead. A real scheduler needs an engine config but no
weights: a tiny model's config.json is enough, and no model runs here."""

from __future__ import annotations

import ast
import itertools
import json
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from vllm import SamplingParams
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.request import Request, RequestStatus
from vllm.v1.structured_output import StructuredOutputManager

import worker.host
from worker.host import scheduler as engine_scheduler
from worker.host.engine import with_admission_waves
from worker.host.scheduler import (
    ATTRIBUTES,
    CAPS,
    CONFIG_KEY,
    GATHER_KEY,
    HOLD_KEY,
    AsyncWaveScheduler,
    WaveScheduler,
    _AdmissionWaves,
    _self_attributes,
    admission_waves,
    missing,
)

SLOTS = 16  # max_num_seqs
BLOCK = 32
BLOCKS = 1024  # room for every request these tests make: nothing is preempted


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_hidden_layers": 1,
        "vocab_size": 256,
        "max_position_embeddings": 256,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def engine_config(model_dir: Path, extra: dict[str, Any], async_: bool = False) -> VllmConfig:
    model = ModelConfig(
        model=str(model_dir), skip_tokenizer_init=True, dtype="float32", max_model_len=256
    )
    config = VllmConfig(
        model_config=model,
        scheduler_config=SchedulerConfig(
            max_num_seqs=SLOTS,
            max_num_batched_tokens=1024,
            max_model_len=256,
            is_encoder_decoder=False,
            async_scheduling=async_,
        ),
        cache_config=CacheConfig(block_size=BLOCK),
        additional_config=extra,
    )
    config.cache_config.num_gpu_blocks = BLOCKS  # what the engine core sets once it has a cache
    # vLLM's CPU platform turns asynchronous scheduling off; a GPU engine keeps it on.
    config.scheduler_config.async_scheduling = async_
    return config


def build(
    model_dir: Path, cls: Any, extra: dict[str, Any] | None = None, async_: bool | None = None
) -> Any:
    """``cls`` built as vLLM's engine core builds its scheduler, on a KV cache of BLOCKS blocks;
    ``cls`` may be genq's factory, as ``scheduler_cls`` names it (then ``async_`` says which
    scheduling the config asks for)."""
    if async_ is None:
        async_ = issubclass(cls, AsyncScheduler)
    config = engine_config(model_dir, extra or {}, async_)
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=32, dtype=torch.float32)
    kv_cache = KVCacheConfig(
        num_blocks=BLOCKS, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l0"], spec)]
    )
    return cls(
        vllm_config=config,
        kv_cache_config=kv_cache,
        structured_output_manager=StructuredOutputManager(config),
        block_size=BLOCK,
    )


_request_ids = itertools.count()


def add(s: Any, n: int) -> None:
    """``n`` requests of 4 prompt tokens reach the scheduler's waiting queue."""
    for _ in range(n):
        i = next(_request_ids)
        s.add_request(
            Request(
                request_id=f"r{i}",
                prompt_token_ids=[1 + i % 200] * 4,
                sampling_params=SamplingParams(max_tokens=64),
                pooling_params=None,
            )
        )


def admitted(s: Any) -> int:
    """One scheduling round: how many waiting requests it brought into the batch."""
    return len(s.schedule().scheduled_new_reqs)


def finish(s: Any, n: int) -> None:
    s.finish_requests([r.request_id for r in s.running[:n]], RequestStatus.FINISHED_ABORTED)


def cap_of(s: Any) -> str:
    """The limit genq lowers to hold a backlog: the first of CAPS the scheduler has."""
    return next(name for name in CAPS if hasattr(s, name))


def waves(hold: int = 3, gather_ms: int = 0) -> dict[str, int]:
    return {CONFIG_KEY: 4, HOLD_KEY: hold, GATHER_KEY: gather_ms}


# -- the fields, on the installed build ---------------------------------------------------------


def test_the_installed_vllm_has_everything_genqs_scheduler_changes():
    assert missing() == []


@pytest.mark.parametrize("cls", [Scheduler, AsyncScheduler])
def test_a_real_scheduler_has_the_fields_genq_reads_and_writes(model_dir: Path, cls: type):
    s = build(model_dir, cls, {CONFIG_KEY: 4})
    for name in ATTRIBUTES:
        assert hasattr(s, name), name
    assert s.vllm_config.additional_config == {CONFIG_KEY: 4}
    assert s.running == [] and len(s.waiting) == 0
    assert getattr(s, cap_of(s)) == SLOTS
    assert callable(cls.schedule)


@pytest.mark.parametrize("cls", [Scheduler, AsyncScheduler])
def test_genqs_own_fields_and_helpers_shadow_nothing_of_vllms(model_dir: Path, cls: type):
    """genq's subclass overrides ``schedule`` alone: the fields it sets and its helpers are names
    vLLM's scheduler does not use (or one would overwrite the other)."""
    s = build(model_dir, cls)
    fields = _self_attributes(_AdmissionWaves, ast.Store)
    helpers = {name for name in vars(_AdmissionWaves) if not name.startswith("__")} - {"schedule"}
    assert fields and helpers
    assert not (fields | helpers) & (set(vars(s)) | set(dir(cls)))


@pytest.mark.parametrize("cls", [Scheduler, AsyncScheduler])
def test_vllms_schedule_admits_no_waiting_request_while_the_cap_is_lowered(
    model_dir: Path, cls: type
):
    """The lever genq pulls: the cap, lowered to the batch's size for a round, keeps vLLM's own
    schedule from admitting anyone; put back, the next round admits."""
    s = build(model_dir, cls)
    add(s, 10)
    assert admitted(s) == 10
    add(s, 10)
    cap = cap_of(s)
    setattr(s, cap, len(s.running))
    assert admitted(s) == 0
    setattr(s, cap, SLOTS)
    assert admitted(s) == SLOTS - 10


# -- genq's rules, mixed onto the real classes --------------------------------------------------


@pytest.mark.parametrize("async_", [False, True])
def test_vllm_builds_genqs_scheduler_through_scheduler_cls(model_dir: Path, async_: bool):
    """genq's factory, called as vLLM calls its scheduler class, picks the asynchronous one
    where the config asks for it."""
    s = build(model_dir, admission_waves, waves(), async_=async_)
    assert isinstance(s, AsyncWaveScheduler if async_ else WaveScheduler)
    assert isinstance(s, AsyncScheduler) is async_
    assert (s.wave, s.hold_steps, s.gather_s) == (4, 3, 0)


@pytest.mark.parametrize("cls", [WaveScheduler, AsyncWaveScheduler])
def test_on_vllms_scheduler_a_backlog_is_held_then_let_in_in_a_wave(model_dir: Path, cls: type):
    s = build(model_dir, cls, waves(hold=3))
    add(s, SLOTS - 2)
    assert admitted(s) == SLOTS - 2  # an empty batch is never held
    add(s, 30)  # 2 slots free, fewer than a wave; 30 waiting
    assert [admitted(s) for _ in range(3)] == [0, 0, 0]
    assert getattr(s, cap_of(s)) == SLOTS  # the real cap back after each held round
    assert admitted(s) == 2  # held for hold_steps rounds at most
    finish(s, 2)
    assert admitted(s) == 0  # 2 free again: held
    finish(s, 2)
    assert admitted(s) == 4  # a wave's worth free: the slots freed while held go in at once


@pytest.mark.parametrize("cls", [Scheduler, WaveScheduler])
def test_vllms_own_scheduler_refills_at_once_where_genqs_holds(model_dir: Path, cls: type):
    """The same backlog: vLLM's scheduler admits into the 2 free slots at once, genq's holds."""
    s = build(model_dir, cls, waves(hold=3))
    add(s, SLOTS - 2)
    admitted(s)
    add(s, 30)
    assert admitted(s) == (2 if cls is Scheduler else 0)


@pytest.mark.parametrize("cls", [WaveScheduler, AsyncWaveScheduler])
def test_on_vllms_scheduler_a_burst_is_gathered_then_goes_in_at_once(
    model_dir: Path, cls: type, monkeypatch: pytest.MonkeyPatch
):
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(engine_scheduler, "time", SimpleNamespace(monotonic=lambda: clock.now))
    s = build(model_dir, cls, waves(gather_ms=100))
    add(s, 1)
    assert admitted(s) == 1  # a lone job into an empty batch starts at once
    rounds = []
    for _ in range(4):  # 3 requests every 10 ms: a burst, into a batch of 1
        add(s, 3)
        clock.now += 0.010
        rounds.append(admitted(s))
    assert rounds == [0, 0, 0, 0]
    clock.now += 0.025  # nothing new for 25 ms: the burst is over
    assert admitted(s) == 12


# -- a vLLM that lacks what genq changes --------------------------------------------------------


class AdmitsElsewhere(Scheduler):
    """A vLLM whose ``schedule`` admits through a helper: the cap is no longer read there."""

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        return super().schedule(*args, **kwargs)


class NoSchedule:
    """A scheduler class with no ``schedule`` to override."""


def test_a_schedule_that_no_longer_reads_the_cap_counts_as_missing_it(model_dir: Path):
    cap = cap_of(build(model_dir, Scheduler))
    assert missing((AdmitsElsewhere, NoSchedule)) == [
        f"AdmitsElsewhere.{cap} (read by schedule)",
        "NoSchedule.schedule",
    ]


def test_a_field_vllm_no_longer_sets_is_missing(monkeypatch: pytest.MonkeyPatch):
    """vLLM's own source with its waiting queue renamed."""
    source = engine_scheduler._source
    renamed = re.compile(r"\bself\.waiting\b")
    monkeypatch.setattr(
        engine_scheduler, "_source", lambda obj: renamed.sub("self.queue", source(obj))
    )
    assert missing() == ["Scheduler.waiting", "AsyncScheduler.waiting"]


def test_without_the_fields_the_worker_runs_vllms_own_scheduler_and_warns_once(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(engine_scheduler, "Scheduler", AdmitsElsewhere)
    args = {"model": "m", "max_num_seqs": 64}
    with caplog.at_level(logging.WARNING, logger="worker.host.engine"):
        assert with_admission_waves(args, 16, 4, 100) == args  # no scheduler_cls: vLLM's own
    (record,) = caplog.records
    cap = cap_of(build(model_dir, Scheduler))
    assert f"AdmitsElsewhere.{cap} (read by schedule)" in record.getMessage()
    assert "AsyncScheduler" not in record.getMessage()


def test_a_vllm_whose_scheduler_module_moved_runs_its_own_scheduler(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.delitem(sys.modules, "worker.host.scheduler")
    monkeypatch.delattr(worker.host, "scheduler")
    monkeypatch.setitem(sys.modules, "vllm.v1.core.sched.async_scheduler", None)
    args = {"model": "m", "max_num_seqs": 64}
    with caplog.at_level(logging.WARNING, logger="worker.host.engine"):
        assert with_admission_waves(args, 16) == args
    (record,) = caplog.records
    assert "vllm.v1.core.sched.async_scheduler" in record.getMessage()
