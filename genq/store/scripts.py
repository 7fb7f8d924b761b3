"""genq's Redis Lua scripts: one file each under ``lua/``, read once, when this module is imported.

Each file opens with a comment that gives its KEYS, ARGV and reply. A script names genq's key
prefixes as ``${NAME}``, filled in here from genq.contract.constants, so that every key name is
written in one place; fragments several scripts share (lua/waiting.lua, lua/leave_queue.lua) go
in the same way.
Callers register the text with redis-py (``register_script``: loaded into Redis once, then run by
its SHA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from string import Template

from redis.exceptions import OutOfMemoryError, ResponseError

from genq.contract import constants


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()


_VALUES = {
    "MODEL_QUEUED_PREFIX": constants.MODEL_QUEUED_PREFIX,
    "QUEUED_COUNT": constants.QUEUED_COUNT,
    "WAITING_SET": constants.WAITING_SET,
    "MODEL_WAITING_PREFIX": constants.MODEL_WAITING_PREFIX,
    "BATCH_KEY_PREFIX": constants.BATCH_KEY_PREFIX,
    "JOB_KEY_PREFIX": constants.JOB_KEY.format(job_id=""),
}


def _fragment(name: str, indent: str = "") -> str:
    text = Template(_read(name)).substitute(_VALUES)
    return f"\n{indent}".join(
        line for line in text.strip().splitlines() if not line.startswith("--")
    )


_VALUES["WAITING"] = _fragment("waiting")
_VALUES["LEAVE_QUEUE"] = _fragment("leave_queue", "  ")


def _load(name: str) -> str:
    return Template(_read(name)).substitute(_VALUES)


CREATE_JOB = _load("create_job")
TRANSITION = _load("transition")
CLAIM = _load("claim")
LAPSED = _load("lapsed")
RENEW_LEASES = _load("renew_leases")
RECOUNT_WAITING = _load("recount_waiting")
CREATE_BATCH = _load("create_batch")
APPEND_OUTPUTS = _load("append_outputs")
MOVE_DUE_WEBHOOKS = _load("move_due_webhooks")
RATE_LIMIT = _load("rate_limit")


@contextlib.contextmanager
def full_is_out_of_memory() -> Iterator[None]:
    """A script that Redis refused for its maxmemory raises redis-py's OutOfMemoryError, as one
    command does: Redis 7 keeps the refusal's error code, Redis 6 (the embedded one) wraps it in
    "Error running script", which redis-py reads as a plain ResponseError."""
    try:
        yield
    except OutOfMemoryError:
        raise
    except ResponseError as exc:
        if "OOM command not allowed" in str(exc):
            raise OutOfMemoryError(str(exc)) from exc
        raise
