"""genq.contract.models against a real Redis: the name a worker serves its model under, which names the
API's catalog accepts (declared, registered lately, not forgotten), which model a job naming none
goes to, and the settings that name models."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from pydantic import ValidationError
from redis.asyncio import Redis

from genq.contract.constants import MODELS_KEY
from genq.contract.models import NoDefaultModel, UnknownModel, check_name, served_name
from genq.contract.settings import CommonSettings, WorkerSettings
from genq.store.embedded import EmbeddedRedis
from genq.store.jobs import JobStore
from genq.store.models import ModelCatalog, register

WEEK_S = 7 * 24 * 3600.0


@pytest.fixture
def sync_redis(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A synchronous client, as a worker registers its model with at start."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def resolve_all(
    with_store: Callable[..., object],
    sync_redis: redis.Redis,
    asked: list[str | None],
    declared: list[str] = (),
    default: str | None = None,
    registered: list[str] = (),
    forget_s: float = WEEK_S,
) -> list[str | Exception]:
    """Each of ``asked`` resolved by one catalog over a flushed Redis in which a worker of each
    of ``registered`` has started; a refusal is returned, not raised."""

    async def main(_: JobStore, client: Redis) -> list[str | Exception]:
        for name in registered:
            register(sync_redis, name)
        catalog = ModelCatalog(client, list(declared), default, forget_s)
        out: list[str | Exception] = []
        for name in asked:
            try:
                out.append(await catalog.resolve(name))
            except (UnknownModel, NoDefaultModel) as exc:
                out.append(exc)
        return out

    return with_store(main)


# -- served_name, check_name -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "name", "served"),
    [
        ("/models/Llama-3-8B", "mine", "mine"),  # an explicit name wins
        (None, None, "smollm2-135m-instruct"),  # the built-in default model
        ("/models/Llama-3-8B", None, "Llama-3-8B"),  # a directory: its last part
        ("./x/y", None, "y"),
        ("meta-llama/Llama-3.1-8B", None, "meta-llama/Llama-3.1-8B"),  # a hub id stays whole
    ],
)
def test_served_name(model: str | None, name: str | None, served: str) -> None:
    assert served_name(model, name) == served


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a" * 129])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        check_name(bad)
    with pytest.raises(ValueError, match="model name"):
        served_name(bad)  # as the model (a hub id)
    if bad:  # as the name ("" means unset: the directory's name)
        with pytest.raises(ValueError, match="model name"):
            served_name("/models/x", bad)


def test_an_empty_name_means_the_directory_name() -> None:
    assert served_name("/models/x", "") == "x"


def test_a_name_of_128_characters_is_valid() -> None:
    assert check_name("a" * 128) == "a" * 128


# -- ModelCatalog.resolve ----------------------------------------------------------------------


def test_declared_names_need_no_registration(with_store, sync_redis) -> None:
    assert resolve_all(with_store, sync_redis, ["a", "b"], declared=["a", "b"]) == ["a", "b"]
    assert sync_redis.exists(MODELS_KEY) == 0


def test_a_registered_name_is_accepted(with_store, sync_redis) -> None:
    assert resolve_all(with_store, sync_redis, ["r"], declared=["a"], registered=["r"]) == ["r"]
    assert list(sync_redis.hgetall(MODELS_KEY)) == ["r"]
    assert time.time() - float(sync_redis.hget(MODELS_KEY, "r")) < 60


def test_a_registration_older_than_forget_s_is_forgotten(with_store, sync_redis) -> None:
    async def main(_: JobStore, client: Redis) -> list[str]:
        await client.hset(MODELS_KEY, "old", repr(time.time() - 120))
        register(sync_redis, "new")
        catalog = ModelCatalog(client, ["a"], None, forget_s=60)
        with pytest.raises(UnknownModel, match="models: a, new$"):
            await catalog.resolve("old")
        return await catalog.known()

    assert with_store(main) == ["a", "new"]


def test_an_unknown_model_is_refused_listing_the_known_ones(with_store, sync_redis) -> None:
    (refused,) = resolve_all(with_store, sync_redis, ["zzz"], declared=["a"], registered=["b"])
    assert isinstance(refused, UnknownModel)
    assert str(refused) == "model 'zzz' is not served here; models: a, b"


@pytest.mark.parametrize(
    ("declared", "default", "registered", "chosen"),
    [
        (["a", "b"], "b", [], "b"),  # GENQ_DEFAULT_MODEL wins
        (["a", "b"], None, ["r"], "a"),  # else the first declared
        ([], None, ["r"], "r"),  # else the only one registered
    ],
)
def test_the_default_model(with_store, sync_redis, declared, default, registered, chosen) -> None:
    out = resolve_all(with_store, sync_redis, [None], declared, default, registered)
    assert out == [chosen]


def test_the_default_model_may_also_be_named(with_store, sync_redis) -> None:
    out = resolve_all(with_store, sync_redis, [None, "c"], declared=["a"], default="c")
    assert out == ["c", "c"]


def test_no_default_among_two_registered(with_store, sync_redis) -> None:
    (refused,) = resolve_all(with_store, sync_redis, [None], registered=["x", "y"])
    assert isinstance(refused, NoDefaultModel)
    assert str(refused).endswith("models: x, y")
    assert "GENQ_DEFAULT_MODEL" in str(refused)


def test_no_default_when_nothing_is_served(with_store, sync_redis) -> None:
    (refused,) = resolve_all(with_store, sync_redis, [None])
    assert isinstance(refused, NoDefaultModel)
    assert "no model is served yet" in str(refused)


def test_a_model_registered_after_the_catalog_read_is_accepted_at_once(
    with_store, sync_redis
) -> None:
    async def main(_: JobStore, client: Redis) -> tuple[list[str], str, str]:
        catalog = ModelCatalog(client, [], None, WEEK_S, refresh_s=3600)
        before = await catalog.known()  # read and cached for an hour
        register(sync_redis, "late")
        return before, await catalog.resolve("late"), await catalog.resolve(None)

    assert with_store(main) == ([], "late", "late")


# -- settings ----------------------------------------------------------------------------------


def test_genq_models_is_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_MODELS", "a, b")
    settings = CommonSettings()
    assert settings.models == ["a", "b"]
    queues = settings.model_queues(["c", "a"])
    assert queues == ["genq.generate.a", "genq.generate.b", "genq.generate.c"]


def test_an_invalid_name_in_genq_models_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_MODELS", "a,b c")
    with pytest.raises(ValidationError, match="model name 'b c'"):
        CommonSettings()


def test_a_worker_serves_its_directory_name_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENQ_MODEL_NAME", raising=False)
    monkeypatch.delenv("GENQ_QUEUE", raising=False)
    worker = WorkerSettings(model="/m/x", model_name=None)
    assert worker.served_model() == "x"
    assert worker.model_queue() == "genq.generate.x"
    monkeypatch.setenv("GENQ_MODEL_NAME", "named")
    named = WorkerSettings(model="/m/x")
    assert named.served_model() == "named"
    assert named.model_queue() == "genq.generate.named"
