"""Search by photo, by text, or both, with filters; one result per product.

Candidates are gathered from Qdrant by each signal that applies (the photos' multivectors, the
titles' sentence vectors, the titles' BM25 terms, the titles in the joint space); each candidate
is then scored on every signal from its stored vectors and the scores fused by the hybrid ranker
(``engine.ranking``), so a product found by one signal is still judged on all of them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from engine.encoder import Encoder
from engine.errors import InvalidQuery, ProductNotFound
from engine.lexical import query_terms
from engine.ranking import Background, RankerWeights, bm25_share, bounded, fuse, price_closeness, softmax, squash
from engine.settings import SearchSettings
from engine.store import IMAGE_VECTOR, TEXT_VECTOR, Hit, SearchFilters, VectorStore
from engine.store.base import LOOK_VECTOR, SENTENCE_VECTOR

CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 64
POPULARITY_FIELDS = ("popularity", "sales", "rating")


@dataclass
class SearchQuery:
    text: str | None = None
    image: Image.Image | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    k: int = 12
    photo_text_mix: float | None = None  # None: the settings' default
    weights: dict[str, float] | None = None  # per-request overrides of the ranker weights
    price_target: float | None = None
    history: tuple[str, ...] = ()  # product ids the shopper viewed or bought
    # The photo already encoded (joint, look), e.g. when one photo is searched several ways.
    photo_vectors: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class SearchResult:
    product_id: str
    score: float
    title: str
    price: float | None
    category: str | None
    images: list[str]
    payload: dict
    signals: dict[str, float]  # calibrated value of each signal, 0..1
    explanation: dict[str, float] = field(default_factory=dict)  # each signal's share of the score


@dataclass
class SearchResponse:
    results: list[SearchResult]
    nothing_close: bool
    predicted_category: str | None = None


@dataclass
class _Query:
    """A query turned into vectors once."""

    visual: np.ndarray
    look: np.ndarray | None  # the photo's appearance vector, when there is a photo
    text_joint: np.ndarray | None
    sentence: np.ndarray | None
    terms: tuple[list[int], list[float]] | None
    personal: np.ndarray | None  # (history products, dim): each one's mean photo direction
    price_target: float | None
    has_photo: bool


class Searcher:
    """Answers shoppers' queries against one store with one encoder."""

    def __init__(self, encoder: Encoder, store: VectorStore, settings: SearchSettings = SearchSettings()):
        self.encoder = encoder
        self.store = store
        self.settings = settings
        self.weights = RankerWeights(**settings.weights)
        self._background: tuple[int, dict[str, np.ndarray]] | None = None
        self._categories: tuple[int, list[str], np.ndarray] | None = None
        self._lock = threading.Lock()

    # --- public -----------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> SearchResponse:
        text = (query.text or "").strip() or None
        if text is None and query.image is None and query.photo_vectors is None:
            raise InvalidQuery("give a text, a photo, or both")
        self._check_k(query.k)
        weights = self._weights(query.weights)
        mix = self.settings.photo_text_mix if query.photo_text_mix is None else query.photo_text_mix
        if not 0.0 <= mix <= 1.0:
            raise InvalidQuery(f"photo_text_mix must be between 0 and 1, got {mix}")
        if query.price_target is not None and not (math.isfinite(query.price_target) and query.price_target > 0):
            raise InvalidQuery(f"price_target must be a positive number, got {query.price_target}")

        text_joint = self.encoder.encode_text(text) if text else None
        photo, look = query.photo_vectors or (None, None)
        if photo is None and query.image is not None:
            joint, looks = self.encoder.encode_photos([query.image])
            photo, look = joint[0], looks[0]
        if text_joint is not None:
            # "Like this, but in black": the words change what is wanted, so matching the photo's
            # exact appearance would pull back the very product the shopper wants changed.
            look = None
        if text is not None and photo is not None:
            # With a photo, words ("in brown") describe a change, not a product: they act mostly
            # through the composed query vector; title matching alone would find brown anything.
            weights = weights.model_copy(update={"text": weights.text * mix, "bm25": weights.bm25 * mix})
        prepared = _Query(
            visual=compose(photo, text_joint, mix),
            look=look,
            text_joint=text_joint,
            sentence=self.encoder.encode_sentence(text) if text else None,
            terms=query_terms(text) if text else None,
            personal=self._history_vector(query.history) if weights.personal > 0 else None,
            price_target=query.price_target,
            has_photo=photo is not None,
        )
        limit = max(query.k * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
        candidates, bm25 = self._candidates(prepared, weights, query.filters, limit)
        category_probs, predicted = self._category_probs(prepared.visual) if weights.category > 0 else ({}, None)
        backgrounds = self._backgrounds(prepared)
        best_bm25 = max(bm25.values(), default=0.0)
        results = [self._rank(hit, prepared, weights, backgrounds, bm25, best_bm25, category_probs)
                   for hit in candidates.values()]
        results.sort(key=lambda r: r.score, reverse=True)
        results = results[: query.k]
        nothing_close = not results or max(r.score for r in results) < self.settings.nothing_close
        return SearchResponse(results, nothing_close, predicted)

    def similar(self, product_id: str, k: int = 12, filters: SearchFilters = SearchFilters(),
                negative_ids: tuple[str, ...] = ()) -> list[SearchResult]:
        """More like ``product_id`` (and less like ``negative_ids``), itself excluded: Qdrant recommend."""
        self._check_k(k)
        stored = self.store.get([product_id, *negative_ids], with_vectors=True)
        if product_id not in stored or stored[product_id].image_vectors is None:
            raise ProductNotFound(f"no product with id '{product_id}'")
        missing = [pid for pid in negative_ids if pid not in stored]
        if missing:
            raise ProductNotFound(f"no product with id '{missing[0]}' (given as a negative example)")
        positive = _mean_direction(stored[product_id].image_vectors)
        negatives = [_mean_direction(stored[pid].image_vectors) for pid in negative_ids]
        filters = SearchFilters(filters.categories, filters.min_price, filters.max_price,
                                (*filters.exclude_ids, product_id, *negative_ids))
        hits = self.store.recommend([positive], negatives, filters, k)
        return [to_result(hit, hit.score, {"image": hit.score}, {"image": 1.0}) for hit in hits]

    def facets(self, filters: SearchFilters = SearchFilters(), price_buckets: int = 8) -> dict:
        """Counts per category and a price histogram under ``filters``."""
        categories = self.store.facet("category", filters, limit=500)
        total = self.store.count(filters)
        histogram = []
        if total:
            low, high = self._price_range(filters)
            if low is not None and high is not None:
                edges = np.linspace(low, high, price_buckets + 1) if high > low else np.array([low, high])
                for i in range(len(edges) - 1):
                    upper = float(edges[i + 1])
                    bucket = SearchFilters(filters.categories, float(edges[i]), upper)
                    count = self.store.count(bucket)
                    if i > 0:  # bucket bounds are inclusive: do not count an edge price twice
                        count -= self.store.count(SearchFilters(filters.categories, float(edges[i]), float(edges[i])))
                    histogram.append({"min": round(float(edges[i]), 2), "max": round(upper, 2), "count": count})
        return {"total": total, "categories": categories, "price_histogram": histogram}

    # --- internals --------------------------------------------------------------------------
    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.settings.max_k}, got {k}")

    def _weights(self, overrides: dict[str, float] | None) -> RankerWeights:
        if overrides:
            unknown = set(overrides) - set(RankerWeights.model_fields)
            if unknown:
                raise InvalidQuery(f"unknown ranker weight(s): {', '.join(sorted(unknown))}; "
                                   f"known: {', '.join(RankerWeights.model_fields)}")
            try:
                return RankerWeights(**{**self.weights.model_dump(), **overrides})
            except ValueError as e:
                raise InvalidQuery(f"bad ranker weights: {e.errors()[0]['msg'] if hasattr(e, 'errors') else e}") from e
        return self.weights

    def _candidates(self, q: _Query, weights: RankerWeights, filters: SearchFilters, limit: int):
        candidates: dict[str, Hit] = {}

        def add(hits):
            for hit in hits:
                candidates.setdefault(hit.product_id, hit)

        add(self.store.query(q.visual, IMAGE_VECTOR, filters, limit, with_vectors=True))
        if q.look is not None and weights.look > 0 and self.encoder.info.look_dim:
            add(self.store.query(q.look, LOOK_VECTOR, filters, limit, with_vectors=True))
        if weights.caption > 0:
            add(self.store.query(q.visual, TEXT_VECTOR, filters, limit, with_vectors=True))
        bm25: dict[str, float] = {}
        if q.sentence is not None and weights.text > 0:
            add(self.store.query(q.sentence, SENTENCE_VECTOR, filters, limit, with_vectors=True))
        if q.terms is not None and weights.bm25 > 0:
            lexical = self.store.query_terms(q.terms, filters, limit, with_vectors=True)
            bm25 = {hit.product_id: hit.score for hit in lexical}
            add(lexical)
        if q.personal is not None:
            add(self.store.query(_mean_direction(q.personal), IMAGE_VECTOR, filters, limit // 2, with_vectors=True))
        return candidates, bm25

    def _rank(self, hit: Hit, q: _Query, weights: RankerWeights, backgrounds: dict[str, Background],
              bm25: dict, best_bm25: float, category_probs: dict) -> SearchResult:
        evidence: dict[str, float] = {}  # each signal in standard deviations above its background
        if hit.image_vectors is not None:
            evidence["image"] = backgrounds["image"].z(float(np.max(hit.image_vectors @ q.visual)))
        if q.look is not None and hit.look_vectors is not None and "look" in backgrounds:
            evidence["look"] = backgrounds["look"].z(float(np.max(hit.look_vectors @ q.look)))
        if hit.text_vector is not None and weights.caption > 0:
            evidence["caption"] = backgrounds["caption"].z(float(hit.text_vector @ q.visual))
        if q.sentence is not None and hit.sentence_vector is not None:
            evidence["text"] = backgrounds["text"].z(float(hit.sentence_vector @ q.sentence))
        if q.terms is not None:
            evidence["bm25"] = bounded(bm25_share(bm25.get(hit.product_id, 0.0), best_bm25))
        if category_probs:
            evidence["category"] = bounded(category_probs.get(hit.payload.get("category"), 0.0))
        if q.price_target is not None:
            evidence["price"] = bounded(price_closeness(hit.payload.get("price"), q.price_target))
        popularity = _popularity(hit.payload)
        if popularity is not None:
            evidence["popularity"] = bounded(popularity)
        if q.personal is not None and hit.image_vectors is not None:
            # As close as the candidate's nearest photo is to the nearest product in the history.
            evidence["personal"] = backgrounds["personal"].z(float(np.max(hit.image_vectors @ q.personal.T)))
        score, shares = fuse(evidence, weights)
        signals = {name: squash(value) for name, value in evidence.items()}
        return to_result(hit, score, signals, shares)

    def _backgrounds(self, q: _Query) -> dict[str, Background]:
        """Each dense signal's scores for this query against a random sample of the catalog."""
        sample = self._background_sample()
        out = {"image": Background.of(sample["image"] @ q.visual),
               "caption": Background.of(sample["caption"] @ q.visual)}
        if q.sentence is not None:
            out["text"] = Background.of(sample["text"] @ q.sentence)
        if q.look is not None and len(sample["look"]) > 1:
            out["look"] = Background.of(sample["look"] @ q.look)
        if q.personal is not None:
            out["personal"] = Background.of((sample["image"] @ q.personal.T).max(axis=1))
        return out

    def _background_sample(self, size: int = 512) -> dict[str, np.ndarray]:
        count = self.store.count()
        with self._lock:
            if self._background is None or self._background[0] != count:
                products = self.store.sample(size)
                dim = self.encoder.info.dim

                def stack(values, width):
                    return np.stack(values) if values else np.zeros((1, width), dtype=np.float32)

                self._background = (count, {
                    "image": stack([_mean_direction(p.image_vectors) for p in products if p.image_vectors is not None], dim),
                    "caption": stack([p.text_vector for p in products if p.text_vector is not None], dim),
                    "text": stack([p.sentence_vector for p in products if p.sentence_vector is not None], 384),
                    "look": stack([_mean_direction(p.look_vectors) for p in products if p.look_vectors is not None],
                                  max(self.encoder.info.look_dim, 1)),
                })
            return self._background[1]

    def _category_probs(self, visual: np.ndarray) -> tuple[dict[str, float], str | None]:
        """Zero-shot: the query against "a photo of <category>" for every category in the store."""
        names, vectors = self._category_vectors()
        if not names:
            return {}, None
        probs = softmax(vectors @ visual, temperature=0.03)
        top = float(probs.max())
        # Relative to the most likely category, so the signal is 1 for the predicted one.
        return {name: float(p / top) for name, p in zip(names, probs)}, names[int(np.argmax(probs))]

    def _category_vectors(self) -> tuple[list[str], np.ndarray]:
        count = self.store.count()
        with self._lock:
            if self._categories is None or self._categories[0] != count:
                names = sorted(self.store.facet("category", limit=1000))
                vectors = self.encoder.encode_texts([f"a photo of {name}" for name in names]) if names else np.zeros((0,))
                self._categories = (count, names, vectors)
            return self._categories[1], self._categories[2]

    def _history_vector(self, history: tuple[str, ...]) -> np.ndarray | None:
        if not history:
            return None
        stored = self.store.get(list(history)[:50], with_vectors=True)
        vectors = [_mean_direction(v.image_vectors) for v in stored.values() if v.image_vectors is not None]
        return np.stack(vectors) if vectors else None

    def _price_range(self, filters: SearchFilters) -> tuple[float | None, float | None]:
        low = self.store.extreme_price(filters, lowest=True)
        high = self.store.extreme_price(filters, lowest=False)
        return low, high


def compose(photo: np.ndarray | None, text: np.ndarray | None, text_share: float) -> np.ndarray:
    """One query vector from a photo and a text: their weighted sum, back on the unit sphere.

    In a joint space, "this photo" plus "in black" lands near black versions of what is shown.
    """
    if photo is None:
        return text
    if text is None:
        return photo
    return _mean_direction(np.stack([(1.0 - text_share) * photo, text_share * text]), weights_given=True)


def _mean_direction(vectors: np.ndarray, weights_given: bool = False) -> np.ndarray:
    mean = vectors.sum(axis=0) if weights_given else vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else vectors[0].astype(np.float32)


def _popularity(payload: dict) -> float | None:
    fields = payload.get("fields") or {}
    for name in POPULARITY_FIELDS:
        value = fields.get(name, payload.get(name))
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and number >= 0:
            return number / (number + 10.0) if name != "rating" else min(number / 5.0, 1.0)
    return None


def to_result(hit: Hit, score: float, signals: dict[str, float], shares: dict[str, float]) -> SearchResult:
    payload = hit.payload
    return SearchResult(
        product_id=hit.product_id,
        score=round(score, 6),
        title=payload.get("title", ""),
        price=payload.get("price"),
        category=payload.get("category"),
        images=list(payload.get("images", [])),
        payload=payload,
        signals={k: round(v, 4) for k, v in signals.items()},
        explanation={k: round(v, 4) for k, v in shares.items()},
    )
