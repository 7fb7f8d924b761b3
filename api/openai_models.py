"""OpenAI's request and response shapes for ``/v1/chat/completions`` and ``/v1/completions``, and
their mapping onto genq's job input. Only what genq can honour is accepted: a field asking for
something it cannot do (tools, images, ``echo``, a streamed ``n`` > 1 or logprobs) is a 422
naming it; fields it has no use for (``user``, ``store``, ...) are ignored, as OpenAI-compatible
servers do.

Structured output comes as OpenAI's ``response_format`` (``json_schema`` with its ``schema``, or
``json_object``: any JSON object) or as vLLM's extra fields (``structured_outputs`` with
``json``/``regex``/``choice``, or the older ``guided_json``/``guided_regex``/``guided_choice``);
each becomes the job's ``json_schema``, ``regex`` or ``choice``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genq.contract.schemas import (
    MAX_MESSAGES,
    ChatMessage,
    JobInput,
    SamplingOptions,
    TokenLogprob,
    TopLogprob,
)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM's extra sampling fields, which its clients (vllm bench serve among them) send.
    top_k: int | None = None
    min_tokens: int | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None

    def _refuse(self) -> list[str]:
        problems = []
        if self.stream and self.n != 1:
            problems.append("n: a streamed request has 1 choice (use stream: false for more)")
        if self.stream and self.top_logprobs_asked() is not None:
            problems.append("logprobs are not streamed (use stream: false)")
        return problems

    def top_logprobs_asked(self) -> int | None:
        """The job's ``logprobs`` (top alternatives per token; None: no logprobs)."""
        raise NotImplementedError

    def _structure(self) -> dict[str, Any]:
        """The job's structured-output field, from vLLM's extra fields."""
        asked: dict[str, Any] = {}
        extra = self.structured_outputs or {}
        for name, value in (
            ("json_schema", extra.get("json", self.guided_json)),
            ("regex", extra.get("regex", self.guided_regex)),
            ("choice", extra.get("choice", self.guided_choice)),
        ):
            if value is None:
                continue
            if name == "json_schema" and isinstance(value, str):
                value = _schema_text(value)
            asked[name] = value
        return asked

    def sampling(self, max_tokens: int | None, structure: dict[str, Any]) -> SamplingOptions:
        """The request's sampling fields as genq's (defaults where it gives none; their bounds
        checked there, so an out-of-range value is a 422 naming it)."""
        fields: dict[str, Any] = {
            **structure,
            "n": self.n,
            "logprobs": self.top_logprobs_asked(),
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "top_k": self.top_k,
            "min_tokens": self.min_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        options = SamplingOptions.model_validate({k: v for k, v in fields.items() if v is not None})
        if self.ignore_eos:  # generate to max_tokens whatever the model says
            options = options.model_copy(update={"min_tokens": options.max_tokens})
        return options


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_ContentPart]

    def plain(self) -> ChatMessage:
        if isinstance(self.content, str):
            text = self.content
        else:
            if any(p.type != "text" or p.text is None for p in self.content):
                raise ValueError("only text content parts are supported")
            text = "".join(p.text or "" for p in self.content)
        # OpenAI's newer name for the system role.
        return ChatMessage(role="system" if self.role == "developer" else self.role, content=text)


def _schema_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"guided_json: not JSON: {exc}") from None


def _response_format(value: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's ``response_format`` as the job's structured-output field."""
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return {}
    if kind == "json_object":  # any JSON object, as OpenAI's JSON mode gives
        return {"json_schema": {"type": "object"}}
    if kind == "json_schema":
        spec = (value or {}).get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ValueError("response_format.json_schema.schema: a JSON Schema object is needed")
        return {"json_schema": spec["schema"]}
    raise ValueError(f"response_format.type {kind!r}: one of 'text', 'json_object', 'json_schema'")


class ChatCompletionRequest(_Common):
    messages: list[_Message] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        problems = self._refuse()
        if self.tools:
            problems.append("tools are not supported")
        if self.top_logprobs is not None and not self.logprobs:
            problems.append("top_logprobs needs logprobs: true")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def top_logprobs_asked(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def to_input(self) -> JobInput:
        structure = _response_format(self.response_format) | self._structure()
        return JobInput(
            messages=[m.plain() for m in self.messages],
            sampling=self.sampling(self.max_completion_tokens or self.max_tokens, structure),
        )


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    response_format: dict[str, Any] | None = None  # vLLM takes it here too
    logprobs: int | None = Field(None, ge=0)

    def top_logprobs_asked(self) -> int | None:
        return self.logprobs

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        problems = self._refuse()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            problems.append("prompt: one prompt per request (a list of exactly one)")
        if self.echo:
            problems.append("echo is not supported")
        if self.suffix is not None:
            problems.append("suffix is not supported")
        if self.best_of not in (None, 1):
            problems.append("best_of: only 1")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_input(self) -> JobInput:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        if not prompt:
            raise ValueError("prompt must not be empty")
        structure = _response_format(self.response_format) | self._structure()
        return JobInput(prompt=prompt, raw=True, sampling=self.sampling(self.max_tokens, structure))


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]

    @classmethod
    def of(cls, logprobs: list[TokenLogprob] | None) -> ChatLogprobs | None:
        if logprobs is None:
            return None

        def top(t: TopLogprob) -> ChatTopLogprob:
            return ChatTopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.token.encode()))

        return cls(
            content=[
                ChatTokenLogprob(
                    token=t.token,
                    logprob=t.logprob,
                    bytes=list(t.token.encode()),
                    top_logprobs=[top(a) for a in t.top_logprobs],
                )
                for t in logprobs
            ]
        )


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    """The legacy completions' logprobs: parallel lists, one place per output token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, logprobs: list[TokenLogprob] | None) -> CompletionLogprobs | None:
        if logprobs is None:
            return None
        offsets, at = [], 0
        for t in logprobs:
            offsets.append(at)
            at += len(t.token)
        return cls(
            tokens=[t.token for t in logprobs],
            token_logprobs=[t.logprob for t in logprobs],
            top_logprobs=[{a.token: a.logprob for a in t.top_logprobs} for t in logprobs],
            text_offset=offsets,
        )


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genq"
    # genq's own: how many warm workers serve it now, and how many of its jobs wait to start
    # (``created``: when the first of those workers became warm; 0 while none is).
    warm_workers: int
    queued: int = 0


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
