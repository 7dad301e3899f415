"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status

from api.deps import RuntimeDep
from api.schemas import Health, Readiness, error_responses

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> Health:
    return Health()


@router.get("/ready", summary="The store answers and searches can be served", responses=error_responses(503))
async def ready(runtime: RuntimeDep) -> Readiness:
    try:
        products = await runtime.run(runtime.store.count)
    except Exception as e:  # whatever the store raises, the answer is the same: not ready
        log.warning("readiness: the store does not answer: %s", e)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the store does not answer: {e}") from e
    return Readiness(products=products, model=runtime.encoder.info.tag, store=runtime.settings.store.backend)
