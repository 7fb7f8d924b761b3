"""The webhooks sender, ``genq webhooks``: a Celery worker of its own that delivers each scheduled
webhook (signed as :mod:`genq.contract.webhooks` says) and retries on its schedule."""
