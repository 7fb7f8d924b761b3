"""At GENQ_LOG_LEVEL=INFO a genq process logs genq's own lines and every library's warnings, not
the libraries' INFO chatter (genq.contract.logs); DEBUG brings it all back. vLLM's console keeps
its warnings and one line per start-up phase (worker.host.vllm_log.Console)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from genq.contract import logs
from worker.host import vllm_log

QUIETED = [*logs.CHATTY, "uvicorn.error", "uvicorn.access"]


@pytest.fixture(autouse=True)
def _loggers_restored() -> Iterator[None]:
    """configure_logging and quiet_uvicorn set process-wide state: put it back."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIETED}
    filters = list(logging.getLogger("uvicorn.access").filters)
    yield
    root.handlers, root.level = handlers, root_level
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("uvicorn.access").filters = filters


def _access(path: str) -> logging.LogRecord:
    """An access line as uvicorn logs it."""
    args = ("127.0.0.1:5000", "GET", path, "1.1", 200)
    line = '%s - "%s %s HTTP/%s" %d'
    return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, line, args, None)


def test_info_holds_the_libraries_chatter_back_and_debug_shows_it() -> None:
    logs.configure_logging("INFO")
    for name in logs.CHATTY:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
    for name in logs.CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logs.configure_logging("debug")
    assert all(logging.getLogger(name).level == logging.NOTSET for name in logs.CHATTY)


def test_probe_and_scrape_access_lines_are_dropped_below_debug() -> None:
    access = logging.getLogger("uvicorn.access")
    logs.quiet_uvicorn("INFO")
    logs.quiet_uvicorn("INFO")  # again, as a second app in the same process does
    assert sum(isinstance(f, logs.DropProbes) for f in access.filters) == 1
    for path in ("/readyz", "/healthz", "/metrics", "/readyz?x=1"):
        assert not access.filter(_access(path)), path
    for path in ("/generate", "/v1/jobs/abc", "/v1/workers"):
        assert access.filter(_access(path)), path
    assert not logging.getLogger("uvicorn.error").isEnabledFor(logging.INFO)
    assert logging.getLogger("uvicorn.error").isEnabledFor(logging.WARNING)


def test_debug_keeps_uvicorn_as_it_is() -> None:
    access = logging.getLogger("uvicorn.access")
    access.filters = []
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)
    logs.quiet_uvicorn("DEBUG")
    assert access.filters == []
    assert logging.getLogger("uvicorn.error").isEnabledFor(logging.INFO)


def _vllm(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("vllm.x", level, "", 0, message, None, None)


def test_vllm_s_console_at_warning_keeps_warnings_and_one_line_per_phase() -> None:
    console = vllm_log.Console("WARNING")
    assert console.filter(_vllm(logging.WARNING, "libtcmalloc is not found in LD_PRELOAD."))
    assert console.filter(_vllm(logging.INFO, "Loading weights took 1.49 seconds"))
    assert console.filter(
        _vllm(logging.INFO, "init engine (profile, create kv cache, warmup model) took 5.44 s")
    )
    assert not console.filter(_vllm(logging.INFO, "Resolved architecture: LlamaForCausalLM"))
    assert not console.filter(_vllm(logging.INFO, "Starting to load model /m..."))
    assert vllm_log.Console("INFO").filter(_vllm(logging.INFO, "Resolved architecture: X"))


def test_the_engine_host_quiets_vllm_unless_verbose_or_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "")  # recorded: what follows is undone after
    monkeypatch.delenv("VLLM_LOGGING_LEVEL")
    vllm_log.quiet_console(verbose=True)
    assert "VLLM_LOGGING_LEVEL" not in os.environ
    vllm_log.quiet_console(verbose=False)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR"
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")  # the user's own
    vllm_log.quiet_console(verbose=False)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"
