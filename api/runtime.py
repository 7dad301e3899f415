"""What the app holds while it runs: the model, the store, the searcher, and the write lock.

Built once in the app's lifespan and kept on ``app.state.runtime``; routes reach it through
``api.deps``. Blocking model and store work goes through ``run`` so it never holds up the event
loop. Every write holds ``write_lock`` (``write`` takes it for one call) because the embedded
Qdrant Edge store has a single writer, and an ingest's plan-then-write or a read-modify-write of a
payload must not interleave with another write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import anyio
import anyio.to_thread

from api.ratelimit import RateLimiter
from engine.analytics.centre import CentreLearner, RecentPhotoLooks
from engine.analytics.log import QueryLog
from engine.encoder import Encoder
from engine.errors import CalibrationError, StoreUnavailable
from engine.heap import settle_heap
from engine.images import DecodeBudget
from engine.model_loading import load_encoder
from engine.products import Products
from engine.search import Searcher
from engine.settings import ApiSettings, Settings
from engine.store import VectorStore, open_store
from engine.store.aliases import live_settings, physical_collection

log = logging.getLogger(__name__)

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
    centre_learner: CentreLearner | None = None  # only when the shopper-photo centre is "auto" (default)
    event_limiter: RateLimiter | None = None
    decode_budget: DecodeBudget = field(default_factory=lambda: DecodeBudget(ApiSettings().decode_budget_bytes))
    collection: str = ""  # the collection served now (the settings' name may be an alias of it)
    # Each switch of index is a generation; reads in flight are counted per generation, so the
    # old index is closed only when the last search that started on it is done.
    generation: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)

    @property
    def products(self) -> Products:
        """The product service on the store served now (a reindex may switch it)."""
        return Products(self.store)

    async def run(self, function: Callable[..., T], *args, **kwargs) -> T:
        """``function(*args, **kwargs)`` in a worker thread, at most ``api.search_threads`` at once."""
        generation = self.generation  # the objects in ``args`` were read in this same step of the loop
        self.in_flight[generation] = self.in_flight.get(generation, 0) + 1
        try:
            return await anyio.to_thread.run_sync(partial(function, *args, **kwargs), limiter=self.limiter)
        finally:
            self.in_flight[generation] -= 1
            if not self.in_flight[generation]:
                del self.in_flight[generation]

    async def write(self, function: Callable[..., T], *args, **kwargs) -> T:
        """``function`` in a worker thread, one write at a time; it takes no search slot, so a long
        upsert does not starve shoppers' searches."""
        generation = self.generation
        async with self.write_lock:
            if generation != self.generation:  # its store was read before the switch: not written there
                raise StoreUnavailable("the live index was switched while this write waited; send it again")
            return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))

    async def switch(self, settings: Settings, encoder: Encoder, store: VectorStore, collection: str) -> None:
        """Serve from another index from this moment on. Writes are held off while the objects change
        hands; the old store is closed once the searches that started on it are done."""
        searcher = searcher_after_switch(settings, encoder, store)
        # Without the log, the photos kept in memory carry over (the learner reads only the new
        # model's, so a re-index to another model starts over).
        kept = self.centre_learner.source if self.centre_learner and self.query_log is None else None
        learner = await learn_centre(searcher, self.query_log, settings, kept) if self.centre_learner else None
        async with self.write_lock:
            old_store, old_generation = self.store, self.generation
            self.settings, self.encoder, self.store, self.collection = settings, encoder, store, collection
            self.searcher, old_learner, self.centre_learner = searcher, self.centre_learner, learner
            self.generation += 1
        if old_learner is not None:
            await anyio.to_thread.run_sync(old_learner.close)
        while self.in_flight.get(old_generation):
            await anyio.sleep(0.01)
        await anyio.to_thread.run_sync(old_store.close)

    async def close(self) -> None:
        """Close the store once in-flight writes are done, so the next process can open it."""
        async with self.write_lock:
            await anyio.to_thread.run_sync(self.store.close)
        if self.centre_learner is not None:
            await anyio.to_thread.run_sync(self.centre_learner.close)
        if self.query_log is not None:
            self.query_log.close()


def searcher_after_switch(settings: Settings, encoder: Encoder, store: VectorStore) -> Searcher:
    """The Searcher of an index switched to: a shopper-photo centre made with the old model does not
    fit another model's appearance space, so search goes on without it (a warning says to run
    `snapshop calibrate` again) rather than the switch failing half way."""
    try:
        return Searcher(encoder, store, settings.search)
    except CalibrationError as e:
        log.warning("%s; searching without a shopper-photo centre until then", e)
        return Searcher(encoder, store, settings.search.model_copy(update={"shopper_centre": None}))


async def learn_centre(searcher: Searcher, query_log: QueryLog | None, settings: Settings,
                       kept: RecentPhotoLooks | None = None) -> CentreLearner | None:
    """With SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto (the default), the learner of the centre from the
    query log, or without it from the photos searched since the start (``kept``: those of the index
    served before), and ``searcher`` searching with what they teach already (the new model's only)."""
    if settings.search.shopper_centre != "auto":
        return None
    source = query_log if query_log is not None else kept if kept is not None else RecentPhotoLooks()
    learner = CentreLearner(source, searcher.encoder.info, searcher.use_shopper_centre)
    await anyio.to_thread.run_sync(learner.start)
    return learner


async def start_runtime(settings: Settings, encoder: Encoder | None = None) -> Runtime:
    """Load the model (unless given one) and open the store, off the event loop."""
    settings = live_settings(settings)  # the model that made the live index, when it was re-indexed
    encoder, store = await anyio.to_thread.run_sync(_open_engine, settings, encoder)
    searcher = Searcher(encoder, store, settings.search)
    analytics = settings.analytics
    query_log = QueryLog(analytics.path, analytics.retention_days) if analytics.enabled else None
    learner = await learn_centre(searcher, query_log, settings)
    # Locks and limiters belong to the event loop, so they are made here and not in the thread.
    return Runtime(settings, encoder, store, searcher, anyio.CapacityLimiter(settings.api.search_threads),
                   query_log=query_log, centre_learner=learner, event_limiter=RateLimiter(analytics.events_per_minute),
                   decode_budget=DecodeBudget(settings.api.decode_budget_bytes),
                   collection=physical_collection(settings.store) if settings.store.backend == "edge"
                   else settings.store.collection)


def _open_engine(settings: Settings, encoder: Encoder | None) -> tuple[Encoder, VectorStore]:
    encoder = encoder or load_encoder(settings.model)
    store = open_store(settings.store, encoder.info)
    # The store's files are read into memory behind the server's back: it answers at once, and
    # the first shoppers' searches stop paying for disk reads as soon as the reading is done.
    threading.Thread(target=store.warm, name="warm-store", daemon=True).start()
    settle_heap()  # searches stop paying for full collections of what loading made (engine.heap)
    return encoder, store
