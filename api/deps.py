"""Shared dependencies as ``Annotated`` aliases; the clients live on ``app.state`` (lifespan)."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from redis.asyncio import Redis

from api.waiter import JobWaiter
from genq.settings import ApiSettings
from genq.store import JobStore


def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def _redis(request: Request) -> Redis:
    return request.app.state.redis


def _store(request: Request) -> JobStore:
    return request.app.state.store


def _celery(request: Request) -> Celery:
    return request.app.state.celery


def _waiter(request: Request) -> JobWaiter:
    return request.app.state.waiter


SettingsDep = Annotated[ApiSettings, Depends(_settings)]
RedisDep = Annotated[Redis, Depends(_redis)]
StoreDep = Annotated[JobStore, Depends(_store)]
CeleryDep = Annotated[Celery, Depends(_celery)]
WaiterDep = Annotated[JobWaiter, Depends(_waiter)]
