"""``GET /v1/models``: the models served here (genq.contract.models), OpenAI's list shape, each with
its warm workers and its jobs waiting; ``GET /v1/models/{model}``: one of them."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import AUTH_ERRORS, CallerDep
from api.deps import Services, ServicesDep
from api.errors import ApiError
from api.openai_models import Model, ModelList
from genq.contract.constants import model_queued_key
from genq.contract.schemas import ErrorBody
from genq.store.workers import warm_workers

router = APIRouter(prefix="/v1/models", tags=["models"])


async def _models(svc: Services) -> list[Model]:
    names = await svc.models.known(fresh=True)
    workers = await warm_workers(svc.redis)
    queued = await svc.redis.mget([model_queued_key(n) for n in names]) if names else []
    out = []
    for name, waiting in zip(names, queued):
        warm = [w for w in workers if w.model == name]
        out.append(
            Model(
                id=name,
                created=int(min((w.ready_at for w in warm), default=0)),
                warm_workers=len(warm),
                queued=int(waiting or 0),
            )
        )
    return out


@router.get("", responses=AUTH_ERRORS)
async def list_models(svc: ServicesDep, _: CallerDep) -> ModelList:
    """Every model a job may name: those the API is configured with (``GENQ_MODELS``) and those
    workers registered, with how many warm workers serve each now and how many jobs wait."""
    return ModelList(data=await _models(svc))


@router.get("/{model:path}", responses=AUTH_ERRORS | {404: {"model": ErrorBody}})
async def get_model(model: str, svc: ServicesDep, _: CallerDep) -> Model:
    for entry in await _models(svc):
        if entry.id == model:
            return entry
    raise ApiError(404, "model_not_found", f"model {model!r} is not served here")
