"""What a job asks of its output beyond text, checked before it is queued: a JSON Schema that is
valid JSON Schema, and ``n`` and ``logprobs`` within this API's limits (GENQ_MAX_N,
GENQ_MAX_LOGPROBS). The field bounds themselves are genq.contract.schemas'; a regex is compiled
there. Each problem is a 422 naming the field (``items.3.json_schema`` in a batch)."""

from __future__ import annotations

from typing import Any

from jsonschema import SchemaError, validators

from api.deps import Services
from api.errors import ApiError
from genq.contract.schemas import STRUCTURED_OUTPUT, SamplingOptions
from genq.contract.settings import ApiSettings
from genq.store.workers import warm_workers


def problems(options: SamplingOptions, settings: ApiSettings, where: str = "") -> list[str]:
    found = []
    if options.json_schema is not None and (reason := schema_error(options.json_schema)):
        found.append(f"{where}json_schema: not a valid JSON Schema: {reason}")
    if options.n > settings.max_n:
        found.append(f"{where}n: at most {settings.max_n} completions per job (GENQ_MAX_N)")
    if options.logprobs is not None and options.logprobs > settings.max_logprobs:
        found.append(
            f"{where}logprobs: at most {settings.max_logprobs} per token (GENQ_MAX_LOGPROBS)"
        )
    return found


def check(options: SamplingOptions, settings: ApiSettings) -> None:
    if found := problems(options, settings):
        raise ApiError(422, "invalid_request", "; ".join(found))


def check_items(items: list[SamplingOptions], settings: ApiSettings) -> None:
    found = [p for i, item in enumerate(items) for p in problems(item, settings, f"items.{i}.")]
    if found:
        raise ApiError(422, "invalid_request", "; ".join(found[:10]))


async def check_engines(svc: Services, options: SamplingOptions, model: str) -> None:
    """422 for structured output when the model's warm workers all run a vLLM without it (with
    none warm, the job waits for one; a worker that cannot run it fails it readably)."""
    if not options.structure():
        return
    workers = [w for w in await warm_workers(svc.redis) if w.model == model]
    if workers and not any(STRUCTURED_OUTPUT in w.features for w in workers):
        raise ApiError(
            422,
            "unsupported",
            f"structured output ({', '.join(options.structure())}) is not available: the "
            f"workers serving {model!r} run a vLLM build without it",
        )


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a JSON Schema (checked against the metaschema of the draft it
    names, 2020-12 by default); None when it is one."""
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path)
        return f"{exc.message}" + (f" (at {path})" if path else "")
    except Exception as exc:  # noqa: BLE001 - e.g. a "$schema" that is not a string
        return f"{type(exc).__name__}: {exc}"
    return None
