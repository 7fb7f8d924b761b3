"""The job contract: what is accepted, what is refused, what defaults resolve to."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genq.contract.schemas import GenerateRequest, JobCreate, JobPublic, JobRecord, JobStatus


def test_prompt_job_resolves_every_sampling_default() -> None:
    job_input = JobCreate(prompt="hi", metadata={"k": [1, 2]}).to_input()
    assert job_input.prompt == "hi" and job_input.messages is None
    assert job_input.metadata == {"k": [1, 2]}
    assert job_input.sampling.model_dump() == {
        "max_tokens": 512,
        "min_tokens": 0,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "stop": [],
        "seed": None,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "json_schema": None,
        "regex": None,
        "choice": None,
        "logprobs": None,
        "n": 1,
    }


def test_stop_accepts_a_string_or_a_list() -> None:
    assert JobCreate(prompt="x", stop="END").sampling().stop == ["END"]
    assert JobCreate(prompt="x", stop=["a", "b"]).sampling().stop == ["a", "b"]


def test_generate_asks_the_prompt_as_one_user_turn() -> None:
    job_input = GenerateRequest(prompt="What is the capital of France?").to_input()
    assert job_input.prompt is None
    assert [m.model_dump() for m in job_input.messages] == [
        {"role": "user", "content": "What is the capital of France?"}
    ]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "exactly one of 'prompt' or 'messages'"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
        ({"prompt": ""}, "at least 1 character"),
        ({"messages": []}, "at least 1 item"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "'system', 'user' or 'assistant'"),
        ({"prompt": "a", "max_tokens": 0}, "greater than or equal to 1"),
        ({"prompt": "a", "max_tokens": 10, "min_tokens": 11}, "must not exceed max_tokens"),
        ({"prompt": "a", "temperature": -1}, "greater than or equal to 0"),
        ({"prompt": "a", "top_p": 0}, "greater than 0"),
        ({"prompt": "a", "stop": [""]}, "must not be empty"),
        ({"prompt": "a", "tempurature": 1}, "Extra inputs are not permitted"),
        ({"prompt": 3}, "valid string"),
    ],
)
def test_bad_jobs_are_refused_with_a_reason(body: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(body)
    assert fragment in str(info.value)


def test_status_terminality() -> None:
    assert {s for s in JobStatus if s.is_terminal()} == {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELED,
    }


def test_public_job_has_iso_times_and_its_url() -> None:
    record = JobRecord(
        id="abc",
        status=JobStatus.QUEUED,
        created_at=1_700_000_000.25,
        input=JobCreate(prompt="hi").to_input(),
    )
    public = JobPublic.from_record(record, "http://h/v1/jobs/abc").model_dump(mode="json")
    assert public["created_at"] == "2023-11-14T22:13:20.250000Z"
    assert public["started_at"] is None
    assert public["urls"] == {"get": "http://h/v1/jobs/abc"}


def test_a_prompt_is_a_chat_turn_unless_raw() -> None:
    assert JobCreate(prompt="hi").to_input().raw is False
    assert JobCreate(prompt="hi", raw=True).to_input().raw is True
    with pytest.raises(ValidationError, match="raw applies to 'prompt' only"):
        JobCreate(messages=[{"role": "user", "content": "hi"}], raw=True)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"json_schema": {"type": "object"}, "regex": "a+"}, "at most one of json_schema, regex"),
        ({"regex": "(unclosed"}, "the regex does not compile"),
        ({"choice": []}, "at least 1 item"),
        ({"choice": ["yes", ""]}, "each choice must have 1 to"),
        ({"json_schema": {"enum": ["x" * 70_000]}}, "larger than 65536 bytes"),
        ({"n": 0}, "greater than or equal to 1"),
        ({"n": 17}, "less than or equal to 16"),
        ({"logprobs": 21}, "less than or equal to 20"),
    ],
)
def test_structured_output_fields_are_checked(fields: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        JobCreate(prompt="x", **fields)


def test_the_output_carries_its_parsed_json_under_json() -> None:
    from genq.contract.schemas import JobOutput

    output = JobOutput.model_validate({"text": '{"a": 1}', "json": {"a": 1}})
    assert output.json_value == {"a": 1}
    assert output.model_dump()["json"] == {"a": 1}
    assert '"json":{"a":1}' in output.model_dump_json()
