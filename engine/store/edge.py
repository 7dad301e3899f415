"""The embedded default: Qdrant Edge, the real Qdrant engine inside this process.

Layout on disk: ``<store.path>/<collection>/shard`` (the Edge shard, with its WAL) and
``<store.path>/<collection>/snapshop.json`` (which model made the vectors). One process holds a
shard at a time: a second one gets ``StoreUnavailable`` at once instead of corrupting it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from engine.encoder import ModelInfo
from engine.errors import StoreError, StoreUnavailable
from engine.store.base import (
    BM25_VECTOR,
    FLOAT_FIELDS,
    IMAGE_VECTOR,
    SENTENCE_DIM,
    SENTENCE_VECTOR,
    KEYWORD_FIELDS,
    TEXT_VECTOR,
    Hit,
    ProductPoint,
    SearchFilters,
    StoredProduct,
    VectorStore,
    check_model,
    model_record,
    point_id,
    vectors_of,
)

BOOKKEEPING = ["product_id", "content_hash", "meta_hash"]


class EdgeStore(VectorStore):
    def __init__(self, root: Path, collection: str, info: ModelInfo, hnsw_ef: int = 128):
        self.info = info
        self.dir = Path(root) / collection
        self.hnsw_ef = hnsw_ef
        self._write_lock = threading.Lock()
        meta_path = self.dir / "snapshop.json"
        shard_path = self.dir / "shard"
        if meta_path.exists():
            check_model(json.loads(meta_path.read_text()), info, f"the store at {self.dir}")
            self.shard = self._open(lambda: qe.EdgeShard.load(str(shard_path)))
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.shard = self._open(lambda: qe.EdgeShard.create(str(shard_path), self._config(info.dim)))
            for name in KEYWORD_FIELDS:
                self.shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
            for name in FLOAT_FIELDS:
                self.shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Float))
            # Written last: a store without it is an unfinished creation and is made again.
            meta_path.write_text(json.dumps(model_record(info), indent=2))

    def _open(self, opener):
        try:
            return opener()
        except Exception as e:  # qdrant_edge raises plain exceptions with the Rust message
            message = str(e)
            if "WouldBlock" in message or "lock" in message.lower():
                raise StoreUnavailable(
                    f"the store at {self.dir} is in use by another snapshop process (an ingest or a "
                    "server); wait for it to finish or stop it, then try again"
                ) from e
            if "segment" in message.lower() and "exist" in message.lower():
                raise StoreError(f"{self.dir}: an unfinished store is in the way; remove the folder") from e
            raise StoreError(f"cannot open the store at {self.dir}: {message}") from e

    @staticmethod
    def _config(dim: int) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={
                IMAGE_VECTOR: qe.EdgeVectorParams(
                    size=dim,
                    distance=qe.Distance.Cosine,
                    multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                ),
                TEXT_VECTOR: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                SENTENCE_VECTOR: qe.EdgeVectorParams(size=SENTENCE_DIM, distance=qe.Distance.Cosine),
            },
            sparse_vectors={BM25_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    # --- writes -----------------------------------------------------------------------------
    def upsert(self, points: list[ProductPoint]) -> None:
        if not points:
            return
        edge_points = [
            qe.Point(id=point_id(p.product_id), vector=_named(p), payload={**p.payload, "product_id": p.product_id})
            for p in points
        ]
        with self._write_lock:
            self.shard.update(qe.UpdateOperation.upsert_points(edge_points))

    def set_payload(self, product_id: str, values: dict) -> None:
        with self._write_lock:
            self.shard.update(qe.UpdateOperation.set_payload([point_id(product_id)], values))

    def delete(self, product_ids: Iterable[str]) -> None:
        ids = [point_id(pid) for pid in product_ids]
        if ids:
            with self._write_lock:
                self.shard.update(qe.UpdateOperation.delete_points(ids))

    def optimize(self) -> None:
        with self._write_lock:
            self.shard.optimize()
            self.shard.flush()

    # --- reads ------------------------------------------------------------------------------
    def get(self, product_ids: list[str], with_vectors: bool = False) -> dict[str, StoredProduct]:
        if not product_ids:
            return {}
        records = self.shard.retrieve([point_id(pid) for pid in product_ids], with_payload=True,
                                      with_vector=with_vectors)
        out = {}
        for record in records:
            payload = dict(record.payload or {})
            out[payload["product_id"]] = StoredProduct(payload["product_id"], payload, *vectors_of(record.vector))
        return out

    def query(self, vector, using, filters, limit, with_vectors=False) -> list[Hit]:
        query_vector = vector.astype(np.float32).tolist()
        if using == IMAGE_VECTOR:
            query_vector = [query_vector]  # a multivector is queried with a multivector (MaxSim)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query_vector, using=using),
            filter=_filter(filters),
            with_payload=True,
            with_vector=with_vectors,
            params=qe.SearchParams(hnsw_ef=max(self.hnsw_ef, limit)),
        )
        return self._hits(request)

    def query_terms(self, terms, filters, limit, with_vectors=False) -> list[Hit]:
        if not terms[0]:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(qe.SparseVector(indices=terms[0], values=terms[1]), using=BM25_VECTOR),
            filter=_filter(filters), with_payload=True, with_vector=with_vectors,
        )
        return self._hits(request)

    def recommend(self, positives, negatives, filters, limit) -> list[Hit]:
        recommend = qe.RecommendQuery(
            positives=[[v.astype(np.float32).tolist()] for v in positives],
            negatives=[[v.astype(np.float32).tolist()] for v in negatives],
        )
        request = qe.QueryRequest(limit=limit, query=qe.Query.RecommendBestScore(recommend, using=IMAGE_VECTOR),
                                  filter=_filter(filters), with_payload=True, with_vector=False)
        return self._hits(request)

    def extreme_price(self, filters, lowest) -> float | None:
        order = qe.OrderBy("price", direction=qe.Direction.Asc if lowest else qe.Direction.Desc)
        records, _ = self.shard.scroll(qe.ScrollRequest(limit=1, filter=_filter(filters), with_payload=["price"],
                                                        with_vector=False, order_by=order))
        return float(records[0].payload["price"]) if records and records[0].payload.get("price") is not None else None

    def _hits(self, request) -> list[Hit]:
        hits = []
        for point in self.shard.query(request):
            payload = dict(point.payload or {})
            hits.append(Hit(payload["product_id"], float(point.score), payload, *vectors_of(point.vector)))
        return hits

    def count(self, filters: SearchFilters = SearchFilters()) -> int:
        return self.shard.count(qe.CountRequest(filter=_filter(filters), exact=True))

    def facet(self, key: str, filters: SearchFilters = SearchFilters(), limit: int = 100) -> dict[str, int]:
        response = self.shard.facet(qe.FacetRequest(key=key, limit=limit, exact=True, filter=_filter(filters)))
        return {str(hit.value): hit.count for hit in response.hits}

    def sample(self, size: int) -> list[StoredProduct]:
        request = qe.QueryRequest(limit=size, query=qe.Sample.Random, with_payload=["product_id"], with_vector=True)
        return [StoredProduct(p.payload["product_id"], dict(p.payload), *vectors_of(p.vector))
                for p in self.shard.query(request)]

    def scroll_ids(self, batch: int = 1000) -> Iterator[tuple[str, dict]]:
        offset = None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(offset=offset, limit=batch, with_payload=BOOKKEEPING, with_vector=False)
            )
            for record in records:
                payload = dict(record.payload or {})
                yield payload["product_id"], payload
            if offset is None:
                return

    def close(self) -> None:
        shard, self.shard = getattr(self, "shard", None), None
        if shard is not None:
            with self._write_lock:
                shard.flush()
                shard.close()


def _named(p: ProductPoint) -> dict:
    vectors = {IMAGE_VECTOR: p.image_vectors.astype(np.float32).tolist(),
               TEXT_VECTOR: p.text_vector.astype(np.float32).tolist()}
    if p.sentence_vector is not None:
        vectors[SENTENCE_VECTOR] = p.sentence_vector.astype(np.float32).tolist()
    if p.terms is not None and p.terms[0]:
        vectors[BM25_VECTOR] = qe.SparseVector(indices=list(p.terms[0]), values=list(p.terms[1]))
    return vectors


def _filter(filters: SearchFilters) -> qe.Filter | None:
    if filters.empty:
        return None
    must, must_not = [], []
    if filters.categories:
        must.append(qe.FieldCondition(key="category", match=qe.MatchAny(list(filters.categories))))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(qe.FieldCondition(key="price", range=qe.RangeFloat(gte=filters.min_price, lte=filters.max_price)))
    if filters.exclude_ids:
        must_not.append(qe.HasIdCondition({point_id(pid) for pid in filters.exclude_ids}))
    return qe.Filter(must=must or None, must_not=must_not or None)
