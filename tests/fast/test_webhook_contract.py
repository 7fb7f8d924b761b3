"""Webhook pieces with no service: signing (checked by the Standard Webhooks reference package),
the secret, the retry schedule, Retry-After, the event filter."""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genq.contract.schemas import JobCreate
from genq.contract.settings import WebhookSettings
from genq.contract.webhooks import (
    load_or_create_secret,
    new_secret,
    next_delay,
    parse_retry_after,
    secret_key,
    signed_headers,
    webhook_id,
)

BODY = json.dumps({"id": "abc", "status": "succeeded", "output": {"text": "Ünïcode"}}).encode()


def test_signatures_verify_with_the_reference_library() -> None:
    secret = new_secret()
    headers = signed_headers([secret], "msg_abc_completed", BODY, now=datetime.now().timestamp())
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


def test_while_rotating_both_secrets_sign_and_either_verifies() -> None:
    current, previous = new_secret(), new_secret()
    headers = signed_headers([current, previous], "msg_x", BODY, now=datetime.now().timestamp())
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(current).verify(BODY, headers)
    assert Webhook(previous).verify(BODY, headers)


def test_an_old_timestamp_is_refused_by_receivers() -> None:
    secret = new_secret()
    headers = signed_headers([secret], "msg_x", BODY, now=datetime.now().timestamp() - 3600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize(
    "bad",
    ["plain", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_key(bad)
    with pytest.raises(ValueError):
        WebhookSettings(webhook_secret=bad).signing_secrets()


def test_an_empty_secret_is_unset() -> None:
    with pytest.raises(ValueError):
        secret_key("")
    assert WebhookSettings(webhook_secret="").webhook_secret is None


def test_the_dev_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    first, created = load_or_create_secret(tmp_path / "data")
    again, created_again = load_or_create_secret(tmp_path / "data")
    assert (created, created_again) == (True, False)
    assert first == again and len(secret_key(first)) == 32
    assert (tmp_path / "data" / "webhook_secret").stat().st_mode & 0o777 == 0o600


def test_webhook_ids_are_stable_per_event() -> None:
    assert webhook_id("j1", "completed") == webhook_id("j1", "completed") == "msg_j1_completed"
    assert webhook_id("j1", "output", 1) != webhook_id("j1", "output", 2)


def test_the_retry_schedule_backs_off_with_jitter_and_ends() -> None:
    schedule = [5.0, 300.0, 1800.0]
    rng = random.Random(7)
    delays = [next_delay(schedule, n, rng=rng) for n in range(3)]
    for delay, base in zip(delays, schedule):
        assert 0.9 * base <= delay <= 1.1 * base
    assert len({next_delay(schedule, 1, rng=rng) for _ in range(5)}) > 1  # jittered
    assert next_delay(schedule, 3) is None
    assert next_delay([], 0) is None
    # Retry-After is honoured when it asks for longer, never made shorter.
    assert next_delay(schedule, 0, retry_after=60) == 60
    assert 270 <= next_delay(schedule, 1, retry_after=1) <= 330


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after("99999999") == 24 * 3600
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 90
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0


def test_the_event_filter_is_validated_and_defaults_to_completed() -> None:
    body = JobCreate(prompt="hi", webhook="https://example.com/hook")
    assert body.webhook_spec().events == ["completed"]
    body = JobCreate(
        prompt="hi",
        webhook="https://example.com/hook",
        webhook_events_filter=["completed", "start", "start"],
    )
    assert body.webhook_spec().events == ["start", "completed"]
    assert JobCreate(prompt="hi").webhook_spec() is None
    for bad, fragment in [
        ({"webhook_events_filter": ["finished"]}, "webhook_events_filter"),
        ({"webhook_events_filter": []}, "webhook_events_filter"),
        ({"webhook": None, "webhook_events_filter": ["start"]}, "needs a webhook"),
        ({"webhook": "ftp://example.com/x"}, "scheme must be http or https"),
        ({"webhook": "file:///etc/passwd"}, "scheme must be http or https"),
        ({"webhook": "https://"}, "no host"),
        ({"webhook": "http://example.com:99999/"}, "valid URL"),
    ]:
        fields = {"webhook": "https://example.com/hook"} | bad
        with pytest.raises(ValidationError, match=fragment):
            JobCreate(prompt="hi", **fields)
