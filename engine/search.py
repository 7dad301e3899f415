"""Search by photo, by text, or both, with filters; one result per product.

Candidates come from Qdrant (the photos' multivectors, and the titles when there is text);
each candidate is then scored exactly on both signals from its stored vectors, so a product
found by only one signal is still judged on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from engine.encoder import Encoder
from engine.errors import InvalidQuery
from engine.settings import SearchSettings
from engine.store import IMAGE_VECTOR, TEXT_VECTOR, Hit, SearchFilters, VectorStore

CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 64


@dataclass
class SearchQuery:
    text: str | None = None
    image: Image.Image | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    k: int = 12
    photo_text_mix: float | None = None  # None: the settings' default
    title_weight: float | None = None


@dataclass
class SearchResult:
    product_id: str
    score: float
    title: str
    price: float | None
    category: str | None
    images: list[str]
    payload: dict
    signals: dict[str, float]


class Searcher:
    """Answers shoppers' queries against one store with one encoder."""

    def __init__(self, encoder: Encoder, store: VectorStore, settings: SearchSettings = SearchSettings()):
        self.encoder = encoder
        self.store = store
        self.settings = settings

    def search(self, query: SearchQuery) -> list[SearchResult]:
        text = (query.text or "").strip() or None
        if text is None and query.image is None:
            raise InvalidQuery("give a text, a photo, or both")
        if not 1 <= query.k <= self.settings.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.settings.max_k}, got {query.k}")
        mix = self.settings.photo_text_mix if query.photo_text_mix is None else query.photo_text_mix
        title_weight = self.settings.title_weight if query.title_weight is None else query.title_weight
        for name, value in (("photo_text_mix", mix), ("title_weight", title_weight)):
            if not 0.0 <= value <= 1.0:
                raise InvalidQuery(f"{name} must be between 0 and 1, got {value}")

        text_vector = self.encoder.encode_text(text) if text else None
        photo_vector = self.encoder.encode_images([query.image])[0] if query.image is not None else None
        visual_query = compose(photo_vector, text_vector, mix)
        # A photo alone says nothing a title can match better than the photos: titles only join
        # the score when the shopper typed something.
        title_query = visual_query if text_vector is not None else None
        if title_query is None:
            title_weight = 0.0

        limit = max(query.k * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
        candidates = {h.product_id: h for h in self.store.query(visual_query, IMAGE_VECTOR, query.filters, limit, True)}
        if title_query is not None and title_weight > 0:
            for hit in self.store.query(title_query, TEXT_VECTOR, query.filters, limit, True):
                candidates.setdefault(hit.product_id, hit)
        results = [self._score(hit, visual_query, title_query, title_weight) for hit in candidates.values()]
        results.sort(key=lambda r: r.score, reverse=True)
        return results[: query.k]

    def _score(self, hit: Hit, visual_query, title_query, title_weight: float) -> SearchResult:
        photo_score = float(np.max(hit.image_vectors @ visual_query)) if hit.image_vectors is not None else 0.0
        signals = {"photo": photo_score}
        score = photo_score
        if title_query is not None and hit.text_vector is not None:
            title_score = float(hit.text_vector @ title_query)
            signals["title"] = title_score
            score = (1.0 - title_weight) * photo_score + title_weight * title_score
        return to_result(hit, score, signals)


def compose(photo: np.ndarray | None, text: np.ndarray | None, text_share: float) -> np.ndarray:
    """One query vector from a photo and a text: their weighted sum, back on the unit sphere.

    In a joint space, "this photo" plus "in black" lands near black versions of what is shown.
    """
    if photo is None:
        return text
    if text is None:
        return photo
    mixed = (1.0 - text_share) * photo + text_share * text
    norm = float(np.linalg.norm(mixed))
    return mixed / norm if norm > 0 else photo


def to_result(hit: Hit, score: float, signals: dict[str, float]) -> SearchResult:
    payload = hit.payload
    return SearchResult(
        product_id=hit.product_id,
        score=round(score, 6),
        title=payload.get("title", ""),
        price=payload.get("price"),
        category=payload.get("category"),
        images=list(payload.get("images", [])),
        payload=payload,
        signals={k: round(v, 6) for k, v in signals.items()},
    )
