"""genq: a queue-based LLM generation service (FastAPI front, Celery + vLLM workers, Redis).

This package is the small part that both deployables share: the job contract, settings, Redis key
and task names, the CLI. It must stay light: the API process imports it and never loads torch or vLLM.
"""

__version__ = "0.1.0"
