"""The fast tier gets a Redis of its own: the e2e tier's workers (janitors included) must never
see, or touch, the jobs these tests make."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("fast-redis"))).start()
    yield server
    server.stop()
