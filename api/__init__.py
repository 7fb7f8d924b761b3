"""genq's HTTP front: accepts jobs, enqueues them by task name, serves their records.

Never imports torch, vLLM or the worker package (a test checks it)."""
