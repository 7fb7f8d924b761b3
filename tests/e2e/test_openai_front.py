"""The OpenAI-compatible front, driven by OpenAI's own Python client (``openai``), unchanged,
against the real stack: every request is a genq job with its record."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api}/v1", api_key="unused-without-keys", max_retries=0)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI, stack: Stack) -> str:
    (served,) = [m for m in client.models.list().data if m.id == stack.worker_info()["model"]]
    assert served.model_extra["warm_workers"] >= 1
    return served.id


def job_of(stack: Stack, completion_id: str) -> dict:
    job_id = completion_id.split("-", 1)[1]
    return httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()


def test_chat_completion_answers_and_is_a_job(client, model, stack: Stack) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
    )
    (choice,) = completion.choices
    assert choice.message.content.strip()
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert completion.id.startswith("chatcmpl-") and completion.model == model
    job = job_of(stack, completion.id)
    assert job["status"] == "succeeded" and job["output"]["text"] == choice.message.content
    usage = completion.usage
    assert usage.prompt_tokens == job["metrics"]["prompt_tokens"] > 0
    assert usage.completion_tokens == job["metrics"]["output_tokens"] > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert job["metrics"]["queue_ms"] is not None and job["metrics"]["ttft_ms"] is not None


def test_text_completion_with_forced_length(client, model, stack: Stack) -> None:
    completion = client.completions.create(
        model=model, prompt="The sea is", max_tokens=12, extra_body={"ignore_eos": True}
    )
    (choice,) = completion.choices
    job = job_of(stack, completion.id)
    assert choice.text == job["output"]["text"] and choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 12


def test_streamed_chat_deltas_join_to_the_jobs_text(client, model, stack: Stack) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    job = job_of(stack, chunks[0].id)
    assert text == job["output"]["text"] and len({c.id for c in chunks}) == 1


def test_streamed_text_completion(client, model, stack: Stack) -> None:
    chunks = list(
        client.completions.create(model=model, prompt="One, two,", max_tokens=16, stream=True)
    )
    text = "".join(c.choices[0].text for c in chunks)
    assert text == job_of(stack, chunks[0].id)["output"]["text"] and text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"n": 2, "stream": True}, "n: a streamed request has 1 choice"),
        ({"temperature": 5}, "temperature"),
        ({"logprobs": True, "stream": True}, "logprobs are not streamed"),
        ({"response_format": {"type": "json_schema"}}, "a JSON Schema object is needed"),
        ({"response_format": {"type": "yaml"}}, "response_format.type 'yaml'"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text content"),
    ],
)
def test_what_genq_cannot_honour_is_a_422_naming_it(client, model, kwargs, reason) -> None:
    request = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(**(request | kwargs))
    assert reason in err.value.body["message"]


def test_an_unknown_model_is_a_404_listing_the_served_ones(client, model) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-17", prompt="hi", max_tokens=4)
    assert model in err.value.body["message"]
