"""Structured output (JSON Schema, regex, choice), logprobs and n > 1, through /v1/jobs, batches,
the OpenAI front (OpenAI's own client) and the CLI, on the real CPU engine; and what a prompt
means: a chat turn by default, plain text with ``raw``."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import Stack, wait_for_job

pytestmark = pytest.mark.engine

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


def run(stack: Stack, body: dict) -> dict:
    response = httpx.post(
        f"{stack.api}/v1/jobs", json=body, headers={"Prefer": "wait=60"}, timeout=90
    )
    assert response.status_code in (200, 202), response.text
    job = response.json()
    return job if job["status"] in ("succeeded", "failed") else wait_for_job(stack.api, job["id"])


def test_a_prompt_is_asked_as_a_chat_turn_and_raw_continues_the_text(stack: Stack) -> None:
    asked = run(stack, {"prompt": "What is the capital of France?", "max_tokens": 24})
    assert asked["status"] == "succeeded", asked
    assert "Paris" in asked["output"]["text"]
    assert asked["output"]["prompt_format"] == "chat" and asked["input"]["raw"] is False

    raw = run(stack, {"prompt": "Once upon a time", "raw": True, "max_tokens": 12})
    assert raw["status"] == "succeeded", raw
    assert raw["output"]["prompt_format"] == "raw" and raw["output"]["text"].strip()


def test_a_schema_job_returns_json_that_validates(stack: Stack) -> None:
    job = run(
        stack,
        {
            "prompt": "Where is the Eiffel Tower? Answer in JSON.",
            "json_schema": CITY,
            "max_tokens": 64,
        },
    )
    assert job["status"] == "succeeded", job
    parsed = job["output"]["json"]
    jsonschema.validate(parsed, CITY)
    assert json.loads(job["output"]["text"]) == parsed


def test_a_choice_job_answers_one_of_the_choices(stack: Stack) -> None:
    choices = ["positive", "negative", "neutral"]
    job = run(
        stack,
        {"prompt": "Sentiment of 'I love this phone!'?", "choice": choices, "max_tokens": 8},
    )
    assert job["status"] == "succeeded", job
    assert job["output"]["text"] in choices


def test_a_regex_job_matches_its_regex(stack: Stack) -> None:
    pattern = r"[0-9]{3}-[0-9]{4}"
    job = run(stack, {"prompt": "Make up a phone number.", "regex": pattern, "max_tokens": 16})
    assert job["status"] == "succeeded", job
    assert re.fullmatch(pattern, job["output"]["text"]), job["output"]


def test_logprobs_and_n_completions(stack: Stack) -> None:
    job = run(
        stack,
        {
            "prompt": "Name a colour.",
            "n": 3,
            "logprobs": 2,
            "temperature": 1.0,
            "seed": 7,
            "max_tokens": 6,
        },
    )
    assert job["status"] == "succeeded", job
    output = job["output"]
    assert [c["index"] for c in output["choices"]] == [0, 1, 2]
    assert output["text"] == output["choices"][0]["text"]
    made = 0
    for choice in output["choices"]:
        logprobs = choice["logprobs"]
        assert logprobs and "".join(t["token"] for t in logprobs) == choice["text"]
        for token in logprobs:
            assert token["logprob"] <= 0 and len(token["top_logprobs"]) == 2
            best = token["top_logprobs"][0]["logprob"]
            assert best >= token["top_logprobs"][1]["logprob"] and best >= token["logprob"]
        made += len(logprobs)
    assert job["metrics"]["output_tokens"] == made  # usage counts every completion


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"json_schema": {"type": "nonsense"}}, "json_schema: not a valid JSON Schema"),
        ({"json_schema": {"properties": 3}}, "json_schema: not a valid JSON Schema"),
        ({"regex": "(unclosed"}, "the regex does not compile"),
        ({"choice": ["a"], "regex": "a"}, "at most one of json_schema, regex, choice"),
        ({"n": 9}, "n: at most 8 completions per job (GENQ_MAX_N)"),
        ({"logprobs": 21}, "logprobs"),
    ],
)
def test_bad_structure_is_a_422_and_nothing_is_queued(stack: Stack, fields, reason) -> None:
    before = httpx.get(f"{stack.api}/v1/queue").json()["depth"]
    response = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "x", **fields})
    assert response.status_code == 422, response.text
    assert reason in json.dumps(response.json()), response.text
    assert httpx.get(f"{stack.api}/v1/queue").json()["depth"] <= before


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        # Python compiles a lookahead; the grammar backends take none.
        ({"regex": "(?=a)a"}, ""),
        # Valid JSON Schema, nested deeper than the engine follows.
        ({"json_schema": nested(70)}, "nested too deeply"),
        # Valid JSON Schema whose reference leads nowhere.
        ({"json_schema": {"$ref": "#/$defs/missing"}}, ""),
    ],
)
def test_a_structure_the_backend_refuses_fails_the_job_and_the_worker_serves_on(
    stack: Stack, fields: dict, reason: str
) -> None:
    job = run(stack, {"prompt": "Say a.", "max_tokens": 4, **fields})
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "invalid_input" and reason in job["error"]["message"]
    after = run(stack, {"prompt": "Say yes.", "choice": ["yes", "no"], "max_tokens": 4})
    assert after["status"] == "succeeded" and after["output"]["text"] in ("yes", "no")


def test_a_batch_shares_its_schema_with_every_item(stack: Stack) -> None:
    body = {
        "json_schema": CITY,
        "max_tokens": 64,
        "items": [
            {"prompt": "Where is the Colosseum? Answer in JSON."},
            {"prompt": "Where is Big Ben? Answer in JSON."},
        ],
    }
    batch = httpx.post(f"{stack.api}/v1/batches", json=body)
    assert batch.status_code == 202, batch.text
    for item in batch.json()["jobs"]:
        job = wait_for_job(stack.api, item["id"])
        assert job["status"] == "succeeded", job
        jsonschema.validate(job["output"]["json"], CITY)


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api}/v1", api_key="unused-without-keys", max_retries=0)


@pytest.fixture(scope="module")
def model(stack: Stack) -> str:
    return stack.worker_info()["model"]


def test_openai_response_format_json_schema(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Where is the Eiffel Tower? Answer in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": CITY, "strict": True},
        },
        max_tokens=64,
    )
    jsonschema.validate(json.loads(completion.choices[0].message.content), CITY)


def test_openai_json_object_and_vllm_guided_choice(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe Paris in JSON."}],
        response_format={"type": "json_object"},
        max_tokens=48,
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content), dict)
    picked = client.completions.create(
        model=model,
        prompt="The sky is",
        max_tokens=4,
        extra_body={"structured_outputs": {"choice": ["blue", "green"]}},
    )
    assert picked.choices[0].text in ("blue", "green")


def test_openai_logprobs_and_n(client: openai.OpenAI, model: str) -> None:
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name a fruit."}],
        max_tokens=5,
        n=2,
        temperature=1.0,
        seed=3,
        logprobs=True,
        top_logprobs=3,
    )
    assert [c.index for c in chat.choices] == [0, 1]
    for choice in chat.choices:
        tokens = choice.logprobs.content
        assert "".join(t.token for t in tokens) == choice.message.content
        assert all(len(t.top_logprobs) == 3 for t in tokens)
    made = sum(len(c.logprobs.content) for c in chat.choices)
    assert chat.usage.completion_tokens == made

    text = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=4, logprobs=2)
    logprobs = text.choices[0].logprobs
    assert "".join(logprobs.tokens) == text.choices[0].text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], n=2, stream=True
        )
    assert "stream" in err.value.body["message"]


def test_the_cli_submits_a_schema_job(stack: Stack) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "genq.cli",
            "submit",
            "Where is the Eiffel Tower? Answer in JSON.",
            "--json-schema",
            json.dumps(CITY),
            "--max-tokens",
            "64",
            "--wait",
            "--json",
            "--url",
            stack.api,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout)["output"]["json"], CITY)
