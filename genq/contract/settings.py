"""Settings, one class per process role, read from ``GENQ_*`` environment variables.

Nothing here connects to anything. Each role has a cached getter; tests clear it with
``<getter>.cache_clear()`` after changing the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    RedisDsn,
    SecretStr,
    field_validator,
)
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from genq.contract.batches import MAX_BATCH_ITEMS_LIMIT
from genq.contract.constants import DEFAULT_QUEUE, model_queue
from genq.contract.keys import KeysFile
from genq.contract.models import check_name, served_name
from genq.contract.schemas import MAX_LOGPROBS_LIMIT, MAX_N_LIMIT, SamplingOptions
from genq.contract.ssrf import AllowList
from genq.contract.webhooks import DEFAULT_RETRY_SCHEDULE_S, secret_key


def _none_if_empty(value: Any) -> Any:
    """An environment variable set to "" means unset (compose passes empty values on)."""
    return None if value == "" else value


def _default_if_empty(value: Any) -> Any:
    """An environment variable set to "" means unset: the field's default."""
    if value == "":
        raise PydanticUseDefault()
    return value


def _names(value: Any) -> Any:
    """A list of model names from "a,b" (or a JSON list); each checked."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return [check_name(v) for v in value] if isinstance(value, list) else value


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "genq"


Environment = Literal["dev", "prod"]


# Beyond GENQ_MAX_JOB_SECONDS: the result's write, with the Redis client's retries through a
# restart, and the acknowledgement after it.
VISIBILITY_MARGIN_S = 300


class CommonSettings(BaseSettings):
    # GENQ_WARMUP='{"batch": 8}' sets a nested model whole; GENQ_WARMUP__BATCH=8 sets one field.
    model_config = SettingsConfigDict(env_prefix="GENQ_", env_nested_delimiter="__", extra="ignore")

    # GENQ_ENV: "prod" unless said otherwise, so that a forgotten variable fails closed (Flower
    # refuses to start without a password); `genq up`, the dev stack, sets "dev" for its roles.
    env: Environment = "prod"

    _env_empty_is_unset = field_validator("env", mode="before")(_default_if_empty)

    # Unset means: `genq up` starts an embedded Redis; the other roles refuse to start.
    redis_url: RedisDsn | None = Field(
        None, validation_alias=AliasChoices("GENQ_REDIS_URL", "REDIS_URL")
    )
    # The queues' prefix: each model's jobs go to <queue>.<model name> (genq.contract.constants).
    queue: str = DEFAULT_QUEUE
    result_ttl_s: int = Field(24 * 3600, ge=1, description="how long job records are kept")
    # How long a finished job's output stream is kept (GET /v1/jobs/{id}/stream of a job that
    # ended longer ago answers with the finished job at once; the text is in the job's record).
    stream_keep_s: int = Field(60, ge=1)
    data_dir: Path = Field(default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share"))
    cache_dir: Path = Field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"))
    log_level: str = "INFO"
    # The hard limit on one job's run: past it the job is aborted (error type "deadline"). Every
    # role reads it: Redis hands a message back to the queue when it has been unacknowledged for
    # longer than the visibility timeout derived from it (visibility_timeout_s), and any Celery
    # process on the Redis does that hand-back, for every queue.
    max_job_seconds: float = Field(3600.0, gt=0)
    # Webhook hosts (names or CIDRs, comma separated) allowed although not public: the API checks
    # a webhook's URL at submit, the webhooks process again before each delivery.
    webhook_allow_hosts: str = ""

    # Models (genq.contract.models): the names the API accepts besides those workers registered
    # ("a,b"; jobs for them wait until their workers start; Flower lists their queues), the one a
    # job naming none gets (unset: the first of GENQ_MODELS, else the one registered), and how long
    # a registered name no worker has mentioned is still accepted.
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    default_model: str | None = None
    model_forget_s: float = Field(7 * 24 * 3600.0, gt=0)

    _model_names = field_validator("models", mode="before")(_names)
    _default_model_empty_is_unset = field_validator("default_model", mode="before")(_none_if_empty)

    @field_validator("default_model")
    @classmethod
    def _default_model_name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    def model_queues(self, registered: list[str] = ()) -> list[str]:
        """The queues of GENQ_MODELS and of ``registered`` models."""
        names = dict.fromkeys([*self.models, *registered])
        return [model_queue(self.queue, name) for name in names]

    def webhook_allow_list(self) -> AllowList:
        return AllowList.parse(self.webhook_allow_hosts)

    def visibility_timeout_s(self) -> int:
        """How long a message may stay unacknowledged before Redis hands it to another worker:
        past the longest run a job may have, so that no job still running is run twice. A worker
        acknowledges a job's message when the job ends, and the job's limit counts from the
        moment the worker took it."""
        return int(self.max_job_seconds) + VISIBILITY_MARGIN_S

    def broker_url(self) -> str:
        if self.redis_url is None:
            raise RuntimeError(
                "no Redis configured: set REDIS_URL (or GENQ_REDIS_URL), or run `genq up`, "
                "which starts an embedded one"
            )
        return str(self.redis_url)


class ApiSettings(CommonSettings):
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # uvicorn processes serving the API (each with its own Redis connections).
    api_workers: int = Field(1, ge=1, le=64)
    # How long the synchronous POST /generate waits for its job before answering 504.
    generate_timeout_s: float = Field(300.0, gt=0)
    # On SIGTERM or SIGINT: how long requests in flight may take to finish before the server
    # cuts them. A synchronous request still waiting for its job shortly before that is answered
    # 503 naming the job, which goes on (api.shutdown).
    api_shutdown_grace_s: int = Field(30, ge=1)
    # Jobs waiting to start above which POST /v1/jobs answers 429.
    max_queued: int = Field(10_000, ge=1)
    # The most completions (n) and top logprobs (logprobs) one job may ask for (more: 422).
    # The worker's engine takes at most 20 logprobs unless GENQ_ENGINE_ARGS raises max_logprobs.
    max_n: int = Field(8, ge=1, le=MAX_N_LIMIT)
    max_logprobs: int = Field(20, ge=0, le=MAX_LOGPROBS_LIMIT)
    # Request bodies larger than this are refused with 413.
    max_body_bytes: int = Field(1 << 20, ge=1024)
    # How long POST /v1/jobs/{id}/cancel waits for a running job to stop before answering 202.
    cancel_wait_s: float = Field(10.0, ge=0)
    # Output streams (GET /v1/jobs/{id}/stream, OpenAI stream: true) one API process serves at
    # once, each on a Redis connection of its own; past it, 503 with Retry-After.
    max_streams: int = Field(1000, ge=1, le=9000)
    # The most items one POST /v1/batches may have (more: 422).
    max_batch_items: int = Field(1000, ge=1, le=MAX_BATCH_ITEMS_LIMIT)
    # API keys (genq.contract.keys, api.auth): the hashed keys `genq keys create` writes; unset:
    # <data dir>/api_keys.json. That file existing, or GENQ_API_KEYS (the same JSON) being set,
    # turns authentication on; neither is dev mode, open to anyone.
    api_keys_file: Path | None = None
    api_keys: KeysFile | None = None
    # Per key, unless its entry says otherwise: requests per second (sustained) and at once...
    rate_limit_rps: float = Field(50.0, gt=0)
    rate_limit_burst: int = Field(100, ge=1)
    # ...and jobs queued or processing at once.
    max_active_jobs_per_key: int = Field(1000, ge=1)

    _keys_empty_is_unset = field_validator("api_keys_file", "api_keys", mode="before")(
        _none_if_empty
    )

    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api_keys.json"


def _default_warmup_sampling() -> list[SamplingOptions]:
    return [
        SamplingOptions(temperature=0.0),  # greedy: the all-argmax path
        SamplingOptions(temperature=0.8, top_p=0.95),
        SamplingOptions(temperature=0.7, top_k=40),
        SamplingOptions(
            temperature=1.0,
            top_p=0.9,
            top_k=50,
            seed=1,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            repetition_penalty=1.1,
        ),
        # Structured output: the grammar backend's first compile (its tables for the model's
        # vocabulary) happens here, not in a user's job.
        SamplingOptions(
            json_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
        ),
    ]


class WarmupPolicy(BaseModel):
    """What a worker runs on its engine before it takes its first job (worker/host/warmup.py), so
    that no first user pays for a path the engine builds lazily. Every request must succeed, or the
    worker does not start. Set as JSON in ``GENQ_WARMUP`` or a field at a time
    (``GENQ_WARMUP__PROMPT_TOKENS=[16,4096]``, ``GENQ_WARMUP__ENABLED=false``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # One request alone per prompt length (tokens, approximately): cover the longest prompt
    # users send. Each must fit the model's context with ``max_tokens``.
    prompt_tokens: list[int] = Field(default_factory=lambda: [16, 512, 2048], min_length=1)
    # Each sampling option users send, alone once; then the batch mixes them.
    sampling: list[SamplingOptions] = Field(default_factory=_default_warmup_sampling, min_length=1)
    # Requests at once in the last step: the batch width the worker will see. Unset: its
    # concurrency (GENQ_WORKER_CONCURRENCY).
    batch: int | None = Field(None, ge=1, le=4096)
    max_tokens: int = Field(16, ge=1, le=4096)

    @field_validator("prompt_tokens")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value):
            raise ValueError("prompt lengths must be at least 1 token")
        return value


class WorkerSettings(CommonSettings):
    # A local model directory; unset means the default SmolLM2-135M-Instruct, prepared on first use.
    model: str | None = None
    # The name jobs ask for it by (its queue is <GENQ_QUEUE>.<name>); unset: the directory's last
    # part (genq.contract.models.served_name).
    model_name: str | None = None
    # Jobs one worker runs at once, all batched by one engine. Keep it >= the engine's max_num_seqs.
    worker_concurrency: int = Field(64, ge=1, le=4096)
    worker_name: str | None = None
    # Any vLLM engine option, as JSON: GENQ_ENGINE_ARGS='{"max_model_len": 4096}'.
    engine_args: dict[str, Any] = Field(default_factory=dict)
    # With more jobs than the engine batches, a backlog waits inside the engine; refill its batch
    # in waves of this many slots, holding the backlog a few steps at most
    # (worker/host/scheduler.py). Unset: a quarter of max_num_seqs. 0: vLLM's own scheduler, which
    # admits each job at once.
    admission_wave: int | None = Field(None, ge=0)
    admission_hold_steps: int | None = Field(None, ge=0)  # at most; unset: 4
    # A burst into a batch refilling from (nearly) empty (fewer than a wave running) is gathered
    # while it arrives, for at most this long, and goes in with one prefill. Unset: 1000. 0: off.
    admission_gather_ms: int | None = Field(None, ge=0)
    warmup: WarmupPolicy = Field(default_factory=WarmupPolicy)
    # A port for the worker's own HTTP endpoint (/healthz, /readyz = warm and consuming, /metrics);
    # unset: none. Containers use 9100.
    worker_http_port: int | None = Field(None, ge=0, le=65535)
    worker_http_host: str = "0.0.0.0"  # noqa: S104 - set a port only where it should be reached
    # GPU ids ("0,1"): `genq worker` then supervises one worker per GPU group (genq/cli/gpus.py).
    worker_gpus: str | None = None

    _gpus_empty_is_unset = field_validator("worker_gpus", mode="before")(_none_if_empty)
    heartbeat_s: float = Field(5.0, gt=0)
    # SIGTERM: running jobs get this long to finish; the rest go back to the queue.
    shutdown_grace_s: float = Field(60.0, ge=0)
    # A job whose worker died this many times while running it is failed, not started again.
    max_attempts: int = Field(2, ge=1)
    # Running jobs' new text goes to their output streams (GET /v1/jobs/{id}/stream, the partial
    # output of GET /v1/jobs/{id}) this often, in one Redis round trip for all of them. 0: never
    # (streams then carry only start and end).
    stream_interval_s: float = Field(0.05, ge=0)
    # A job sent again after its worker died goes on from the output its stream kept (greedy
    # jobs end with the same text as an uninterrupted run); false: it starts over
    # (worker.host.runner).
    resume: bool = True

    _model_name_empty_is_unset = field_validator("model", "model_name", mode="before")(
        _none_if_empty
    )

    def served_model(self) -> str:
        return served_name(self.model, self.model_name)

    def model_queue(self) -> str:
        return model_queue(self.queue, self.served_model())

    @property
    def lease_s(self) -> float:
        """A running job's lease: three missed heartbeats and the job is another worker's."""
        return 3 * self.heartbeat_s


class WebhookSettings(CommonSettings):
    """The webhooks process (`genq webhooks`): signs and sends webhook deliveries, retries them."""

    # whsec_<base64>. Unset: `genq up` and `genq webhooks` make one under GENQ_DATA_DIR (dev).
    webhook_secret: SecretStr | None = None
    # The secret being rotated out: both sign every delivery until it is unset.
    webhook_secret_previous: SecretStr | None = None
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    # Seconds to wait before each retry of a ``completed`` delivery (JSON list); its length is
    # the number of retries. The first try is at once.
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE_S)
    )
    # How often due deliveries are moved from the schedule onto the webhooks queue.
    webhook_poll_s: float = Field(0.5, gt=0, le=60)
    # Deliveries in flight at once (threads).
    webhook_concurrency: int = Field(16, ge=1, le=1024)
    # At most this much of a receiver's answer is read.
    webhook_max_response_bytes: int = Field(4096, ge=0)

    _empty_is_unset = field_validator("webhook_secret", "webhook_secret_previous", mode="before")(
        _none_if_empty
    )

    def signing_secrets(self) -> list[str]:
        """The secrets to sign with, current first; each is checked."""
        out = [
            s.get_secret_value()
            for s in (self.webhook_secret, self.webhook_secret_previous)
            if s is not None
        ]
        for secret in out:
            secret_key(secret)
        return out


class FlowerSettings(CommonSettings):
    """`genq flower`. Flower's own ``FLOWER_<option>`` variables still reach Flower, except the
    options set here, which `genq flower` passes as flags."""

    flower_host: str = "127.0.0.1"
    flower_port: int = 5555
    # "user:password[,user2:password2]". Required unless GENQ_ENV=dev.
    flower_basic_auth: SecretStr | None = None
    # Flower's task history, kept across restarts. Flower's own FLOWER_PERSISTENT and FLOWER_DB
    # are read too (compose and ops/k8s set those), so the flags and they cannot disagree.
    flower_persistent: bool = Field(
        True, validation_alias=AliasChoices("GENQ_FLOWER_PERSISTENT", "FLOWER_PERSISTENT")
    )
    flower_db: Path | None = Field(
        None, validation_alias=AliasChoices("GENQ_FLOWER_DB", "FLOWER_DB")
    )

    _empty_is_unset = field_validator("flower_basic_auth", "flower_db", mode="before")(
        _none_if_empty
    )

    def flower_db_path(self) -> Path:
        """Unset: ``<GENQ_DATA_DIR>/flower/flower.db``."""
        return self.flower_db or self.data_dir / "flower" / "flower.db"

    def check_flower_auth(self) -> None:
        """Flower shows every task and can stop workers: outside dev it needs a password."""
        if self.flower_basic_auth is None and self.env != "dev":
            raise RuntimeError(
                "Flower needs a password outside dev: set GENQ_FLOWER_BASIC_AUTH=user:password "
                "(or GENQ_ENV=dev on a machine of your own; `genq up` does)"
            )


class UpSettings(ApiSettings, FlowerSettings):
    """`genq up` starts every role, so it reads every role's ports. It is the dev stack: its
    roles run with GENQ_ENV=dev unless GENQ_ENV says otherwise."""

    env: Environment = "dev"
    # The embedded Redis's memory (redis-server's maxmemory: "1gb", "512mb"); full, it refuses
    # writes rather than evict a job: the API answers 503 until results expire.
    redis_maxmemory: str = Field("1gb", pattern=r"^[0-9]+(b|kb|mb|gb)?$")


@lru_cache
def api_settings() -> ApiSettings:
    return ApiSettings()


@lru_cache
def worker_settings() -> WorkerSettings:
    return WorkerSettings()


@lru_cache
def webhook_settings() -> WebhookSettings:
    return WebhookSettings()
