"""The embedded default: Qdrant Edge, the real Qdrant engine inside this process.

Layout on disk: ``<store.path>/<collection>/shard`` (the Edge shard, with its WAL) and
``<store.path>/<collection>/snapshop.json`` (which model made the vectors). One process holds a
shard at a time: a second one gets ``StoreUnavailable`` at once instead of corrupting it.

That rule is kept by snapshop's own lock (``snapshop.lock``, an exclusive ``flock``), taken
before the shard is touched at all. Qdrant Edge has a lock of its own, but a refused
``EdgeShard.load`` has already touched the holder's files by then (the holder's next flush fails
with "Tracker journal ... is shorter than expected"), and two processes creating a new store at
once would race. The flock is released by the kernel when its process dies, so a killed ingest
never leaves the store locked.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

try:
    import fcntl
except ImportError:  # Windows: Qdrant Edge's own lock is the only one there
    fcntl = None
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import qdrant_edge as qe

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
from engine.store.sparse_copy import copy_tree

RULES_FILE = "merchandising.json"  # rules and synonyms (engine.rules), beside the shard
_INDEX_KINDS = {"Keyword": "keyword", "Float": "number", "Integer": "number"}


def _graph(m: int = HNSW_M) -> qe.HnswIndexConfig:
    """The graphs of engine.store.indexing, threads chosen by Qdrant."""
    return qe.HnswIndexConfig(m=m, ef_construct=EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_KB)


_NO_GRAPH = _graph(m=0)  # m 0: no HNSW graph for this vector, its searches are exact over their filter
MAX_SEGMENTS = 16
_INT8 = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=INT8_QUANTILE, always_ram=True)


def stored_record(root: Path, collection: str) -> dict:
    """The model record of the embedded store at ``root``/``collection``, read without opening it."""
    meta_path = Path(root) / collection / "snapshop.json"
    if not meta_path.exists():
        raise StoreError(f"there is no store at {meta_path.parent} (SNAPSHOP_STORE__PATH); ingest a catalog first")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise StoreError(f"{meta_path} cannot be read ({e}); restore it, or remove {meta_path.parent} to "
                         "start the store again") from e


class EdgeStore(VectorStore):
    def __init__(self, root: Path, collection: str, info: ModelInfo, hnsw_ef: int = 64,
                 indexing: Indexing | None = None):
        self.info = info
        self.dir = Path(root) / collection
        self.hnsw_ef = hnsw_ef
        self.indexing = indexing = indexing or Indexing()
        # Searches of int8 copies, their best candidates rescored with the original vectors (Qdrant
        # ignores it for a vector without copies); scores of given candidates read the originals.
        self._rescored = qe.QuantizationSearchParams(rescore=True, oversampling=indexing.oversampling)
        self._exact = qe.QuantizationSearchParams(ignore=True)
        self._written = 0  # products written since the graphs were last built
        self._write_lock = threading.Lock()
        self.shard = None
        self._lock_file = self._take_lock()
        try:
            self._open_or_create(info)
        except BaseException:
            self._release_lock()
            raise

    def _take_lock(self):
        """The store's exclusive lock, or ``StoreUnavailable`` at once when another holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return None
        handle = open(self.dir / "snapshop.lock", "a+")  # noqa: SIM115 - held open while the store is
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise self._in_use_error() from e
        return handle

    def _release_lock(self) -> None:
        handle, self._lock_file = getattr(self, "_lock_file", None), None
        if handle is not None:
            handle.close()  # closing the descriptor releases the flock

    def _open_or_create(self, info: ModelInfo) -> None:
        meta_path = self.dir / "snapshop.json"
        shard_path = self.dir / "shard"
        if meta_path.exists():
            record = stored_record(self.dir.parent, self.dir.name)
            check_model(record, info, f"the store at {self.dir}")
            self.layout = VectorLayout.of_record(record)
            self.local_features = keeps_local_features(record, f"the store at {self.dir}")
            self.shard = self._open(lambda: qe.EdgeShard.load(str(shard_path)))
        else:
            if shard_path.exists():
                self._discard_unfinished(shard_path)
            record = model_record(info)
            self.layout = VectorLayout.of_record(record)
            self.shard = self._open(lambda: qe.EdgeShard.create(str(shard_path),
                                                                self._config(info, self.layout, self.indexing)))
            for name in KEYWORD_FIELDS:
                params = qe.KeywordIndexParams(enable_hnsw=name in GRAPH_FIELDS)
                self.shard.update(qe.UpdateOperation.create_field_index(name, params))
            for name in FLOAT_FIELDS:
                params = qe.FloatIndexParams(enable_hnsw=name in GRAPH_FIELDS)
                self.shard.update(qe.UpdateOperation.create_field_index(name, params))
            # Written last, and atomically: a store without it is an unfinished creation.
            _write_atomically(meta_path, json.dumps(record, indent=2))
            self.local_features = True

    def _discard_unfinished(self, shard_path: Path) -> None:
        """Remove a shard whose creation was cut short (a process killed before snapshop.json).

        Products are only written once a store is open, and it opens after snapshop.json is
        written, so such a shard is empty and nothing is lost; one that holds products is not
        touched. A shard another process holds (it may be creating it right now) is refused.
        """
        try:
            shard = qe.EdgeShard.load(str(shard_path))
        except Exception as e:  # not loadable at all: the creation stopped early
            if _in_use(str(e)):
                raise self._in_use_error() from e
            shard = None
        if shard is not None:
            try:
                held = shard.count(qe.CountRequest(exact=True))
            finally:
                shard.close()
            if held:
                raise StoreError(
                    f"{self.dir} holds {held} products but no snapshop.json, so the model that made them "
                    "is unknown; restore snapshop.json, or remove the folder to start the store again"
                )
        shutil.rmtree(shard_path)

    def _open(self, opener):
        try:
            return opener()
        except Exception as e:  # qdrant_edge raises plain exceptions with the Rust message
            message = str(e)
            if _in_use(message):
                raise self._in_use_error() from e
            if "segment" in message.lower() and ("exist" in message.lower() or "contains" in message.lower()):
                raise StoreError(f"{self.dir}: an unfinished store is in the way; remove the folder") from e
            raise StoreError(f"cannot open the store at {self.dir}: {message}") from e

    def _in_use_error(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the store at {self.dir} is in use by another snapshop process (an ingest or a "
            "server); wait for it to finish or stop it, then try again"
        )

    @staticmethod
    def _config(info: ModelInfo, layout: VectorLayout, indexing: Indexing) -> qe.EdgeConfig:
        dim = info.dim

        def dense(size: int, name: str, **kw) -> qe.EdgeVectorParams:
            return qe.EdgeVectorParams(size=size, distance=qe.Distance.Cosine,
                                       hnsw_config=None if graphed(name) else _NO_GRAPH,
                                       quantization_config=_INT8 if indexing.quantized(name) else None, **kw)

        maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
        vectors = {
            IMAGE_VECTOR: dense(dim, IMAGE_VECTOR, multivector_config=maxsim),
            CAPTION_VECTOR: dense(dim, CAPTION_VECTOR),
            SENTENCE_VECTOR: dense(SENTENCE_DIM, SENTENCE_VECTOR),
        }
        if info.look_dim:
            # Half precision: appearance vectors are 5x the joint ones, and fp16 loses no ranking.
            vectors[LOOK_VECTOR] = dense(info.look_dim, LOOK_VECTOR, multivector_config=maxsim,
                                         datatype=qe.VectorStorageDatatype.Float16)
        # Bytes on disk, read only for the candidates verified (engine.local_features).
        vectors[LOCAL_VECTOR] = qe.EdgeVectorParams(size=PACKED_WIDTH, distance=qe.Distance.Dot, on_disk=True,
                                                    multivector_config=maxsim, hnsw_config=_NO_GRAPH,
                                                    datatype=qe.VectorStorageDatatype.Uint8)
        return qe.EdgeConfig(
            vectors={layout.name(name): params for name, params in vectors.items()},
            sparse_vectors={BM25_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=_graph(),
            optimizers=_segments(indexing),
        )

    # --- writes -----------------------------------------------------------------------------
    def upsert(self, points: list[ProductPoint]) -> None:
        if not points:
            return
        edge_points = [
            qe.Point(id=point_id(p.product_id), payload=stored_payload(p),
                     vector=named_vectors(p, qe.SparseVector, self.layout, self.local_features)) for p in points
        ]
        with self._write_lock:
            self.shard.update(qe.UpdateOperation.upsert_points(edge_points))
            self._written += len(edge_points)
        if self.indexing.segment_products and self._written >= self.indexing.segment_products:
            self.optimize()  # a segment's worth: its graphs are built now, not all at the end

    def set_payload(self, product_id: str, values: dict) -> None:
        check_payload(values)
        with self._write_lock:
            self.shard.update(qe.UpdateOperation.set_payload([point_id(product_id)], values))

    def delete(self, product_ids: Iterable[str]) -> None:
        ids = [point_id(pid) for pid in product_ids]
        if ids:
            with self._write_lock:
                self.shard.update(qe.UpdateOperation.delete_points(ids))

    def warm(self) -> int:
        """Read every segment file once, so the first searches do not wait on the disk. Vectors,
        graphs and payloads are memory-mapped: at a million products a title search that found
        its pages out of memory took up to 75 ms, against 6 ms once they were in."""
        total, buffer = 0, bytearray(8 << 20)
        for path in sorted((self.dir / "shard" / "segments").rglob("*")):
            try:
                # The local features stay on disk: only the verified candidates' are read.
                if path.is_file() and f"vector_storage-{LOCAL_VECTOR}" not in path.parts[-4:-1]:
                    with open(path, "rb", buffering=0) as handle:
                        while read := handle.readinto(buffer):
                            total += read
            except OSError:  # a segment replaced by an optimisation meanwhile: its successor is read
                continue
        return total

    def copy_to(self, dest: Path) -> int:
        """A consistent copy of the store in the folder ``dest`` (new): written to disk first, and
        copied while no write can start (searches go on). Returns the products copied."""
        with self._write_lock:
            self.shard.flush()
            products = self.shard.count(qe.CountRequest(exact=True))
            copy_tree(self.dir, dest, ignore=shutil.ignore_patterns("snapshop.lock", "*.tmp"))
        return products

    def optimize(self) -> None:
        with self._write_lock:
            started = time.perf_counter()
            self.shard.optimize()
            self.shard.flush()
            self.index_seconds += time.perf_counter() - started
            self._written = 0

    # --- reads ------------------------------------------------------------------------------
    def get(self, product_ids: list[str], with_vectors: bool | list[str] = False) -> dict[str, StoredProduct]:
        if not product_ids:
            return {}
        records = self.shard.retrieve([point_id(pid) for pid in product_ids], with_payload=True,
                                      with_vector=self.layout.names(with_vectors))
        out = {}
        for record in records:
            payload = dict(record.payload or {})
            out[payload["product_id"]] = StoredProduct(payload["product_id"], payload,
                                                       *vectors_of(record.vector, self.layout))
        return out

    def query(self, vector, using, filters, limit, with_vectors=False, breadth=1) -> list[Hit]:
        query_vector = vector.astype(np.float32).tolist()
        if using in (IMAGE_VECTOR, LOOK_VECTOR):
            query_vector = [query_vector]  # a multivector is queried with a multivector (MaxSim)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query_vector, using=self.layout.name(using)),
            filter=_filter(filters),
            with_payload=True,
            with_vector=self.layout.names(with_vectors),
            params=qe.SearchParams(hnsw_ef=self.ef_for(using, limit, breadth), quantization=self._rescored),
        )
        return self._hits(request)

    def search_many(self, queries, filters, limit):
        if not queries:
            return []
        plan = self.batch_plan(queries, filters, limit)
        conditions = {own: _filter(own) for _, own, _, _ in plan}
        requests = [qe.QueryRequest(limit=wanted, query=self._nearest(q), filter=conditions[own],
                                    with_payload=False, with_vector=False,
                                    params=qe.SearchParams(hnsw_ef=ef, quantization=self._rescored))
                    for q, own, wanted, ef in plan]
        answers = self.shard.query_batch(qe.QueryBatchRequest(requests))
        return [[(p.id, p.score) for p in points] for points in answers]

    def score(self, keys, queries):
        if not keys or not queries:
            return [{} for _ in queries]
        # The id condition is resolved first, so Qdrant compares the query with just these few
        # hundred stored vectors, whatever the catalog's size.
        condition = qe.Filter(must=[qe.HasIdCondition(set(keys))])
        requests = [qe.QueryRequest(limit=len(keys), query=self._nearest(q), filter=condition, with_payload=False,
                                    with_vector=False, params=qe.SearchParams(quantization=self._exact))
                    for q in queries]
        answers = self.shard.query_batch(qe.QueryBatchRequest(requests))
        return [{p.id: p.score for p in points} for points in answers]

    def records(self, keys, fields=None, vectors=None):
        if not keys:
            return {}
        found = self.shard.retrieve(list(keys), with_payload=fields or True,
                                    with_vector=self.layout.names(vectors) or False)
        out = {}
        for record in found:
            payload = dict(record.payload or {})
            out[record.id] = StoredProduct(payload.get("product_id"), payload, *vectors_of(record.vector, self.layout))
        return out

    def _nearest(self, q: VectorQuery):
        using = self.layout.name(q.using)
        if q.terms is not None:
            return qe.Query.Nearest(qe.SparseVector(indices=q.terms[0], values=q.terms[1]), using=using)
        return qe.Query.Nearest(q.as_list(), using=using)

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
            hits.append(Hit(payload["product_id"], float(point.score), payload, *vectors_of(point.vector, self.layout)))
        return hits

    def count(self, filters: SearchFilters = SearchFilters()) -> int:
        # Without a filter Qdrant's estimate is the segments' live point counts, which is exact
        # (checked here after inserts, re-upserts, deletes and optimization) and costs nothing,
        # while the exact count visits every point: 4.7 ms at 100k products, and every search
        # asks for it (the ranker's caches are keyed by it).
        return self.shard.count(qe.CountRequest(filter=_filter(filters), exact=not filters.empty))

    def attribute_indexes(self) -> dict[str, str]:
        kinds = {}
        for key, index in (self.shard.info().payload_schema or {}).items():
            if key.startswith(PAYLOAD_PREFIX):
                kind = _INDEX_KINDS.get(str(index.data_type).rsplit(".", 1)[-1])
                if kind:
                    kinds[key.removeprefix(PAYLOAD_PREFIX)] = kind
        return kinds

    def index_attributes(self, kinds: dict[str, str]) -> None:
        missing = {name: kind for name, kind in kinds.items() if name not in self.attribute_indexes()}
        with self._write_lock:
            for name, kind in missing.items():
                # No HNSW links per value (GRAPH_FIELDS says why): a filter walks the main graph.
                params = (qe.KeywordIndexParams(enable_hnsw=False) if kind == "keyword"
                          else qe.FloatIndexParams(enable_hnsw=False))
                self.shard.update(qe.UpdateOperation.create_field_index(payload_key(name), params))

    def facet(self, key: str, filters: SearchFilters = SearchFilters(), limit: int = 100) -> dict[str, int]:
        response = self.shard.facet(qe.FacetRequest(key=key, limit=limit, exact=True, filter=_filter(filters)))
        return {str(hit.value): hit.count for hit in response.hits}

    def sample(self, size: int) -> list[StoredProduct]:
        request = qe.QueryRequest(limit=size, query=qe.Sample.Random, with_payload=["product_id"],
                                  with_vector=self.layout.names(sampled_vectors(self.info)))
        return [StoredProduct(p.payload["product_id"], dict(p.payload), *vectors_of(p.vector, self.layout))
                for p in self.shard.query(request)]

    def read_rules(self) -> dict:
        path = self.dir / RULES_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise StoreError(f"{path} cannot be read ({e}); restore it from a backup, or remove it to start "
                             "the rules again") from e

    def write_rules(self, document: dict) -> None:
        with self._write_lock:
            _write_atomically(self.dir / RULES_FILE, json.dumps(document, indent=2))

    def find(self, filters: SearchFilters, limit: int = 1000) -> list[StoredProduct]:
        records, _ = self.shard.scroll(qe.ScrollRequest(limit=limit, filter=_filter(filters), with_payload=True,
                                                        with_vector=False))
        return [StoredProduct(r.payload["product_id"], dict(r.payload)) for r in records]

    def scroll_ids(self, fields: list[str] | None = None, batch: int = 1000) -> Iterator[tuple[str, dict]]:
        wanted = ["product_id", *fields] if fields is not None else True
        offset = None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(offset=offset, limit=batch, with_payload=wanted, with_vector=False)
            )
            for record in records:
                payload = dict(record.payload or {})
                yield payload["product_id"], payload
            if offset is None:
                return

    def close(self) -> None:
        shard, self.shard = getattr(self, "shard", None), None
        try:
            if shard is not None:
                with self._write_lock:
                    shard.flush()
                    shard.close()
        finally:
            self._release_lock()


def _segments(indexing: Indexing) -> qe.EdgeOptimizersConfig:
    """Segments as EdgeStore.upsert makes them while loading: each optimize() turns the products
    written since the last one into one indexed segment. Qdrant merges segments (rebuilding their
    graphs) only past ``default_segment_number`` of them, and indexes an appendable segment
    together with an indexed one below that: MAX_SEGMENTS keeps the segments of up to 1.6M
    products apart (a million products in ten), each built once."""
    return qe.EdgeOptimizersConfig(default_segment_number=MAX_SEGMENTS,
                                   indexing_threshold=indexing.indexing_threshold_kb)


def _in_use(message: str) -> bool:
    return "WouldBlock" in message or "lock" in message.lower()


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file and rename it over ``path``: a kill leaves the old file or the new."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)



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
    for name, values in filters.attributes:
        must.append(qe.FieldCondition(key=payload_key(name), match=qe.MatchAny(list(values))))
    for name, low, high in filters.ranges:
        must.append(qe.FieldCondition(key=payload_key(name), range=qe.RangeFloat(gte=low, lte=high)))
    if filters.in_stock:
        must_not.append(qe.FieldCondition(key=payload_key(AVAILABILITY), match=qe.MatchAny(list(OUT_OF_STOCK_VALUES))))
        must_not.append(qe.FieldCondition(key=payload_key(STOCK), range=qe.RangeFloat(lte=0)))
    return qe.Filter(must=must or None, must_not=must_not or None)
