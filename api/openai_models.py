"""OpenAI's request and response shapes for ``/v1/chat/completions`` and ``/v1/completions``, and
their mapping onto genq's job input. Only what genq can honour is accepted: a field asking for
something it cannot do (``n`` > 1, logprobs, tools, images, ``echo``) is a 422 naming it; fields
it has no use for (``user``, ``store``, ...) are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genq.contract.schemas import MAX_MESSAGES, ChatMessage, JobInput, SamplingOptions


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
    logprobs: Any = None
    # vLLM's extra sampling fields, which its clients (vllm bench serve among them) send.
    top_k: int | None = None
    min_tokens: int | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False

    def _refuse(self) -> list[str]:
        problems = []
        if self.n != 1:
            problems.append("n: only 1 choice per request (submit several requests)")
        if self.logprobs not in (None, False):
            problems.append("logprobs are not supported")
        return problems

    def sampling(self, max_tokens: int | None) -> SamplingOptions:
        """The request's sampling fields as genq's (defaults where it gives none; their bounds
        checked there, so an out-of-range value is a 422 naming it)."""
        fields: dict[str, Any] = {
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


class ChatCompletionRequest(_Common):
    messages: list[_Message] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        problems = self._refuse()
        if self.tools:
            problems.append("tools are not supported")
        if self.response_format not in (None, {"type": "text"}):
            problems.append("response_format: only {'type': 'text'}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_input(self) -> JobInput:
        return JobInput(
            messages=[m.plain() for m in self.messages],
            sampling=self.sampling(self.max_completion_tokens or self.max_tokens),
        )


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

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
        return JobInput(prompt=prompt, sampling=self.sampling(self.max_tokens))


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


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
