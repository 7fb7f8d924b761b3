"""A job's exception crosses from the engine host (worker.host.main) to its Celery task
(worker.engine_client) with the type the task's autoretry acts on: a Redis outage still sends
the job back to the queue."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.store.queue import RETRY_ON_REDIS_ERRORS
from worker.engine_client import HostFailed, _exception
from worker.protocol import decode_from_host, encode, failure


@pytest.mark.parametrize(
    ("raised", "retried"),
    [
        (RedisConnectionError("Connection refused"), True),
        (RedisTimeoutError("Timeout reading from socket"), True),
        (ValueError("a bug"), False),
    ],
)
def test_redis_outages_keep_their_type_other_errors_their_message(
    raised: Exception, retried: bool
) -> None:
    sent = decode_from_host(encode(failure(7, raised)))
    assert sent.seq == 7
    again = _exception(sent)
    assert isinstance(again, RETRY_ON_REDIS_ERRORS["autoretry_for"]) is retried
    assert str(raised) in str(again)
    if not retried:
        assert isinstance(again, HostFailed)
        assert str(again) == "ValueError: a bug"
