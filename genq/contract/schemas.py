"""The job contract: one shape per role.

- ``JobCreate``   what a client POSTs to ``/v1/jobs`` (validated at the edge, unknown fields
refused).
- ``JobInput``    that request with every sampling field resolved to its default; stored and echoed.
- ``JobPayload``  what travels on the queue to a worker (JSON only).
- ``JobRecord``   what is stored in Redis for a job (see genq.store.jobs for the hash layout).
- ``JobPublic``   what ``GET /v1/jobs/{id}`` returns.

Sampling fields use OpenAI/vLLM names; their conversion to vLLM's ``SamplingParams`` happens in one
place, ``worker.host.engine``. Nothing here imports vLLM or torch.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genq.contract import ssrf
from genq.contract.webhooks import DEFAULT_EVENTS, EVENTS, WebhookEvent

# Bounds that keep obviously broken requests out of the queue. The model's own context length is
# checked by the engine (a job over it fails with a readable error).
MAX_TOKENS_LIMIT = 32_768
MAX_STOP_SEQUENCES = 16
MAX_MESSAGES = 256
MAX_DEADLINE_S = 7 * 24 * 3600
MAX_MODEL_NAME_CHARS = 128
# Structured output and per-token detail: the most any job may ask for, whatever the settings
# (GENQ_MAX_N and GENQ_MAX_LOGPROBS set the limits the API enforces, within these).
MAX_SCHEMA_BYTES = 64 * 1024  # a JSON Schema, serialized
MAX_REGEX_CHARS = 4096
MAX_CHOICES = 256
MAX_CHOICE_CHARS = 1024
MAX_N_LIMIT = 16
MAX_LOGPROBS_LIMIT = 20  # vLLM's own default limit (max_logprobs)
STRUCTURED_FIELDS = ("json_schema", "regex", "choice")
# What a worker's engine can do beyond plain generation (WorkerInfo.features).
STRUCTURED_OUTPUT = "structured_output"


def check_webhook_syntax(value: str | None) -> str | None:
    """A webhook field's validator: an http(s) URL genq may send to, as far as its syntax tells
    (where it resolves is checked by the API). UnsafeUrl is a ValueError: a 422 with its reason."""
    if value is not None:
        ssrf.parse(value)
    return value


class JobStatus(str, Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class SamplingOptions(BaseModel):
    """Sampling fields, OpenAI/vLLM names. The default is greedy decoding (temperature 0): the
    same job gives the same text, which suits a queue that may run a job again after a crash
    (a resumed greedy job ends as an uninterrupted run would), and the default 135M model answers
    "What is the capital of France?" right only about half the time at temperature 0.7 (7 of 12
    tries). ``max_tokens`` defaults to 512, the original brief's example."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(512, ge=1, le=MAX_TOKENS_LIMIT)
    min_tokens: int = Field(0, ge=0, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 considers every token")
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    # Structured output, at most one: the text follows this JSON Schema (the result then also
    # carries it parsed, output.json), matches this regular expression, or is one of these
    # choices. The API checks the schema against JSON Schema's metaschema before queueing it.
    json_schema: dict[str, Any] | None = None
    regex: str | None = Field(None, min_length=1, max_length=MAX_REGEX_CHARS)
    choice: list[str] | None = Field(None, min_length=1, max_length=MAX_CHOICES)
    # The log-probability of each output token and of this many most likely alternatives
    # (0: the chosen token's only); unset: none.
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS_LIMIT)
    # Completions of the one prompt (output.choices); the stream carries the first one's text.
    n: int = Field(1, ge=1, le=MAX_N_LIMIT)

    @field_validator("json_schema")
    @classmethod
    def _schema_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_SCHEMA_BYTES:
            raise ValueError(f"the JSON Schema is larger than {MAX_SCHEMA_BYTES} bytes")
        return value

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        # Python's syntax, close to what the grammar backends take; one they refuse anyway
        # fails the job with invalid_input and the backend's reason.
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"the regex does not compile: {exc}") from None
        return value

    @field_validator("choice")
    @classmethod
    def _choices_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not c or len(c) > MAX_CHOICE_CHARS for c in value):
            raise ValueError(f"each choice must have 1 to {MAX_CHOICE_CHARS} characters")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @model_validator(mode="after")
    def _one_structure(self) -> SamplingOptions:
        given = self.structure()
        if len(given) > 1:
            raise ValueError(f"give at most one of json_schema, regex, choice (got {given})")
        return self

    def structure(self) -> list[str]:
        """The structured-output fields set (at most one in a valid request)."""
        return [name for name in STRUCTURED_FIELDS if getattr(self, name) is not None]

    @model_validator(mode="after")
    def _min_le_max(self) -> SamplingOptions:
        if self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})"
            )
        return self

    def sampling(self) -> SamplingOptions:
        """Only the sampling fields, as their own model (for subclasses that add inputs)."""
        return SamplingOptions.model_validate(
            self.model_dump(include=set(SamplingOptions.model_fields))
        )


class JobCreate(SamplingOptions):
    """``POST /v1/jobs``: exactly one of ``prompt`` or ``messages``, plus sampling fields and
    free ``metadata`` echoed back. The worker applies the model's chat template to ``messages``,
    and to ``prompt`` as one user turn (as ``POST /generate`` does) unless ``raw`` is set: then
    the prompt is plain text to continue. A model without a chat template takes it raw."""

    prompt: str | None = Field(None, min_length=1)
    raw: bool = False
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    # A model served here (GET /v1/models); unset: the default model (genq.contract.models).
    model: str | None = Field(None, min_length=1, max_length=MAX_MODEL_NAME_CHARS)
    metadata: dict[str, Any] | None = None
    # Seconds from acceptance: not started by then -> canceled unrun; running then -> aborted.
    # The Cancel-After header says the same.
    deadline_s: float | None = Field(None, gt=0, le=MAX_DEADLINE_S)
    # An http(s) URL to POST the job to on the events of webhook_events_filter (default
    # ["completed"]). Where it points is checked by the API (genq.contract.ssrf).
    webhook: str | None = Field(None, min_length=1, max_length=ssrf.MAX_URL_CHARS)
    webhook_events_filter: list[WebhookEvent] | None = Field(
        None, min_length=1, max_length=len(EVENTS)
    )

    _webhook_syntax = field_validator("webhook")(check_webhook_syntax)

    @field_validator("webhook_events_filter")
    @classmethod
    def _unique_events(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [e for e in EVENTS if e in value]

    @model_validator(mode="after")
    def _one_input(self) -> JobCreate:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.webhook_events_filter is not None and self.webhook is None:
            raise ValueError("webhook_events_filter needs a webhook")
        if self.raw and self.prompt is None:
            raise ValueError("raw applies to 'prompt' only")
        return self

    def webhook_spec(self) -> WebhookSpec | None:
        return WebhookSpec.of(self.webhook, self.webhook_events_filter)

    def to_input(self) -> JobInput:
        return JobInput(
            prompt=self.prompt,
            raw=self.raw,
            messages=self.messages,
            sampling=self.sampling(),
            metadata=self.metadata,
            deadline_s=self.deadline_s,
        )


class GenerateRequest(SamplingOptions):
    """The synchronous ``POST /generate`` body: ``{"prompt": "..."}``. The prompt is asked
    as one user turn of a chat (the default model is an instruct model), then waited for."""

    prompt: str = Field(..., min_length=1)
    model: str | None = Field(None, min_length=1, max_length=MAX_MODEL_NAME_CHARS)

    def to_input(self) -> JobInput:
        return JobInput(
            messages=[ChatMessage(role="user", content=self.prompt)], sampling=self.sampling()
        )


class GenerateResponse(BaseModel):
    generated_text: str
    latency_ms: float
    id: str


class JobInput(BaseModel):
    """The request as stored and echoed: input, resolved sampling, metadata."""

    prompt: str | None = None
    raw: bool = False  # the prompt is sent as it is, not as a chat turn
    messages: list[ChatMessage] | None = None
    sampling: SamplingOptions
    metadata: dict[str, Any] | None = None
    deadline_s: float | None = None


class WebhookSpec(BaseModel):
    """Where a job's webhook goes, and for which events."""

    url: str
    events: list[WebhookEvent]

    @classmethod
    def of(cls, url: str | None, events: list[str] | None) -> WebhookSpec | None:
        """None without a URL; the default events when none are named."""
        return None if url is None else cls(url=url, events=events or list(DEFAULT_EVENTS))


class JobPayload(BaseModel):
    """The Celery message body for ``genq.generate`` (JSON)."""

    id: str
    input: JobInput
    created_at: float  # unix seconds, set by the API when it accepted the job
    webhook: WebhookSpec | None = None
    model: str | None = None  # the model's name; its queue is the model's (genq.contract.models)
    # Sent again by a janitor (its worker died): the worker claims it before the engine sees it.
    resent: bool = False

    def wants(self, event: str) -> bool:
        return self.webhook is not None and event in self.webhook.events


class WebhookAttempt(BaseModel):
    """One try at delivering one webhook event: an answer's status, or why there was none."""

    event: WebhookEvent
    webhook_id: str
    attempt: int  # 1 for the first try of this webhook_id
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: float


class TopLogprob(BaseModel):
    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """One output token: its log-probability and the most likely alternatives at its place
    (the job's ``logprobs`` of them, most likely first)."""

    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class Completion(BaseModel):
    """One of a job's completions (``n`` > 1)."""

    index: int
    text: str
    finish_reason: str | None = None
    json_value: Any = Field(None, alias="json")
    logprobs: list[TokenLogprob] | None = None

    # "json" on the wire; json_value in Python, where BaseModel.json is a method.
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


class JobOutput(BaseModel):
    """A job's result (so far, while it runs). ``text``, ``finish_reason``, ``json`` and
    ``logprobs`` are the first completion's; ``choices`` lists every completion of an ``n`` > 1
    job."""

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    text: str
    finish_reason: str | None = None
    # A json_schema job's text, parsed (None when the text is cut short: finish_reason length).
    json_value: Any = Field(None, alias="json")
    logprobs: list[TokenLogprob] | None = None
    choices: list[Completion] | None = None
    # How the prompt was put to the model: "chat" (its chat template) or "raw" (as it is).
    prompt_format: Literal["chat", "raw"] | None = None


class JobError(BaseModel):
    type: str
    message: str


class JobMetrics(BaseModel):
    queue_ms: float | None = None  # accepted by the API -> picked up by a worker
    ttft_ms: float | None = None  # handed to the engine -> first output token
    generation_ms: float | None = None  # handed to the engine -> last output token
    total_ms: float | None = None  # accepted by the API -> result stored
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    tokens_per_s: float | None = None  # output_tokens / generation time
    # Started before its worker had finished any job: it shared the engine's first batch.
    first_batch: bool | None = None


class JobRecord(BaseModel):
    """A job as kept in Redis. Timestamps are unix seconds."""

    id: str
    status: JobStatus
    model: str | None = (
        None  # the model's name (genq.contract.models); None: a job older than models
    )
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    input: JobInput
    output: JobOutput | None = None
    error: JobError | None = None
    worker: str | None = None
    attempts: int = 0  # times a worker started it (more than 1: a worker died running it)
    # Its worker died after this many output tokens, and the next one went on from there
    # (genq.worker.host.runner); None: it ran in one go, or started over.
    resumed_at_token: int | None = None
    metrics: JobMetrics = Field(default_factory=JobMetrics)
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    # The job's URL as the API that accepted it answered (for webhook payloads).
    url: str | None = None
    batch_id: str | None = None  # the batch it was submitted in (genq.contract.batches), if any
    # The name of the API key that created it (api.auth); None in dev mode (no keys).
    owner: str | None = None
    # Not a hash field: the job's deliveries list (genq.store.jobs).
    webhook_deliveries: list[WebhookAttempt] = Field(default_factory=list)

    def webhook_spec(self) -> WebhookSpec | None:
        return WebhookSpec.of(self.webhook, self.webhook_events_filter)


class JobUrls(BaseModel):
    get: str


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


class JobPublic(BaseModel):
    """The job object every endpoint returns."""

    id: str
    status: JobStatus
    model: str | None = None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    input: JobInput
    output: JobOutput | None
    error: JobError | None
    worker: str | None
    attempts: int
    resumed_at_token: int | None = None
    metrics: JobMetrics
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    webhook_deliveries: list[WebhookAttempt] = Field(default_factory=list)
    batch_id: str | None = None
    urls: JobUrls

    @classmethod
    def from_record(cls, record: JobRecord, get_url: str) -> JobPublic:
        return cls(
            id=record.id,
            status=record.status,
            model=record.model,
            created_at=_utc(record.created_at),
            started_at=_utc(record.started_at),
            completed_at=_utc(record.completed_at),
            input=record.input,
            output=record.output,
            error=record.error,
            worker=record.worker,
            attempts=record.attempts,
            resumed_at_token=record.resumed_at_token,
            metrics=record.metrics,
            webhook=record.webhook,
            webhook_events_filter=record.webhook_events_filter,
            webhook_deliveries=record.webhook_deliveries,
            batch_id=record.batch_id,
            urls=JobUrls(get=get_url),
        )


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """The one error body every non-2xx answer carries."""

    error: ErrorDetail


class WarmupStepInfo(BaseModel):
    """One step of a worker's warm-up (worker.host.warmup)."""

    name: str  # prompt_<tokens>, sampling_<i>, batch_<width>
    requests: int
    seconds: float
    prompt_tokens: int  # the step's longest prompt, as the engine counted it
    output_tokens: int  # summed over its requests


class WorkerInfo(BaseModel):
    """What a warm worker publishes about itself (refreshed by its heartbeat)."""

    name: str
    model: str  # the name it serves (genq.contract.models)
    model_path: str = ""  # the directory (or hub id) its engine loaded
    queue: str = ""  # the Celery queue it consumes: its model's
    devices: str | None = None  # CUDA_VISIBLE_DEVICES, where set (genq worker --gpus)
    concurrency: int
    ready_at: float  # unix seconds: warm, about to consume
    # phase -> seconds: process (interpreter + imports before genq's start-up), model (find or
    # prepare it), imports (vLLM), engine (construction), within it what vLLM logs (vllm_weights,
    # vllm_model_load, vllm_profile_run, vllm_compile, vllm_cuda_graphs, vllm_init_engine: the
    # ones this vLLM build logs), warmup, total (process start -> ready)
    startup_s: dict[str, float]
    warmup_steps: list[WarmupStepInfo] = []
    # What its engine can do beyond plain generation: "structured_output" (STRUCTURED_OUTPUT).
    features: list[str] = Field(default_factory=list)
    first_job_at: float | None = None  # unix seconds: the first job this worker started
    heartbeat_at: float
    jobs_running: int = 0  # genq jobs this worker runs now
    engine_requests: int = 0  # requests inside the engine now (running or waiting)
    jobs_per_s: float = 0.0  # jobs finished per second over the last minute
    tokens_per_s: float = 0.0  # output tokens of those jobs per second, same window


class QueueRate(BaseModel):
    """Jobs waiting, and how fast the warm workers take them: all of them, or one model's."""

    depth: int  # jobs accepted and not started yet (GENQ_MAX_QUEUED bounds each model's)
    running: int  # jobs the warm workers run now
    warm_workers: int
    jobs_per_s: float  # the warm workers' finished jobs per second over the last minute
    tokens_per_s: float  # their output tokens per second over the last minute
    # depth / jobs_per_s: how long a job submitted now may wait to start; None while no worker
    # has finished a job in the last minute (no rate to go by).
    estimated_wait_s: float | None


class QueueStatus(QueueRate):
    """``GET /v1/queue``: how many jobs wait, how fast the warm workers take them, in all and
    per model."""

    models: dict[str, QueueRate] = Field(default_factory=dict)
