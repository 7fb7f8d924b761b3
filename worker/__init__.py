"""genq's GPU worker: Celery + one warm vLLM engine per process. Needs the ``worker`` extra."""
