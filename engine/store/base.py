"""What the engine asks of a vector store, whichever Qdrant answers it.

One Qdrant point per product: named vectors ``image`` (a multivector, one row per photo, scored
MaxSim so that several photos give one product), ``caption`` and ``text`` (the title in the joint
space, and as a sentence embedding), ``look`` and ``bm25``, payload with the product's fields. Point ids are UUIDs derived from the shop's product id, so re-ingesting a
product overwrites it instead of duplicating it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from engine.errors import InvalidQuery, StoreModelMismatch
from engine.model_info import ModelInfo
from engine.records import check_payload

log = logging.getLogger(__name__)

IMAGE_VECTOR = "image"  # photos in the joint space (multivector, MaxSim)
CAPTION_VECTOR = "caption"  # the title in the joint space: what the signal ``caption`` reads
SENTENCE_VECTOR = "text"  # the title as a MiniLM sentence embedding: what the signal ``text`` reads
BM25_VECTOR = "bm25"  # the title's terms, scored BM25 (sparse, IDF)
LOOK_VECTOR = "look"  # photos' appearance: the image trunk's pooled features (multivector, MaxSim)
# Photos' local features (engine.local_features.pack): uint8 rows on disk, read back only for the
# few candidates a photo query verifies; never searched, so it has no graph.
LOCAL_VECTOR = "local"
SENTENCE_DIM = 384
_ID_NAMESPACE = uuid.UUID("6f1c3c8e-6a57-4d39-9b6e-2f5a3a1f0c42")

# Payload fields with an index: filters on them stay fast at a million products.
KEYWORD_FIELDS = ("category", "product_id", "fields.availability")
FLOAT_FIELDS = ("price", "fields.stock")
# Fields whose values get HNSW links of their own (Qdrant's payload-aware graph), so a filter on
# one category still walks a connected graph. Not the price: a float index splits the range into
# blocks of a few thousand products and would build a graph per block, per vector, doubling the
# index build of a million products for a filter that the category graph already narrows well;
# not product_id, which is unique (no value is big enough for a graph).
GRAPH_FIELDS = ("category",)
# Search breadth per vector, as a multiple of the hnsw_ef setting. Short titles crowd together
# (a shop sells the same "Men Black Shirt" in a hundred cuts): at 100k products the titles' HNSW
# recall@10 was 0.92 at ef 64 and 0.98 at 256, for 0.3 ms more; the other vectors are past 0.99.
EF_MULTIPLE = {SENTENCE_VECTOR: 4}


# The store's layout version. Schema 4 named the title's vectors after the signals that read them;
# stores made before named the joint-space title "text" and its sentence embedding "title".
SCHEMA = 4
_SCHEMA_3_NAMES = {CAPTION_VECTOR: "text", SENTENCE_VECTOR: "title"}


@dataclass(frozen=True)
class VectorLayout:
    """Today's vector names as one store spells them: stores made before keep opening, mapped once,
    here, from the schema they record; every name a store sends to Qdrant or reads back goes
    through its layout."""

    stored: dict[str, str] = field(default_factory=dict)  # today's name -> the store's, where they differ

    @classmethod
    def of_record(cls, record: dict) -> VectorLayout:
        return cls(dict(_SCHEMA_3_NAMES) if int(record.get("schema", 3)) < 4 else {})

    def name(self, today: str) -> str:
        """The store's name of the vector named ``today`` in this code."""
        return self.stored.get(today, today)

    def names(self, wanted: bool | list[str] | None):
        """``with_vectors`` as the store takes it: all, none, or the named ones."""
        return [self.name(n) for n in wanted] if isinstance(wanted, list) else wanted

    def today(self, vectors) -> dict | None:
        """Named vectors read back from the store, under today's names."""
        if not isinstance(vectors, dict) or not self.stored:
            return vectors
        back = {stored: today for today, stored in self.stored.items()}
        return {back.get(name, name): value for name, value in vectors.items()}


CURRENT_LAYOUT = VectorLayout()

@lru_cache(maxsize=65536)
def point_id(product_id: str) -> str:
    """The Qdrant point id of a shop's product id (Qdrant ids are integers or UUIDs). Any string
    has one, even one that is not valid Unicode (a lookup of it finds nothing, and no error)."""
    name = str(product_id).encode("utf-8", "surrogatepass")
    # uuid.uuid5 itself, which takes text only (and refuses a lone surrogate): RFC 4122 version 5.
    digest = hashlib.sha1(_ID_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


@dataclass
class ProductPoint:
    """A product ready to store: unit vectors and payload."""

    product_id: str
    image_vectors: np.ndarray  # (photos, dim)
    caption_vector: np.ndarray  # (dim,): the title in the joint space
    payload: dict
    sentence_vector: np.ndarray | None = None  # (384,)
    terms: tuple[list[int], list[float]] | None = None  # BM25 sparse (indices, values)
    look_vectors: np.ndarray | None = None  # (photos, look_dim)
    local_features: np.ndarray | None = None  # (keypoints, PACKED_WIDTH) uint8, engine.local_features.pack


@dataclass
class StoredProduct:
    product_id: str
    payload: dict
    image_vectors: np.ndarray | None = None
    caption_vector: np.ndarray | None = None
    sentence_vector: np.ndarray | None = None
    look_vectors: np.ndarray | None = None
    local_features: np.ndarray | None = None


@dataclass
class Hit:
    product_id: str
    score: float
    payload: dict
    image_vectors: np.ndarray | None = None
    caption_vector: np.ndarray | None = None
    sentence_vector: np.ndarray | None = None
    look_vectors: np.ndarray | None = None
    local_features: np.ndarray | None = None


@dataclass(frozen=True)
class VectorQuery:
    """One named vector's query: a dense vector, or BM25 terms for the sparse ``bm25`` vector."""

    using: str
    vector: np.ndarray | None = None
    terms: tuple[list[int], list[float]] | None = None
    limit: int | None = None  # candidates wanted from this query; None: the call's limit
    breadth: int = 1  # a multiple of the HNSW search breadth, for queries unlike the stored vectors
    filters: SearchFilters | None = None  # this query's filters; None: the call's filters

    @property
    def multivector(self) -> bool:
        return self.using in (IMAGE_VECTOR, LOOK_VECTOR)

    def as_list(self) -> list:
        """The dense vector as Qdrant takes it: a multivector is queried with a multivector (MaxSim)."""
        values = self.vector.astype(np.float32).tolist()
        return [values] if self.multivector else values


@dataclass(frozen=True)
class SearchFilters:
    """Merchandiser and shopper filters; every hit must satisfy all of them."""

    categories: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    exclude_ids: tuple[str, ...] = field(default=())
    # Attributes (engine.attributes): any-of values per keyword attribute, (name, min, max) per number.
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()
    in_stock: bool = False  # leave out what is out of stock (engine.stock)

    def __post_init__(self):
        for name in ("min_price", "max_price"):
            value = getattr(self, name)
            if value is not None and (not np.isfinite(value) or value < 0):
                raise InvalidQuery(f"{name} must be a finite number >= 0, got {value}")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidQuery(f"min_price {self.min_price} is above max_price {self.max_price}")

    @property
    def empty(self) -> bool:
        return (not self.categories and self.min_price is None and self.max_price is None and not self.exclude_ids
                and not self.attributes and not self.ranges and not self.in_stock)

    def but(self, **changes) -> SearchFilters:
        """These filters with some fields changed."""
        return replace(self, **changes)


class VectorStore(ABC):
    """A Qdrant collection of products made by one model."""

    info: ModelInfo
    hnsw_ef: int = 64
    layout: VectorLayout = CURRENT_LAYOUT  # how this store names the vectors (VectorLayout)
    index_seconds: float = 0.0  # spent building graphs in this process (embedded store; a server's are its own)

    def ef_for(self, using: str, limit: int, breadth: int = 1) -> int:
        """The HNSW search breadth for one search of ``limit`` results on the vector ``using``;
        ``breadth`` multiplies it for one query (``VectorQuery.breadth``)."""
        return max(self.hnsw_ef * EF_MULTIPLE.get(using, 1) * breadth, limit)

    def batch_plan(self, queries: list[VectorQuery], filters: SearchFilters,
                   limit: int) -> list[tuple[VectorQuery, SearchFilters, int, int]]:
        """Each query of one ``search_many`` batch with its filters, its number of results and its
        HNSW breadth (``batched_breadths``): what every store's batch is built from."""
        plan = []
        for q, (own, breadth) in zip(queries, batched_breadths(queries, filters)):
            wanted = q.limit or limit
            plan.append((q, own, wanted, self.ef_for(q.using, wanted, breadth)))
        return plan

    @abstractmethod
    def upsert(self, points: list[ProductPoint]) -> None: ...

    @abstractmethod
    def set_payload(self, product_id: str, values: dict) -> None:
        """Change payload fields of one product without touching its vectors."""

    @abstractmethod
    def delete(self, product_ids: Iterable[str]) -> None: ...

    @abstractmethod
    def get(self, product_ids: list[str], with_vectors: bool | list[str] = False) -> dict[str, StoredProduct]:
        """Stored products by id; ``with_vectors``: all named vectors, none, or the ones named."""

    @abstractmethod
    def query(
        self, vector: np.ndarray, using: str, filters: SearchFilters, limit: int, with_vectors: bool = False,
        breadth: int = 1,
    ) -> list[Hit]:
        """Nearest products to ``vector`` on the named vector ``using``."""

    # The ranker's calls. They speak in point keys (Qdrant's own ids, whatever type the client
    # gives them) rather than product ids: a key needs no payload read to be known, and only the
    # candidates that are ranked have their payload read, and only the fields ranking needs.
    @abstractmethod
    def search_many(self, queries: list[VectorQuery], filters: SearchFilters,
                    limit: int) -> list[list[tuple[Hashable, float]]]:
        """Each query's nearest products as (point key, score), best first, run as one batch
        (under its own ``VectorQuery.filters`` where it has them, else ``filters``), with the
        breadths of ``batched_breadths``."""

    @abstractmethod
    def score(self, keys: list[Hashable], queries: list[VectorQuery]) -> list[dict[Hashable, float]]:
        """Each query's score for each of the points ``keys``, computed by Qdrant (no vector leaves
        the store); a point without the query's vector, or with no BM25 term in common, is absent."""

    @abstractmethod
    def records(self, keys: list[Hashable], fields: list[str] | None = None,
                vectors: list[str] | None = None) -> dict[Hashable, StoredProduct]:
        """The points ``keys`` with their payload (all of it, or the ``fields`` named, dotted for
        nested ones) and the named ``vectors``; a point deleted meanwhile is absent."""

    @abstractmethod
    def recommend(self, positives: list[np.ndarray], negatives: list[np.ndarray], filters: SearchFilters,
                  limit: int) -> list[Hit]:
        """Products like the positive photo vectors and unlike the negative ones (Qdrant recommend)."""

    @abstractmethod
    def extreme_price(self, filters: SearchFilters, lowest: bool) -> float | None:
        """The lowest (or highest) price under ``filters``, from the price index."""

    @abstractmethod
    def count(self, filters: SearchFilters = SearchFilters()) -> int: ...

    @abstractmethod
    def attribute_indexes(self) -> dict[str, str]:
        """The attributes the store holds payload indexes for: name -> 'keyword' or 'number'."""

    @abstractmethod
    def index_attributes(self, kinds: dict[str, str]) -> None:
        """Create the payload indexes of attributes (name -> 'keyword' or 'number') not indexed yet."""

    @abstractmethod
    def facet(self, key: str, filters: SearchFilters = SearchFilters(), limit: int = 100) -> dict[str, int]: ...

    @abstractmethod
    def sample(self, size: int) -> list[StoredProduct]:
        """Up to ``size`` products with their vectors, spread over the catalog."""

    @abstractmethod
    def read_rules(self) -> dict:
        """The merchandising document (rules, synonyms) kept with the products; {} when none."""

    @abstractmethod
    def write_rules(self, document: dict) -> None:
        """Replace the merchandising document, durably (a crash leaves the old one or the new)."""

    @abstractmethod
    def find(self, filters: SearchFilters, limit: int = 1000) -> list[StoredProduct]:
        """Up to ``limit`` products under ``filters`` with their payload, in id order (a variant
        family's products, say)."""

    @abstractmethod
    def scroll_ids(self, fields: list[str] | None = None, batch: int = 1000) -> Iterator[tuple[str, dict]]:
        """Every product id with the payload ``fields`` named (all of it when None), read in batches."""

    @abstractmethod
    def optimize(self) -> None:
        """Build indexes after a bulk write (embedded store); a server does this by itself."""

    def warm(self) -> int:
        """Read the store's files into the page cache; returns the bytes read. A server keeps
        its own collections warm, so only the embedded store has anything to do."""
        return 0

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_model(stored: dict, info: ModelInfo, where: str) -> None:
    """Refuse to mix vectors of two models in one collection."""
    if (stored.get("model"), stored.get("model_version"), stored.get("dim"), stored.get("look_dim", 0)) != (
            info.name, info.version, info.dim, info.look_dim):
        raise StoreModelMismatch(
            f"{where} holds vectors made by model '{stored.get('model')}@{stored.get('model_version')}' "
            f"({stored.get('dim')}-d), but '{info.tag}' ({info.dim}-d) is loaded. Vectors of two models "
            "cannot be compared: load that model (SNAPSHOP_MODEL__NAME / SNAPSHOP_MODEL__WEIGHTS), or "
            "re-index into a new store (another SNAPSHOP_STORE__PATH or SNAPSHOP_STORE__COLLECTION) "
            "with `snapshop ingest`."
        )


def recorded_info(record: dict) -> ModelInfo:
    """The model a store's record (``model_record``) names."""
    return ModelInfo(record["model"], record["model_version"], int(record["dim"]), int(record.get("look_dim", 0)))


def model_record(info: ModelInfo) -> dict:
    # local_features: the store has the LOCAL_VECTOR (stores made before it had none, and are
    # still searched, without the match signal, until re-indexed).
    return {"model": info.name, "model_version": info.version, "dim": info.dim, "look_dim": info.look_dim,
            "schema": SCHEMA, "local_features": True}


def sampled_vectors(info: ModelInfo) -> list[str]:
    """What a random sample of the catalog (the ranker's backgrounds) reads: every vector but the
    local features, which are never compared with a background (and cost ~30 KB a product)."""
    return [IMAGE_VECTOR, CAPTION_VECTOR, SENTENCE_VECTOR, *([LOOK_VECTOR] if info.look_dim else [])]


def keeps_local_features(record: dict, where: str) -> bool:
    """Whether a store made with this model record has the LOCAL_VECTOR; says so when it has not."""
    if record.get("local_features"):
        return True
    log.warning("%s was made before photos' local features were stored: photo searches run without the "
                "'match' signal (geometric verification) until it is re-indexed with `snapshop ingest` "
                "into a new store", where)
    return False


def stored_payload(p: ProductPoint) -> dict:
    """The payload a point is stored with, refused (``InvalidProduct``) when the store could not
    read it back: every write goes through here or ``check_payload``, whoever validated before."""
    payload = {**p.payload, "product_id": p.product_id}
    check_payload(payload)
    return payload


def vectors_of(vector, layout: VectorLayout = CURRENT_LAYOUT) -> tuple[np.ndarray | None, ...]:
    """(photos, title in joint space, title sentence, photos' appearance, photos' local features)
    from named vectors."""
    vector = layout.today(vector)
    if not isinstance(vector, dict):
        return None, None, None, None, None

    def dense(name, dtype=np.float32):
        value = vector.get(name)
        return np.asarray(value, dtype=dtype) if value is not None else None

    return (dense(IMAGE_VECTOR), dense(CAPTION_VECTOR), dense(SENTENCE_VECTOR), dense(LOOK_VECTOR),
            dense(LOCAL_VECTOR, np.uint8))


def named_vectors(p: ProductPoint, sparse_vector, layout: VectorLayout = CURRENT_LAYOUT, local: bool = True) -> dict:
    """A product's named vectors as the store takes them; ``sparse_vector`` is the client's class
    (Qdrant Edge and qdrant-client each have their own, with the same fields); ``local``: whether
    the store keeps local features."""
    vectors = {IMAGE_VECTOR: p.image_vectors.astype(np.float32).tolist(),
               CAPTION_VECTOR: p.caption_vector.astype(np.float32).tolist()}
    if p.sentence_vector is not None:
        vectors[SENTENCE_VECTOR] = p.sentence_vector.astype(np.float32).tolist()
    if p.look_vectors is not None:
        vectors[LOOK_VECTOR] = p.look_vectors.astype(np.float32).tolist()
    if local and p.local_features is not None and len(p.local_features):
        vectors[LOCAL_VECTOR] = p.local_features.astype(np.float32).tolist()
    if p.terms is not None and p.terms[0]:
        vectors[BM25_VECTOR] = sparse_vector(indices=list(p.terms[0]), values=list(p.terms[1]))
    return {layout.name(name): value for name, value in vectors.items()}


def batched_breadths(queries: list[VectorQuery], filters: SearchFilters) -> list[tuple[SearchFilters, int]]:
    """Each query's filters and HNSW breadth multiple as one batch runs it.

    Qdrant runs a batch's searches of one vector under one filter with the same parameters as one
    pass over the filtered points: at a million products, a photo composed with words and the
    words alone searched against the photos of the photo's category cost 1.01x one search in one
    batch with the same breadth, 1.62x with breadths 8 and 4, and 2.11x as two calls. So such
    searches take the widest breadth among them; a filtered search that narrow reads its points
    exactly whatever the breadth, and the widest breadth is the one its own query asked for.
    """
    own = [q.filters if q.filters is not None else filters for q in queries]
    widest: dict[tuple, int] = {}
    keys = []
    for q, f in zip(queries, own):
        key = next((k for k in widest if k[0] == q.using and k[1] == f), (q.using, f))
        widest[key] = max(widest.get(key, 1), q.breadth)
        keys.append(key)
    return [(f, widest[key]) for f, key in zip(own, keys)]
