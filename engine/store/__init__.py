"""Qdrant behind one interface: the embedded Edge shard by default, a server by URL."""

from __future__ import annotations

from engine.model_info import ModelInfo
from engine.settings import StoreSettings
from engine.store.base import (
    IMAGE_VECTOR,
    TEXT_VECTOR,
    Hit,
    ProductPoint,
    SearchFilters,
    StoredProduct,
    VectorStore,
    point_id,
)


def open_store(settings: StoreSettings, info: ModelInfo) -> VectorStore:
    """Open (or create) the store named in settings for vectors of the model ``info``."""
    if settings.backend == "server":
        from engine.store.server import ServerStore

        return ServerStore(settings.url, settings.collection, info, settings.api_key, settings.timeout_s,
                           settings.hnsw_ef, shard_number=settings.shard_number,
                           replication_factor=settings.replication_factor)
    from engine.store.aliases import physical_collection
    from engine.store.edge import EdgeStore

    # The collection name may be an alias of a re-indexed collection (engine.store.aliases).
    return EdgeStore(settings.path, physical_collection(settings), info, settings.hnsw_ef)


__all__ = [
    "IMAGE_VECTOR", "TEXT_VECTOR", "Hit", "ProductPoint", "SearchFilters", "StoredProduct", "VectorStore",
    "open_store", "point_id",
]
