"""Re-index without downtime: build a new collection beside the live one (another model, other
heads, other settings), check it, then switch the shop's collection name to it at once.

Search keeps answering from the live collection the whole time: the new one is another folder
(embedded store) or collection (server), with a lock of its own. The check counts the products
and runs a recall self-check: a sample of products searched by their own stored photo and title
vectors must find themselves in the top 10 (an index that lost points or links fails it). Only
then is the alias switched; the old collection is kept until dropped (``--drop-previous``), so
switching back is one more switch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.encoder import Encoder
from engine.errors import StoreError
from engine.settings import Settings
from engine.store import IMAGE_VECTOR, VectorStore, open_store
from engine.store.aliases import EdgeAliases, IndexEntry, model_of
from engine.store.base import SENTENCE_VECTOR, SearchFilters
from ingest.catalog import Catalog
from ingest.pipeline import IngestSummary, ingest_catalog

SELF_CHECK_SAMPLE = 200
MIN_SELF_RECALL = 0.95  # the embedded store's HNSW finds >0.99 of its exact top 10 (docs/scale.md)


@dataclass
class SelfCheck:
    products: int
    expected: int
    sampled: int
    recall_at_10: float  # of the sampled products' own-vector searches, the share finding themselves

    @property
    def ok(self) -> bool:
        return self.products == self.expected and self.recall_at_10 >= MIN_SELF_RECALL


@dataclass
class ReindexReport:
    alias: str
    collection: str
    previous: str
    summary: IngestSummary
    check: SelfCheck
    seconds: float


def new_collection_name(alias: str) -> str:
    return f"{alias}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"


def self_check(store: VectorStore, expected: int, sample: int = SELF_CHECK_SAMPLE) -> SelfCheck:
    """Counts and recall of the products' own vectors (photos and title) in the new index."""
    products = store.count()
    found = searched = 0
    for product in store.sample(sample):
        for using, vector in ((IMAGE_VECTOR, _mean(product.image_vectors)), (SENTENCE_VECTOR, product.sentence_vector)):
            if vector is None:
                continue
            hits = store.query(vector, using, SearchFilters(), 10)
            found += product.product_id in {hit.product_id for hit in hits}
            searched += 1
    return SelfCheck(products, expected, min(sample, products), found / searched if searched else 0.0)


def _mean(vectors: np.ndarray | None) -> np.ndarray | None:
    if vectors is None:
        return None
    mean = vectors.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def reindex(catalog: Catalog, encoder: Encoder, settings: Settings, progress: bool = False) -> ReindexReport:
    """Build ``catalog`` with ``encoder`` into a new collection of the embedded store, check it and
    switch ``settings.store.collection`` to it. A failed check leaves the live index as it was."""
    if settings.store.backend != "edge":
        raise StoreError("snapshop reindex switches the embedded store's aliases; on a Qdrant server build the "
                         "new collection with SNAPSHOP_STORE__COLLECTION and switch Qdrant's alias to it")
    started = time.perf_counter()
    alias = settings.store.collection
    aliases = EdgeAliases(settings.store.path)
    previous = aliases.target(alias)
    name = new_collection_name(alias)
    target = settings.store.model_copy(update={"collection": name})
    with open_store(target, encoder.info) as store:
        summary = ingest_catalog(catalog, encoder, store, settings.ingest, progress=progress)
        check = self_check(store, summary.stored)
    if not check.ok:
        raise StoreError(
            f"the new index '{name}' failed its check ({check.products} products of {check.expected} expected, "
            f"self-recall@10 {check.recall_at_10:.3f}, at least {MIN_SELF_RECALL} wanted); the live index "
            f"'{previous}' is unchanged and '{name}' is kept for a look"
        )
    aliases.switch(alias, IndexEntry(name, model_of(settings.model), check.products, previous, time.time()))
    return ReindexReport(alias, name, previous, summary, check, time.perf_counter() - started)
