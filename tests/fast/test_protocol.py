"""The messages between a worker's Celery process and its engine host (worker.protocol): each
kind comes back from its line as it was sent, and a line that is not one of them, or is over
the size limit, is refused with a message that says why."""

from __future__ import annotations

import msgspec
import pytest

from worker import protocol
from worker.protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    Announce,
    Done,
    Metrics,
    MetricsText,
    ProtocolError,
    Ready,
    RequestFailed,
    Resend,
    Run,
    ShuttingDown,
    StartFailed,
    Stop,
    decode_from_host,
    decode_to_host,
    encode,
)

PAYLOAD = {
    "id": "0123abcd",
    "input": {"prompt": 'Ünïcode,\nnewlines and "quotes"', "sampling": {"max_tokens": 7}},
    "created_at": 1767225600.25,
    "webhook": None,
    "resent": False,
}

TO_HOST = [
    Run(1, PAYLOAD, redelivered=True),
    Run(2, PAYLOAD),
    Metrics(3),
    Announce(4),
    ShuttingDown(5),
    Stop(),
    Ack(0),  # to the host's Resend
    RequestFailed(1, "redis_connection", "ConnectionError: Connection refused"),
]
FROM_HOST = [
    Ready(msgspec.Raw(b'{"name":"w","concurrency":2}')),
    StartFailed("EngineFailed: CUDA out of memory"),
    Done(1, {"id": "0123abcd", "status": "succeeded"}),
    MetricsText(3, "# HELP genq_jobs Jobs\ngenq_jobs_total 3\n"),
    Ack(4),
    RequestFailed(2, "redis_timeout", "TimeoutError: Timeout reading from socket"),
    Resend(0, msgspec.Raw(b'{"id":"0123abcd","resent":false}')),
]


@pytest.mark.parametrize("message", TO_HOST, ids=lambda m: type(m).__name__)
def test_every_request_comes_back_as_it_was_sent(message: object) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the prompt
    assert decode_to_host(bytes(line)) == message


@pytest.mark.parametrize("message", FROM_HOST, ids=lambda m: type(m).__name__)
def test_every_reply_comes_back_as_it_was_sent(message: object) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_from_host(bytes(line)) == message


def test_a_run_missing_its_redelivered_flag_is_a_first_delivery() -> None:
    assert decode_to_host(b'{"op":"run","seq":9,"payload":{"id":"x"}}\n') == Run(9, {"id": "x"})


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"op":"explode","seq":1}\n', "Invalid value 'explode' - at `$.op`"),
        (b'{"seq":1}\n', "missing required field `op`"),
        (b'{"op":"run","payload":{}}\n', "missing required field `seq`"),
        (b'{"op":"metrics","seq":"one"}\n', "Expected `int`, got `str` - at `$.seq`"),
        (b"not json\n", "JSON is malformed"),
        (b"[1, 2]\n", "Expected `object`, got `array`"),
    ],
)
def test_a_line_that_is_no_request_is_refused_saying_why(line: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match="not a message from the Celery process") as refused:
        decode_to_host(line)
    assert says in str(refused.value)


def test_a_request_is_not_a_reply() -> None:
    """Each side decodes only what the other sends."""
    with pytest.raises(ProtocolError, match="not a message from the engine host"):
        decode_from_host(encode(Metrics(1)))
    with pytest.raises(ProtocolError, match="Invalid value 'done'"):
        decode_to_host(encode(Done(1, {"id": "x", "status": "succeeded"})))
    with pytest.raises(ProtocolError, match="Invalid value 'resend'"):
        decode_to_host(encode(Resend(1, msgspec.Raw(b"{}"))))
    with pytest.raises(ProtocolError, match="Invalid enum value 'disk_full' - at `\\$.kind`"):
        decode_from_host(b'{"op":"failed","seq":1,"kind":"disk_full","message":"x"}')


def test_the_size_limit_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_MESSAGE_BYTES == 64 << 20
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 100)
    fits = Run(1, {"id": "x" * 40})
    line = encode(fits)
    assert len(line) <= 101
    assert decode_to_host(line) == fits
    with pytest.raises(ProtocolError, match="a Run message of 1.. bytes is over the 100-byte"):
        encode(Run(1, {"id": "x" * 100}))
    with pytest.raises(ProtocolError, match="more than 100 bytes"):
        decode_to_host(b'{"op":"run","seq":1,"payload":{"id":"' + b"x" * 100 + b'"}}\n')
