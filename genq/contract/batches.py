"""The batch contract: many jobs submitted, followed and canceled as one.

- ``BatchCreate``  what a client POSTs to ``/v1/batches``: items, each a ``JobCreate`` (prompt or
  messages, its own sampling fields, metadata, even a webhook of its own), and the sampling fields
  and ``deadline_s`` shared by every item that does not set its own.
- ``BatchRecord``  what is stored in Redis for a batch (see genq.store.batches for the hash).
- ``BatchPublic``  what ``GET /v1/batches/{id}`` returns, and what the batch's webhook carries.

A batch is a list of ordinary jobs (each with its own record, ``batch_id`` naming the batch);
the batch itself only counts them down (genq.store.jobs) and reports on them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from genq.contract import ssrf
from genq.contract.schemas import (
    MAX_DEADLINE_S,
    MAX_MODEL_NAME_CHARS,
    JobCreate,
    JobStatus,
    JobUrls,
    SamplingOptions,
    WebhookAttempt,
    check_webhook_syntax,
)

# The most items any batch may have, whatever GENQ_MAX_BATCH_ITEMS says (its upper bound).
MAX_BATCH_ITEMS_LIMIT = 10_000
# What an item inherits from the batch when it does not set it itself.
SHARED_FIELDS = (*SamplingOptions.model_fields, "deadline_s", "model")


class BatchStatus(str, Enum):
    PROCESSING = "processing"  # some job is not terminal yet
    COMPLETED = "completed"  # every job is succeeded, failed or canceled


class BatchCreate(SamplingOptions):
    """``POST /v1/batches``. The sampling fields and ``deadline_s`` here are every item's
    defaults; an item that sets one keeps its own. Each item is checked with what it inherits, so
    an error names the item (``items.3.max_tokens``). ``metadata`` and ``webhook`` are the
    batch's; the webhook gets one ``completed`` event, the batch object, when its last job ends."""

    model_config = ConfigDict(extra="forbid")

    deadline_s: float | None = Field(None, gt=0, le=MAX_DEADLINE_S)
    # The items' model unless an item names its own (unset: the default model).
    model: str | None = Field(None, min_length=1, max_length=MAX_MODEL_NAME_CHARS)
    metadata: dict[str, Any] | None = None
    webhook: str | None = Field(None, min_length=1, max_length=ssrf.MAX_URL_CHARS)
    # Last: its validator reads the shared fields above, already validated.
    items: list[JobCreate] = Field(..., min_length=1, max_length=MAX_BATCH_ITEMS_LIMIT)

    _webhook_syntax = field_validator("webhook")(check_webhook_syntax)

    @model_validator(mode="after")
    def _min_le_max(self) -> BatchCreate:
        # Replaces SamplingOptions' check: the batch's fields are only defaults, and each item is
        # checked with them as it will run (min_tokens 600 here, max_tokens 1000 in each item).
        return self

    @field_validator("items", mode="before")
    @classmethod
    def _inherit_shared(cls, items: Any, info: ValidationInfo) -> Any:
        # Fill in what each item leaves out *before* it is validated, so that an item is checked
        # as it will run (min_tokens against the batch's max_tokens, say) and its errors carry
        # its index. A shared field that was itself invalid is not in info.data: its own error
        # is reported, and the items are checked without it.
        if not isinstance(items, list):
            return items
        shared = {k: info.data[k] for k in SHARED_FIELDS if info.data.get(k) is not None}
        return [shared | item if isinstance(item, dict) else item for item in items]


class BatchCounts(BaseModel):
    """The batch's jobs by status (a job whose record expired is in none)."""

    queued: int = 0
    processing: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0


class BatchJob(BaseModel):
    id: str
    status: JobStatus | None  # None: its record has expired (after GENQ_RESULT_TTL_S)
    url: str


class BatchRecord(BaseModel):
    """A batch as kept in Redis. Timestamps are unix seconds."""

    id: str
    created_at: float
    completed_at: float | None = None  # set, once, in the step that ends its last job
    total: int
    jobs: list[str]  # job ids, in item order
    metadata: dict[str, Any] | None = None
    webhook: str | None = None
    url: str  # the batch's URL as the API that accepted it answered (for webhook payloads)
    job_url: str  # its jobs' URL, ``{id}`` to fill in (same)
    owner: str | None = None  # the API key that created it (api.auth), as its jobs' owner
    # Not a hash field: the batch's webhook attempts (genq.store.batches).
    webhook_deliveries: list[WebhookAttempt] = Field(default_factory=list)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


class BatchPublic(BaseModel):
    """The batch object. ``object`` tells it from a job object (webhook receivers get both)."""

    object: Literal["batch"] = "batch"
    id: str
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    total: int
    counts: BatchCounts
    jobs: list[BatchJob]
    metadata: dict[str, Any] | None
    webhook: str | None
    webhook_deliveries: list[WebhookAttempt] = Field(default_factory=list)
    urls: JobUrls

    @classmethod
    def from_record(
        cls,
        record: BatchRecord,
        statuses: list[JobStatus | None],
        get_url: str,
        job_url: str,
    ) -> BatchPublic:
        """``statuses``: each job's, in order; ``job_url``: a job's URL with ``{id}``."""
        counts: dict[str, int] = {}
        for status in statuses:
            if status is not None:
                counts[status.value] = counts.get(status.value, 0) + 1
        return cls(
            id=record.id,
            status=BatchStatus.PROCESSING if record.completed_at is None else BatchStatus.COMPLETED,
            created_at=_utc(record.created_at),
            completed_at=_utc(record.completed_at),
            total=record.total,
            counts=BatchCounts(**counts),
            jobs=[
                BatchJob(id=job_id, status=status, url=job_url.format(id=job_id))
                for job_id, status in zip(record.jobs, statuses)
            ],
            metadata=record.metadata,
            webhook=record.webhook,
            webhook_deliveries=record.webhook_deliveries,
            urls=JobUrls(get=get_url),
        )
