"""Search analytics over HTTP: shoppers' events (public, rate-limited) and the merchandiser's report."""

from __future__ import annotations

import time
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from api.deps import RequireApiKey, RuntimeDep
from api.runtime import Runtime
from api.schemas import error_responses
from engine.analytics.log import EventKind, QueryLog
from engine.analytics.report import Report, build_report, store_nearest
from engine.errors import AnalyticsOff

router = APIRouter(tags=["analytics"])


class EventIn(BaseModel):
    """A shopper's action on one result of a search."""

    query_id: str = Field(max_length=64, description="The search's query_id, from its answer.")
    product_id: str = Field(max_length=512, description="The result acted on.")
    kind: EventKind = Field(description="click, add_to_cart or purchase.")


class EventAccepted(BaseModel):
    query_id: str
    product_id: str
    kind: EventKind
    position: int = Field(description="The product's 1-based position in the search's results.")


def _log(runtime: Runtime) -> QueryLog:
    if runtime.query_log is None:
        raise AnalyticsOff("search analytics are off (SNAPSHOP_ANALYTICS__ENABLED=true turns them on)")
    return runtime.query_log


@router.post("/events", summary="Record a click, add-to-cart or purchase on a search result",
             status_code=status.HTTP_202_ACCEPTED, responses=error_responses(404, 422, 429))
async def record_event(event: EventIn, request: Request, runtime: RuntimeDep) -> EventAccepted:
    log = _log(runtime)
    client = request.client.host if request.client else "unknown"
    wait = runtime.event_limiter.allow(client)
    if wait > 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"too many events from {client}: at most "
                            f"{runtime.settings.analytics.events_per_minute} a minute (SNAPSHOP_ANALYTICS__EVENTS_PER_MINUTE)",
                            headers={"Retry-After": str(max(1, round(wait)))})
    done = await anyio.to_thread.run_sync(log.record_event, event.query_id, event.product_id, event.kind)
    return EventAccepted(query_id=done.query_id, product_id=done.product_id, kind=done.kind, position=done.position)


@router.get("/analytics/report", summary="What shoppers search for, miss, and click",
            dependencies=[RequireApiKey], responses=error_responses(401, 403, 404, 422))
async def report(
    runtime: RuntimeDep,
    days: Annotated[float, Query(gt=0, le=3650, description="The last this many days.")] = 30.0,
    top: Annotated[int, Query(ge=1, le=200, description="Queries per list.")] = 20,
    clusters: Annotated[int, Query(ge=1, le=50, description="Clusters of unmet photo searches.")] = 5,
) -> Report:
    log = _log(runtime)
    since = time.time() - days * 86400
    return await runtime.run(build_report, log, since, top=top, clusters=clusters,
                             nearest=store_nearest(runtime.store))
