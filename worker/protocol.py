"""The messages between a worker's Celery process (worker.engine_client) and its engine host
(worker.host.main), over the Unix socket between them.

One class per kind of message, each a msgspec Struct, all of them one tagged union: the tag is
the ``op`` field, and every message is one line of JSON. msgspec decodes a line straight into its
class, and checks it on the way: a line that is not JSON, names no known ``op`` or lacks a field
raises :class:`ProtocolError`, which says what is wrong. A job's payload stays the dict Celery
decoded from the job's message, encoded as it is: the host validates it into a JobPayload.

The Celery process sends, each request with its own ``seq``: :class:`Run` (a job; reply
:class:`Done`), :class:`Metrics` (reply :class:`MetricsText`), :class:`Announce` and
:class:`ShuttingDown` (reply :class:`Ack`), and last :class:`Stop` (no reply: the host exits).
The host first sends :class:`Ready` (warm, with its WorkerInfo) or :class:`StartFailed` (the
engine could not start); later, its one request, :class:`Resend` (reply :class:`Ack`): the
Celery process has the Celery app to send a job with, and the host runs none. Each side numbers
its own requests. A request that raised is answered :class:`RequestFailed` instead.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# One message: a job's payload carries prompts up to the model's context.
MAX_MESSAGE_BYTES = 64 << 20
# EX_SOFTWARE: the engine died. The host exits with it, and its Celery process follows, so that
# whatever supervises the worker restarts it.
EXIT_ENGINE_DEAD = 70


class ProtocolError(ValueError):
    """A line that is not a message of this protocol: malformed, of an unknown kind, or over
    :data:`MAX_MESSAGE_BYTES`."""


# gc=False: messages are short-lived and hold no cycles, so the collector need not track them.
class _Message(msgspec.Struct, tag_field="op", gc=False):
    pass


# -- the Celery process to the engine host ---------------------------------------------------


class Run(_Message, tag="run"):
    """Run a job (its message's payload, as Celery decoded it); kombu's ``redelivered`` flag with
    it. Reply: :class:`Done` with the status the job ended in."""

    seq: int
    payload: dict[str, Any]
    redelivered: bool = False


class Metrics(_Message, tag="metrics"):
    """The host's Prometheus text. Reply: :class:`MetricsText`."""

    seq: int


class Announce(_Message, tag="announce"):
    """Celery's consumer is up: publish the worker as warm and start its heartbeat."""

    seq: int


class ShuttingDown(_Message, tag="shutting_down"):
    """SIGTERM: the grace period for running jobs starts."""

    seq: int


class Stop(_Message, tag="stop"):
    """Withdraw the worker, shut the engine down and exit. No reply: the host's exit is it."""


# -- the engine host to the Celery process ---------------------------------------------------


class Ready(_Message, tag="ready"):
    """The engine is warm. ``info``: the WorkerInfo's JSON, as pydantic wrote it (the Celery
    process validates it back into a WorkerInfo)."""

    info: msgspec.Raw


class StartFailed(_Message, tag="start_failed"):
    """The engine could not start; the host exits."""

    error: str


class Done(_Message, tag="done"):
    """A job ended: ``{"id": ..., "status": ...}``."""

    seq: int
    result: dict[str, str]


class MetricsText(_Message, tag="metrics_text"):
    seq: int
    text: str


class Resend(_Message, tag="resend"):
    """The host's janitor found a job whose worker died: put it back on its model's queue.
    ``payload``: the JobPayload's JSON, as pydantic wrote it. Reply: :class:`Ack`."""

    seq: int
    payload: msgspec.Raw


# -- replies, both ways -------------------------------------------------------------------


class Ack(_Message, tag="ack"):
    """:class:`Announce`, :class:`ShuttingDown` or :class:`Resend` done."""

    seq: int


# What a request's exception becomes on the other side: Redis outages keep their type, so a job's
# Celery task autoretries (genq.store.queue.RETRY_ON_REDIS_ERRORS) and sends the job back.
ErrorKind = Literal["redis_connection", "redis_timeout", "other"]


class RequestFailed(_Message, tag="failed"):
    """A request raised. ``message``: the exception's type and text."""

    seq: int
    kind: ErrorKind
    message: str


def failure(seq: int, exc: BaseException) -> RequestFailed:
    """Request ``seq`` raised ``exc``: Redis outages keep their type on the other side."""
    kind: ErrorKind = "other"
    if isinstance(exc, RedisTimeoutError):
        kind = "redis_timeout"
    elif isinstance(exc, RedisConnectionError):
        kind = "redis_connection"
    return RequestFailed(seq, kind, f"{type(exc).__name__}: {exc}")


ToHost = Run | Metrics | Announce | ShuttingDown | Stop | Ack | RequestFailed
FromHost = Ready | StartFailed | Done | MetricsText | Ack | RequestFailed | Resend

# msgspec's encoder keeps its output buffer on itself while it encodes: callers in several
# threads encode under the lock they send under (worker.engine_client), or on one event loop
# (worker.host.main).
_encoder = msgspec.json.Encoder()
_to_host = msgspec.json.Decoder(ToHost)
_from_host = msgspec.json.Decoder(FromHost)


def encode(message: ToHost | FromHost) -> bytearray:
    """One message as one line (JSON never holds a raw newline), built in place: the caller
    sends it as it is. Raises :class:`ProtocolError` past :data:`MAX_MESSAGE_BYTES`, which the
    other side would refuse."""
    line = bytearray()
    _encoder.encode_into(message, line)
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"a {type(message).__name__} message of {len(line)} bytes is over the "
            f"{MAX_MESSAGE_BYTES}-byte limit"
        )
    line += b"\n"
    return line


def decode_to_host(line: bytes) -> ToHost:
    """A line the engine host received."""
    return _decode(_to_host, line, "the Celery process")


def decode_from_host(line: bytes) -> FromHost:
    """A line the Celery process received."""
    return _decode(_from_host, line, "the engine host")


def _decode(decoder: msgspec.json.Decoder[Any], line: bytes, sender: str) -> Any:
    size = len(line) - line.endswith(b"\n")
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"a message from {sender} of more than {MAX_MESSAGE_BYTES} bytes (the limit)"
        )
    try:
        return decoder.decode(line)
    except msgspec.DecodeError as exc:  # ValidationError too: an unknown op, a missing field
        raise ProtocolError(f"not a message from {sender} ({size} bytes): {exc}") from None
