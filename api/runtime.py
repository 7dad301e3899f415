"""What the app holds while it runs: the model, the store, the searcher, and the write lock.

Built once in the app's lifespan and kept on ``app.state.runtime``; routes reach it through
``api.deps``. Blocking model and store work goes through ``run`` so it never holds up the event
loop. Every write holds ``write_lock`` (``write`` takes it for one call) because the embedded
Qdrant Edge store has a single writer, and an ingest's plan-then-write or a read-modify-write of a
payload must not interleave with another write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread

from api.ratelimit import RateLimiter
from engine.analytics.log import QueryLog
from engine.encoder import Encoder, load_encoder
from engine.images import DecodeBudget
from engine.search import Searcher
from engine.settings import ApiSettings, Settings
from engine.store import VectorStore, open_store

T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    encoder: Encoder
    store: VectorStore
    searcher: Searcher
    limiter: anyio.CapacityLimiter
    write_lock: anyio.Lock = field(default_factory=anyio.Lock)
    query_log: QueryLog | None = None  # only when search analytics are on
    event_limiter: RateLimiter | None = None
    decode_budget: DecodeBudget = field(default_factory=lambda: DecodeBudget(ApiSettings().decode_budget_bytes))

    async def run(self, function: Callable[..., T], *args, **kwargs) -> T:
        """``function(*args, **kwargs)`` in a worker thread, at most ``api.search_threads`` at once."""
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs), limiter=self.limiter)

    async def write(self, function: Callable[..., T], *args, **kwargs) -> T:
        """``function`` in a worker thread, one write at a time; it takes no search slot, so a long
        upsert does not starve shoppers' searches."""
        async with self.write_lock:
            return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    async def close(self) -> None:
        """Close the store once in-flight writes are done, so the next process can open it."""
        async with self.write_lock:
            await anyio.to_thread.run_sync(self.store.close)
        if self.query_log is not None:
            self.query_log.close()


async def start_runtime(settings: Settings, encoder: Encoder | None = None) -> Runtime:
    """Load the model (unless given one) and open the store, off the event loop."""
    encoder, store = await anyio.to_thread.run_sync(_open_engine, settings, encoder)
    searcher = Searcher(encoder, store, settings.search)
    analytics = settings.analytics
    query_log = QueryLog(analytics.path, analytics.retention_days) if analytics.enabled else None
    # Locks and limiters belong to the event loop, so they are made here and not in the thread.
    return Runtime(settings, encoder, store, searcher, anyio.CapacityLimiter(settings.api.search_threads),
                   query_log=query_log, event_limiter=RateLimiter(analytics.events_per_minute),
                   decode_budget=DecodeBudget(settings.api.decode_budget_bytes))


def _open_engine(settings: Settings, encoder: Encoder | None) -> tuple[Encoder, VectorStore]:
    encoder = encoder or load_encoder(settings.model)
    store = open_store(settings.store, encoder.info)
    # The store's files are read into memory behind the server's back: it answers at once, and
    # the first shoppers' searches stop paying for disk reads as soon as the reading is done.
    threading.Thread(target=store.warm, name="warm-store", daemon=True).start()
    return encoder, store
