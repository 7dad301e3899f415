"""Qdrant behind one interface: the embedded Edge shard by default, a server by URL."""

from __future__ import annotations

from engine.errors import StoreError
from engine.model_info import ModelInfo
from engine.settings import StoreSettings
from engine.store.base import (
    CAPTION_VECTOR,
    IMAGE_VECTOR,
    Hit,
    ProductPoint,
    SearchFilters,
    StoredProduct,
    VectorStore,
    point_id,
    recorded_info,
)


def open_store(settings: StoreSettings, info: ModelInfo) -> VectorStore:
    """Open (or create) the store named in settings for vectors of the model ``info``."""
    from engine.store.indexing import Indexing

    if settings.backend == "server":
        from engine.store.server import ServerStore

        return ServerStore(settings.url, settings.collection, info, settings.api_key, settings.timeout_s,
                           settings.hnsw_ef, shard_number=settings.shard_number,
                           replication_factor=settings.replication_factor, indexing=Indexing.of(settings))
    from engine.store.aliases import physical_collection
    from engine.store.edge import EdgeStore

    # The collection name may be an alias of a re-indexed collection (engine.store.aliases).
    return EdgeStore(settings.path, physical_collection(settings), info, settings.hnsw_ef, Indexing.of(settings))


def open_existing_store(settings: StoreSettings) -> VectorStore:
    """Open the store named in settings with the model recorded in it, without loading any model:
    for what needs no vectors made (reading and deleting products). A store that does not exist
    yet is an error, not created."""
    if settings.backend == "server":
        from engine.store.server import stored_record

        record = stored_record(settings.url, settings.collection, settings.api_key, settings.timeout_s)
    else:
        from engine.store.aliases import physical_collection
        from engine.store.edge import stored_record

        record = stored_record(settings.path, physical_collection(settings))
    try:
        info = recorded_info(record)
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"the store's model record {record} names no model ({e})") from e
    return open_store(settings, info)


__all__ = [
    "CAPTION_VECTOR", "IMAGE_VECTOR", "Hit", "ProductPoint", "SearchFilters", "StoredProduct", "VectorStore",
    "open_existing_store", "open_store", "point_id",
]
