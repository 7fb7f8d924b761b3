"""The engine host: the worker's second process, which owns vLLM's engine and everything that runs
on its event loop (claims, result writes, output streams, cancels, the heartbeat, the janitor).

The Celery process talks to it through :mod:`worker.protocol` only; nothing here imports Celery.
"""
