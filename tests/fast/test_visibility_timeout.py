"""One rule for long jobs: Redis hands an unacknowledged message back only after the longest run
a job may have (GENQ_MAX_JOB_SECONDS) and a margin, in every role's Celery configuration, so that
raising the job limit can never make a job still running run twice."""

from __future__ import annotations

import pytest
from celery import Celery

from genq.contract.settings import (
    ApiSettings,
    CommonSettings,
    FlowerSettings,
    WebhookSettings,
    WorkerSettings,
)
from genq.store.queue import celery_config


@pytest.mark.parametrize("max_job_s", ["60", "3600", "86400"])
def test_every_role_hands_messages_back_only_after_the_longest_job(monkeypatch, max_job_s) -> None:
    monkeypatch.setenv("GENQ_MAX_JOB_SECONDS", max_job_s)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    timeouts = set()
    for role in (ApiSettings, WorkerSettings, WebhookSettings, FlowerSettings, CommonSettings):
        app = Celery("visibility")
        app.conf.update(celery_config(role()))
        timeouts.add(app.conf.broker_transport_options["visibility_timeout"])
    (timeout,) = timeouts  # the same in every role: any of them may hand a message back
    assert timeout > float(max_job_s)
