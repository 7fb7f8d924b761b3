"""genq's GPU worker: a Celery process that consumes the queue (``celery_app``, ``pool``,
``consumer``, ``health``) and the engine host it starts, which runs the jobs on one warm vLLM
engine (``worker.host``); they talk through ``worker.protocol``. Needs a ``worker-*`` extra."""
