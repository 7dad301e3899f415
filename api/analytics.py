"""The query log's side of a search: what of an answered search the log keeps (never the photo), and
the shopper-photo centre learnt as photo searches come."""

from __future__ import annotations

import hashlib

import anyio.to_thread

from api.runtime import Runtime
from api.schemas import SearchForm
from engine.analytics.log import LoggedQuery, evidence_rows
from engine.search import SearchResponse
from engine.signals import SIGNALS


async def log_search(runtime: Runtime, form: SearchForm, kind: str, photo: bytes | None,
                     response: SearchResponse, seconds: dict[str, float]) -> str:
    """Log one answered search; returns its query id (shoppers' events name it)."""
    entry = LoggedQuery(
        kind=kind, text=(form.text or "").strip() or None,
        filters={"category": list(form.category), "min_price": form.min_price, "max_price": form.max_price},
        results=[result.product_id for result in response.results],
        evidence=evidence_rows(response.evidence, SIGNALS.names),
        nothing_close=response.nothing_close,
        latency_ms=round(1000 * sum(seconds.values()), 3),
        photo_sha256=hashlib.sha256(photo).hexdigest() if photo is not None else None,
        photo_vector=response.photo_vector,
        photo_look=response.photo_look,
        model=runtime.encoder.info.tag,
        session=form.session,
    )
    # Off the event loop: an SQLite insert waits on the disk.
    await anyio.to_thread.run_sync(_record, runtime, entry)
    return entry.id


def _record(runtime: Runtime, entry: LoggedQuery) -> None:
    runtime.query_log.record_query(entry)


def learn_from_search(runtime: Runtime, photo: bytes | None, response: SearchResponse) -> None:
    """A photo searched whole teaches the shop's shopper-photo centre (engine.analytics.centre),
    the query log on or off; called after ``log_search``, so the log holds it when it is read."""
    learner = runtime.centre_learner
    if learner is not None and photo is not None and response.photo_look is not None:
        learner.photo_searched(photo, runtime.encoder.info.tag, response.photo_look)
