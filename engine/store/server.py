"""A Qdrant server (or cluster) reached through qdrant-client, for catalogs beyond one process.

The model that made the vectors is recorded in the collection's metadata. Tests run this code
against qdrant-client's in-memory mode (``url=":memory:"``), which speaks the same API.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from engine.attributes import PAYLOAD_PREFIX, payload_key
from engine.errors import StoreError, StoreUnavailable
from engine.local_features import PACKED_WIDTH
from engine.model_info import ModelInfo
from engine.records import check_payload
from engine.stock import AVAILABILITY, OUT_OF_STOCK_VALUES, STOCK
from engine.store.base import (
    BM25_VECTOR,
    CAPTION_VECTOR,
    FLOAT_FIELDS,
    GRAPH_FIELDS,
    IMAGE_VECTOR,
    KEYWORD_FIELDS,
    LOCAL_VECTOR,
    LOOK_VECTOR,
    SENTENCE_DIM,
    SENTENCE_VECTOR,
    Hit,
    ProductPoint,
    SearchFilters,
    StoredProduct,
    VectorLayout,
    VectorQuery,
    VectorStore,
    check_model,
    keeps_local_features,
    model_record,
    named_vectors,
    point_id,
    sampled_vectors,
    stored_payload,
    vectors_of,
)
from engine.store.indexing import EF_CONSTRUCT, FULL_SCAN_KB, HNSW_M, INT8_QUANTILE, Indexing, graphed


def stored_record(url: str, collection: str, api_key: str | None = None, timeout_s: float = 10.0) -> dict:
    """The model record in the metadata of the server collection ``collection``."""
    client = QdrantClient(location=":memory:") if url == ":memory:" else QdrantClient(
        url=url, api_key=api_key, timeout=int(max(1, timeout_s)), check_compatibility=False)
    try:
        if not client.collection_exists(collection):
            raise StoreError(f"the Qdrant server at {url} has no collection '{collection}'; ingest a catalog first")
        return client.get_collection(collection).config.metadata or {}
    except StoreError:
        raise
    except Exception as e:  # connection refused, DNS, timeout: all mean "not reachable"
        raise StoreUnavailable(f"the Qdrant server at {url} does not answer: {str(e)[:200]}") from e
    finally:
        client.close()

RULES_KEY = "merchandising"  # rules and synonyms (engine.rules), in the collection's metadata


class ServerStore(VectorStore):
    def __init__(self, url: str, collection: str, info: ModelInfo, api_key: str | None = None,
                 timeout_s: float = 10.0, hnsw_ef: int = 64, client: QdrantClient | None = None,
                 shard_number: int | None = None, replication_factor: int | None = None,
                 indexing: Indexing | None = None):
        self.info = info
        self.collection = collection
        self.hnsw_ef = hnsw_ef
        self.indexing = indexing = indexing or Indexing()
        # As in the embedded store (engine.store.edge): searches of the int8 copies are rescored
        # with the original vectors, scores of given candidates read the originals.
        self._rescored = qm.QuantizationSearchParams(rescore=True, oversampling=indexing.oversampling)
        self._exact = qm.QuantizationSearchParams(ignore=True)
        # How a new collection is spread over a cluster: Qdrant places the shards and their
        # replicas on its nodes and routes every request (None: the server's defaults).
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        if client is not None:  # share one connection (tests use it to share an in-memory server)
            self.client = client
        elif url == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            # No version check: against a dead server it only adds a warning to the clear error below.
            self.client = QdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout_s)),
                                       check_compatibility=False)
        try:
            exists = self.client.collection_exists(collection)
        except Exception as e:  # connection refused, DNS, timeout: all mean "not reachable"
            raise StoreUnavailable(f"the Qdrant server at {url} does not answer: {str(e)[:200]}") from e
        if exists:
            metadata = self.client.get_collection(collection).config.metadata or {}
            check_model(metadata, info, f"the collection '{collection}' at {url}")
            self.layout = VectorLayout.of_record(metadata)
            self.local_features = keeps_local_features(metadata, f"the collection '{collection}' at {url}")
        else:
            self._create(info)
            self.local_features = True

    def _create(self, info: ModelInfo) -> None:
        record = model_record(info)
        self.layout = VectorLayout.of_record(record)
        dense = functools.partial(_dense, indexing=self.indexing)
        vectors = {
            IMAGE_VECTOR: dense(info.dim, IMAGE_VECTOR, multivector_config=_MAXSIM),
            CAPTION_VECTOR: dense(info.dim, CAPTION_VECTOR),
            SENTENCE_VECTOR: dense(SENTENCE_DIM, SENTENCE_VECTOR),
            **({LOOK_VECTOR: dense(info.look_dim, LOOK_VECTOR, multivector_config=_MAXSIM,
                                   datatype=qm.Datatype.FLOAT16)} if info.look_dim else {}),
            # Bytes on disk, read only for the candidates verified (engine.local_features).
            LOCAL_VECTOR: qm.VectorParams(size=PACKED_WIDTH, distance=qm.Distance.DOT, on_disk=True,
                                          multivector_config=_MAXSIM, hnsw_config=qm.HnswConfigDiff(m=0),
                                          datatype=qm.Datatype.UINT8),
        }
        self.client.create_collection(
            self.collection,
            vectors_config={self.layout.name(name): params for name, params in vectors.items()},
            sparse_vectors_config={BM25_VECTOR: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            hnsw_config=qm.HnswConfigDiff(m=HNSW_M, ef_construct=EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB),
            shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            metadata=record,
        )
        # Payload-aware HNSW links only for GRAPH_FIELDS (engine.store.base says why).
        for name in KEYWORD_FIELDS:
            self.client.create_payload_index(self.collection, name, qm.KeywordIndexParams(
                type=qm.KeywordIndexType.KEYWORD, enable_hnsw=name in GRAPH_FIELDS))
        for name in FLOAT_FIELDS:
            self.client.create_payload_index(self.collection, name, qm.FloatIndexParams(
                type=qm.FloatIndexType.FLOAT, enable_hnsw=name in GRAPH_FIELDS))

    def upsert(self, points: list[ProductPoint]) -> None:
        if not points:
            return
        self.client.upsert(
            self.collection,
            points=[
                qm.PointStruct(id=point_id(p.product_id),
                               vector=named_vectors(p, qm.SparseVector, self.layout, self.local_features),
                               payload=stored_payload(p))
                for p in points
            ],
            wait=True,
        )

    def set_payload(self, product_id: str, values: dict) -> None:
        check_payload(values)
        self.client.set_payload(self.collection, payload=values, points=[point_id(product_id)], wait=True)

    def delete(self, product_ids: Iterable[str]) -> None:
        ids = [point_id(pid) for pid in product_ids]
        if ids:
            self.client.delete(self.collection, points_selector=qm.PointIdsList(points=ids), wait=True)

    def get(self, product_ids: list[str], with_vectors: bool | list[str] = False) -> dict[str, StoredProduct]:
        if not product_ids:
            return {}
        records = self.client.retrieve(self.collection, [point_id(pid) for pid in product_ids],
                                       with_payload=True, with_vectors=self.layout.names(with_vectors))
        out = {}
        for record in records:
            out[record.payload["product_id"]] = StoredProduct(record.payload["product_id"], record.payload,
                                                              *vectors_of(record.vector, self.layout))
        return out

    def query(self, vector, using, filters, limit, with_vectors=False, breadth=1) -> list[Hit]:
        query_vector = vector.astype(np.float32).tolist()
        if using in (IMAGE_VECTOR, LOOK_VECTOR):
            query_vector = [query_vector]
        response = self.client.query_points(
            self.collection, query=query_vector, using=self.layout.name(using), query_filter=_filter(filters),
            limit=limit, with_payload=True, with_vectors=self.layout.names(with_vectors),
            search_params=qm.SearchParams(hnsw_ef=self.ef_for(using, limit, breadth), quantization=self._rescored),
        )
        return _hits(response, self.layout)

    def search_many(self, queries, filters, limit):
        if not queries:
            return []
        plan = self.batch_plan(queries, filters, limit)
        conditions = {own: _filter(own) for _, own, _, _ in plan}
        requests = [qm.QueryRequest(query=_nearest(q), using=self.layout.name(q.using), filter=conditions[own],
                                    limit=wanted, with_payload=False, with_vector=False,
                                    params=qm.SearchParams(hnsw_ef=ef, quantization=self._rescored))
                    for q, own, wanted, ef in plan]
        answers = self.client.query_batch_points(self.collection, requests=requests)
        return [[(p.id, p.score) for p in answer.points] for answer in answers]

    def score(self, keys, queries):
        if not keys or not queries:
            return [{} for _ in queries]
        condition = qm.Filter(must=[qm.HasIdCondition(has_id=list(keys))])
        requests = [qm.QueryRequest(query=_nearest(q), using=self.layout.name(q.using), filter=condition,
                                    limit=len(keys), params=qm.SearchParams(quantization=self._exact),
                                    with_payload=False, with_vector=False)
                    for q in queries]
        answers = self.client.query_batch_points(self.collection, requests=requests)
        return [{p.id: p.score for p in answer.points} for answer in answers]

    def records(self, keys, fields=None, vectors=None):
        if not keys:
            return {}
        found = self.client.retrieve(self.collection, list(keys), with_payload=fields or True,
                                     with_vectors=self.layout.names(vectors) or False)
        return {r.id: StoredProduct((r.payload or {}).get("product_id"), dict(r.payload or {}),
                                    *vectors_of(r.vector, self.layout))
                for r in found}

    def recommend(self, positives, negatives, filters, limit) -> list[Hit]:
        response = self.client.query_points(
            self.collection,
            query=qm.RecommendQuery(recommend=qm.RecommendInput(
                positive=[[v.astype(np.float32).tolist()] for v in positives],
                negative=[[v.astype(np.float32).tolist()] for v in negatives],
                strategy=qm.RecommendStrategy.BEST_SCORE,
            )),
            using=IMAGE_VECTOR, query_filter=_filter(filters), limit=limit, with_payload=True,
        )
        return _hits(response, self.layout)

    def extreme_price(self, filters, lowest) -> float | None:
        price_filter = _filter(filters)
        must = list(price_filter.must or []) if price_filter else []
        must.append(qm.FieldCondition(key="price", range=qm.Range(gte=0)))
        records, _ = self.client.scroll(
            self.collection, scroll_filter=qm.Filter(must=must, must_not=price_filter.must_not if price_filter else None),
            limit=1, with_payload=["price"],
            order_by=qm.OrderBy(key="price", direction=qm.Direction.ASC if lowest else qm.Direction.DESC),
        )
        return float(records[0].payload["price"]) if records else None

    def count(self, filters: SearchFilters = SearchFilters()) -> int:
        return self.client.count(self.collection, count_filter=_filter(filters), exact=True).count

    def attribute_indexes(self) -> dict[str, str]:
        schema = self.client.get_collection(self.collection).payload_schema or {}
        kinds = {"keyword": "keyword", "float": "number", "integer": "number"}
        return {key.removeprefix(PAYLOAD_PREFIX): kinds[str(info.data_type.value)]
                for key, info in schema.items()
                if key.startswith(PAYLOAD_PREFIX) and str(info.data_type.value) in kinds}

    def index_attributes(self, kinds: dict[str, str]) -> None:
        known = self.attribute_indexes()
        for name, kind in kinds.items():
            if name not in known:
                # No HNSW links per value (GRAPH_FIELDS says why): a filter walks the main graph.
                schema = (qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, enable_hnsw=False) if kind == "keyword"
                          else qm.FloatIndexParams(type=qm.FloatIndexType.FLOAT, enable_hnsw=False))
                self.client.create_payload_index(self.collection, payload_key(name), schema)

    def facet(self, key: str, filters: SearchFilters = SearchFilters(), limit: int = 100) -> dict[str, int]:
        try:
            response = self.client.facet(self.collection, key=key, facet_filter=_filter(filters), limit=limit, exact=True)
            return {str(hit.value): hit.count for hit in response.hits}
        except NotImplementedError:  # the in-memory mode has no facets: count by scrolling
            counts: dict[str, int] = {}
            offset = None
            while True:
                records, offset = self.client.scroll(self.collection, scroll_filter=_filter(filters), limit=1000,
                                                     offset=offset, with_payload=[key])
                for record in records:
                    value = record.payload
                    for part in key.split("."):  # a dotted key names a nested field
                        value = value.get(part) if isinstance(value, dict) else None
                    for item in set(value) if isinstance(value, list) else ([value] if value is not None else []):
                        counts[str(item)] = counts.get(str(item), 0) + 1
                if offset is None:
                    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:limit])

    def sample(self, size: int) -> list[StoredProduct]:
        response = self.client.query_points(self.collection, query=qm.SampleQuery(sample=qm.Sample.RANDOM),
                                            limit=size, with_payload=["product_id"],
                                            with_vectors=self.layout.names(sampled_vectors(self.info)))
        return [StoredProduct(p.payload["product_id"], p.payload, *vectors_of(p.vector, self.layout))
                for p in response.points]

    def read_rules(self) -> dict:
        metadata = self.client.get_collection(self.collection).config.metadata or {}
        return dict(metadata.get(RULES_KEY) or {})

    def write_rules(self, document: dict) -> None:
        # Collection metadata is replicated with the collection, like the model record beside it.
        metadata = dict(self.client.get_collection(self.collection).config.metadata or {})
        self.client.update_collection(self.collection, metadata={**metadata, RULES_KEY: document})

    def find(self, filters: SearchFilters, limit: int = 1000) -> list[StoredProduct]:
        records, _ = self.client.scroll(self.collection, scroll_filter=_filter(filters), limit=limit,
                                        with_payload=True, with_vectors=False)
        return [StoredProduct(r.payload["product_id"], dict(r.payload)) for r in records]

    def scroll_ids(self, fields: list[str] | None = None, batch: int = 1000) -> Iterator[tuple[str, dict]]:
        wanted = ["product_id", *fields] if fields is not None else True
        offset = None
        while True:
            records, offset = self.client.scroll(self.collection, limit=batch, offset=offset,
                                                 with_payload=wanted, with_vectors=False)
            for record in records:
                yield record.payload["product_id"], dict(record.payload)
            if offset is None:
                return

    def optimize(self) -> None:
        """The server indexes in the background."""

    def close(self) -> None:
        try:
            self.client.close()
        except Exception as e:  # pragma: no cover - closing a dead connection
            raise StoreError(f"closing the Qdrant client failed: {e}") from e


_MAXSIM = qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM)


_INT8 = qm.ScalarQuantization(scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=INT8_QUANTILE,
                                                                 always_ram=True))


def _dense(size: int, name: str, indexing: Indexing, **kw) -> qm.VectorParams:
    """A cosine vector, with a graph and int8 copies where engine.store.indexing says."""
    return qm.VectorParams(size=size, distance=qm.Distance.COSINE,
                           hnsw_config=None if graphed(name) else qm.HnswConfigDiff(m=0),
                           quantization_config=_INT8 if indexing.quantized(name) else None, **kw)


def _hits(response, layout: VectorLayout) -> list[Hit]:
    return [Hit(p.payload["product_id"], float(p.score), p.payload, *vectors_of(p.vector, layout))
            for p in response.points]


def _nearest(q: VectorQuery):
    if q.terms is not None:
        return qm.SparseVector(indices=q.terms[0], values=q.terms[1])
    return q.as_list()


def _filter(filters: SearchFilters) -> qm.Filter | None:
    if filters.empty:
        return None
    must, must_not = [], []
    if filters.categories:
        must.append(qm.FieldCondition(key="category", match=qm.MatchAny(any=list(filters.categories))))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(qm.FieldCondition(key="price", range=qm.Range(gte=filters.min_price, lte=filters.max_price)))
    if filters.exclude_ids:
        must_not.append(qm.HasIdCondition(has_id=[point_id(pid) for pid in filters.exclude_ids]))
    for name, values in filters.attributes:
        must.append(qm.FieldCondition(key=payload_key(name), match=qm.MatchAny(any=list(values))))
    for name, low, high in filters.ranges:
        must.append(qm.FieldCondition(key=payload_key(name), range=qm.Range(gte=low, lte=high)))
    if filters.in_stock:
        must_not.append(qm.FieldCondition(key=payload_key(AVAILABILITY), match=qm.MatchAny(any=list(OUT_OF_STOCK_VALUES))))
        must_not.append(qm.FieldCondition(key=payload_key(STOCK), range=qm.Range(lte=0)))
    return qm.Filter(must=must or None, must_not=must_not or None)
