"""The contract every genq process and client shares: the job and batch shapes, settings, Redis key
and task names, webhook events and signing, where a webhook may point, API key files.

It imports pydantic (and pydantic-settings, for the settings) and nothing heavier: no Redis, no
Celery, no FastAPI, no torch or vLLM (import-linter checks it: ``make lint``).
"""
