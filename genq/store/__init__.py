"""Everything that touches Redis: job and batch records and their Lua scripts (``lua/``), output
streams, the done channel, the Redis client and the embedded Redis, and Celery's configuration and
message format, which the API and the workers share.

Used by the API, the worker and the webhooks sender; never by the client.
"""
