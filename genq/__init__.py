"""genq: a queue-based LLM generation service (FastAPI front, Redis queue, Celery + vLLM workers).

The layers, each a package (docs/architecture.md has the whole picture):

- :mod:`genq.contract`  the shapes, settings and names every part shares (pydantic only);
- :mod:`genq.client`    the Python client (httpx + the contract): ``pip install genq`` is this;
- :mod:`genq.store`     everything that touches Redis, Celery's message format included;
- :mod:`genq.webhooks`  the webhooks sender;
- :mod:`genq.cli`       the ``genq`` command and the one supervisor;
- ``api``, ``worker``   the HTTP front and the GPU worker, packages of their own.
"""

__version__ = "0.1.0"
