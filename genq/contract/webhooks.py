"""Webhooks, the parts every role shares: event names, Standard Webhooks signing, the secret, what a
scheduled delivery looks like, and the retry schedule. Pure functions; no I/O but the secret file.

Signing follows https://www.standardwebhooks.com exactly: the secret is ``whsec_`` + base64 of
the key; each request carries ``webhook-id`` (the same on every retry of one event: the
receiver's dedup key), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, one per secret, space separated
(two while a secret is being rotated).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.utils
import hashlib
import hmac
import json
import random
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from genq.contract.kept import load_or_create

WebhookEvent = Literal["start", "output", "completed"]
EVENTS: tuple[str, ...] = ("start", "output", "completed")
DEFAULT_EVENTS: list[str] = ["completed"]
# ``output`` events of one job are at most this often.
OUTPUT_EVENT_INTERVAL_S = 0.5

SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook_secret"


# -- the secret and signatures ---------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret. Raises ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"a webhook secret is {SECRET_PREFIX!r} + base64: {exc}") from None
    if len(key) < 16:
        raise ValueError("a webhook secret's key must be at least 16 bytes")
    return key


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def load_or_create_secret(data_dir: Path) -> tuple[str, bool]:
    """The dev secret kept under ``data_dir`` (made on first use, mode 0600). Returns it and
    whether it was just made."""
    return load_or_create(data_dir / SECRET_FILE, new_secret)


def sign(secrets_: list[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<sig>`` per secret, space separated."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets_
    )


def signed_headers(secrets_: list[str], webhook_id: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets_, webhook_id, timestamp, body),
    }


# -- deliveries ------------------------------------------------------------------------------


def webhook_id(job_id: str, event: str, seq: int = 0) -> str:
    """Stable per (job, event): ``completed`` keeps its id across retries and redeliveries;
    each ``output`` event has its own."""
    return f"msg_{job_id}_{event}" if event != "output" else f"msg_{job_id}_output_{seq}"


@dataclass(frozen=True)
class Delivery:
    """One scheduled send of one event: the member of the schedule (genq.contract.constants), and
    the argument of the delivery task. ``n`` counts the tries of this chain (it picks the next
    delay); ``nonce`` keeps a redelivery distinct from the chain it repeats. ``object`` is what
    is sent: a job, or a batch (``job_id`` is then the batch's id)."""

    job_id: str
    event: str
    webhook_id: str
    n: int = 0
    nonce: str = ""
    object: str = "job"

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, data: str | dict) -> Delivery:
        return cls(**(json.loads(data) if isinstance(data, str) else data))

    def next_try(self) -> Delivery:
        return dataclasses.replace(self, n=self.n + 1)


def completed_delivery(job_id: str) -> Delivery:
    return Delivery(job_id, "completed", webhook_id(job_id, "completed"))


def batch_completed_delivery(batch_id: str) -> Delivery:
    """A batch's one event: its last job ended. Its own ``webhook-id``, never a job's."""
    return Delivery(batch_id, "completed", f"msg_{batch_id}_batch_completed", object="batch")


# -- retries ---------------------------------------------------------------------------------

# The waits before each retry of a ``completed`` delivery that got no answer, a 429 or a 5xx:
# Standard Webhooks' suggestion (the first try at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h
# after each failed one; 7 tries over ~17.5 h, then give up).
DEFAULT_RETRY_SCHEDULE_S = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]
JITTER = 0.1  # each delay is drawn from +-10 % of the schedule's
RETRY_AFTER_MAX_S = 24 * 3600.0


def is_retryable(status_code: int | None) -> bool:
    """No answer (``None``: connection error, timeout), 429 or 5xx. Any other 4xx is final."""
    return status_code is None or status_code == 429 or status_code >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or
    unreadable; capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


def next_delay(
    schedule: list[float],
    retries_done: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next retry when ``retries_done`` retries already failed; None
    when the schedule is spent. The schedule's delay with jitter, but never sooner than
    ``Retry-After`` asks."""
    if retries_done >= len(schedule):
        return None
    base = schedule[retries_done]
    jitter = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    delay = base * jitter
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
