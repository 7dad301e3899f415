"""The ranking signals as data: one registry entry per signal, everything else derived from it.

A signal is a name with a default weight and its bounds, the help text merchandisers read, the
stored vector it reads (if any), whether its search on that vector gathers candidates or only
scores the ones others found, and one scoring function that gives each candidate's evidence in
standard deviations above the query's background (``engine.ranking``). ``RankerWeights``, the
store's score-only vectors, the weights' help in the CLI and the API, the merchandiser page's
sliders and the order of every explanation come from the registry; ``Searcher.plan`` reads it
to decide which searches a query makes.

Adding a signal is one ``Signal`` (with its scoring function) in ``SIGNALS``, or, for a
Searcher of its own, ``SIGNALS.with_signal(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from engine.local_features import LocalFeatures, best_inliers_of_each, unpack
from engine.photo_kind import PhotoKind
from engine.ranking import Background, bm25_share, bounded, match_evidence, price_closeness
from engine.regions import Region
from engine.sorting import POPULARITY_FIELDS, popularity_of
from engine.store.base import (
    BM25_VECTOR,
    CAPTION_VECTOR,
    IMAGE_VECTOR,
    LOCAL_VECTOR,
    LOOK_VECTOR,
    SENTENCE_VECTOR,
    VectorQuery,
)

# The match signal's weight, picked on half of the grocery shopper photos (docs/quality.md).
MATCH_WEIGHT = 2.0

# Whether a signal's search on its stored vector brings candidates: always, only when the query
# has no photo, or never (it only scores the candidates other signals found).
Gathers = Literal["always", "without_photo", "never"]


@dataclass
class PreparedQuery:
    """A query turned into vectors once, with the weights that rank it."""

    visual: np.ndarray  # the photo, the text or both, composed in the joint space
    photo: np.ndarray | None  # the photo alone in the joint space, when there is one
    look: np.ndarray | None  # the photo's appearance vector, when there is a photo and no words
    text_joint: np.ndarray | None  # the words in the joint space
    sentence: np.ndarray | None  # the words as a sentence embedding
    terms: tuple[list[int], list[float]] | None  # the words' BM25 terms
    personal: np.ndarray | None  # (history products, dim): each one's mean photo direction
    price_target: float | None
    has_photo: bool
    weights: BaseModel  # the registry's weights model, after the request's overrides
    limit: int  # candidates each gathering search brings
    kind: PhotoKind | None = None  # what a query photo shows, from its nearest catalog photos
    local: LocalFeatures | None = None  # a photo-only query's local features, when it is verified
    region: Region | None = None  # the box of the query photo searched
    photo_look: np.ndarray | None = None  # the whole photo's appearance vector as encoded, before any centre


@dataclass
class Candidates:
    """What a scoring function reads: the candidates, their stored fields and the store's scores."""

    keys: list
    payloads: list[dict]  # each candidate's ranking fields (``Signal.fields``)
    records: dict  # point key -> StoredProduct, with the vectors the plan asked for
    scores: dict[str, dict]  # per store-scored signal: point key -> raw score
    queries: dict[str, VectorQuery]  # per store-scored signal: its query
    query: PreparedQuery
    sample: dict[str, np.ndarray]  # per stored vector: a random sample of the catalog's (rows, dim)
    category_probs: dict[str, float] = field(default_factory=dict)


Evidence = Callable[["Signal", Candidates], "np.ndarray | None"]


@dataclass(frozen=True)
class Signal:
    """One ranking signal. ``evidence`` gives each candidate's evidence (z units), NaN where the
    signal does not apply to it, or None when it does not apply to the query at all."""

    name: str
    default: float
    maximum: float
    label: str  # what the merchandiser page calls it
    help: str
    evidence: Evidence
    vector: str | None = None  # the stored vector it reads
    gathers: Gathers = "never"
    # Its query on ``vector``, scored by Qdrant; None: the signal does not apply to this query.
    probe: Callable[[PreparedQuery], VectorQuery | None] | None = None
    scored_by_store: bool = True  # False: its probe only gathers; ``evidence`` reads the records
    applies: Callable[[PreparedQuery], bool] = lambda q: True  # for signals without a probe
    fields: tuple[str, ...] = ()  # payload fields it reads
    required: bool = False  # gathers even at weight 0, so every query has candidates
    # A re-ranking signal: scored after the others are fused, on the best
    # ``SearchSettings.verify_top`` candidates only, reading this stored vector for those alone
    # (too costly to read or to score for every candidate).
    reranks: str | None = None

    def gathers_for(self, query: PreparedQuery) -> bool:
        return self.gathers == "always" or (self.gathers == "without_photo" and not query.has_photo)


class WeightsBase(BaseModel):
    """How much each signal counts; 0 switches it off. Merchandisers tune these."""

    model_config = ConfigDict(extra="forbid")


class SignalRegistry:
    """The signals in explanation order, and what is derived from them."""

    def __init__(self, signals: Sequence[Signal]):
        names = [s.name for s in signals]
        if len(set(names)) != len(names):
            raise ValueError(f"signal names must be unique: {names}")
        self._signals = {s.name: s for s in signals}
        self.weights = create_model(
            "RankerWeights", __base__=WeightsBase,
            **{s.name: (float, Field(s.default, ge=0, le=s.maximum, description=s.help)) for s in signals},
        )

    def __iter__(self) -> Iterator[Signal]:
        return iter(self._signals.values())

    def __getitem__(self, name: str) -> Signal:
        return self._signals[name]

    def __len__(self) -> int:
        return len(self._signals)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._signals)

    def with_signal(self, signal: Signal) -> SignalRegistry:
        """A registry with one more signal (last in explanation order)."""
        return SignalRegistry([*self, signal])

    @property
    def score_only_vectors(self) -> tuple[str, ...]:
        """Stored vectors no signal gathers on: the store builds no HNSW graph for them, which at a
        million products saves a whole index build."""
        gathered = {s.vector for s in self if s.vector and s.gathers != "never"}
        return tuple(dict.fromkeys(s.vector for s in self if s.vector and s.vector not in gathered))

    @property
    def ranking_fields(self) -> list[str]:
        """The payload fields ranking reads: the id, and every signal's fields."""
        return list(dict.fromkeys(["product_id", *(name for s in self for name in s.fields)]))

    def check_names(self, names) -> None:
        """Raise ValueError naming the known weights when ``names`` holds an unknown one."""
        unknown = set(names) - set(self._signals)
        if unknown:
            raise ValueError(f"unknown ranker weight(s): {', '.join(sorted(unknown))}; known: {', '.join(self.names)}")

    def help_text(self) -> str:
        """One line for the CLI's and the API's help: each weight's name and bounds."""
        return "; ".join(f"{s.name} 0..{s.maximum:g}" for s in self)


# --- scoring functions ----------------------------------------------------------------------------
def similarity(signal: Signal, c: Candidates) -> np.ndarray | None:
    """The store's raw score against the query's background on the same vector: how many standard
    deviations above a random product's score each candidate stands."""
    sample = c.sample.get(signal.vector)
    if signal.name not in c.scores or sample is None or not len(sample):
        return None
    background = Background.of(sample @ c.queries[signal.name].vector)
    raw = np.array([c.scores[signal.name].get(key, np.nan) for key in c.keys], dtype=np.float64)
    return (raw - background.mean) / background.std


def keyword_share(signal: Signal, c: Candidates) -> np.ndarray | None:
    if c.query.terms is None:
        return None
    lexical = c.scores.get(signal.name, {})
    best = max(lexical.values(), default=0.0)
    return np.array([bounded(bm25_share(lexical.get(key, 0.0), best)) for key in c.keys])


def category_likelihood(signal: Signal, c: Candidates) -> np.ndarray | None:
    if not c.category_probs:
        return None
    return np.array([bounded(c.category_probs.get(p.get("category"), 0.0)) for p in c.payloads])


def price_fit(signal: Signal, c: Candidates) -> np.ndarray | None:
    if c.query.price_target is None:
        return None
    return np.array([bounded(price_closeness(p.get("price"), c.query.price_target)) for p in c.payloads])


def popularity_evidence(signal: Signal, c: Candidates) -> np.ndarray:
    values = [popularity_of(p) for p in c.payloads]
    return np.array([bounded(v) if v is not None else np.nan for v in values], dtype=np.float64)


def history_likeness(signal: Signal, c: Candidates) -> np.ndarray | None:
    """As close as the candidate's nearest photo is to the nearest product in the history."""
    history = c.query.personal
    sample = c.sample.get(IMAGE_VECTOR)
    if history is None or sample is None or not len(sample):
        return None
    background = Background.of((sample @ history.T).max(axis=1))
    out = np.full(len(c.keys), np.nan)
    for row, key in enumerate(c.keys):
        vectors = c.records[key].image_vectors
        if vectors is not None:
            out[row] = background.z(float(np.max(vectors @ history.T)))
    return out


def geometric_match(signal: Signal, c: Candidates) -> np.ndarray | None:
    """The query photo's local features against each candidate's stored ones: RANSAC inliers of
    the best-agreeing product photo (``engine.local_features``), as evidence."""
    if c.query.local is None:
        return None
    out = np.zeros(len(c.keys))
    rows, products = [], []
    for row, key in enumerate(c.keys):
        stored = c.records.get(key)
        if stored is not None and stored.local_features is not None:
            rows.append(row)
            products.append(unpack(stored.local_features))
    for row, inliers in zip(rows, best_inliers_of_each(c.query.local, products)):
        out[row] = match_evidence(inliers)
    return out


# --- the probes: each signal's query on its stored vector -----------------------------------------
# How much wider a search of photos is when the query has words (see photo_breadth), and when
# it is a photo composed with words.
CROSS_MODAL_BREADTH = 4
COMPOSED_BREADTH = 8


def photo_breadth(has_words: bool, has_photo: bool = False) -> int:
    """The HNSW breadth multiple of a query's photo search. Words searched against photos are far
    from every photo (cross-modal), and a graph built among photos guides such queries worse: at
    a million products a text's photo search found 0.78 of its exact top 10 at the default
    breadth, 0.93 at 4x (2.4 ms). A photo composed with words sits between the two and is the
    hardest: 0.922 of its exact top 10 at 4x in ten segments of 100k (0.988 within 1 %)."""
    if not has_words:
        return 1
    return COMPOSED_BREADTH if has_photo else CROSS_MODAL_BREADTH


def mean_direction(vectors: np.ndarray, weights_given: bool = False) -> np.ndarray:
    """The unit vector along the mean (or, with ``weights_given``, the sum) of ``vectors``."""
    mean = vectors.sum(axis=0) if weights_given else vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else vectors[0].astype(np.float32)


def _dense(vector: str, attribute: str, breadth: Callable[[PreparedQuery], int] = lambda q: 1):
    def probe(q: PreparedQuery) -> VectorQuery | None:
        value = getattr(q, attribute)
        return VectorQuery(vector, value, breadth=breadth(q)) if value is not None else None
    return probe


def _bm25_probe(q: PreparedQuery) -> VectorQuery | None:
    return VectorQuery(BM25_VECTOR, terms=q.terms) if q.terms is not None and q.terms[0] else None


def _history_probe(q: PreparedQuery) -> VectorQuery | None:
    if q.personal is None:
        return None
    return VectorQuery(IMAGE_VECTOR, mean_direction(q.personal), limit=q.limit // 2)


SIGNALS = SignalRegistry([
    Signal("image", 0.5, 10, "photo", "the query (photo, words or both) against the product's photos, joint space",
           similarity, IMAGE_VECTOR, "always", _dense(IMAGE_VECTOR, "visual",
                                                         lambda q: photo_breadth(q.text_joint is not None, q.has_photo)),
           required=True),
    # Tells this product from its look-alikes, where the joint space blurs them.
    Signal("look", 12.0, 25, "appearance", "a query photo's appearance against the product photos' appearance",
           similarity, LOOK_VECTOR, "always", _dense(LOOK_VECTOR, "look")),
    # The photos in the joint space, the sentences and BM25 already bring every product the title
    # in the joint space would: it only scores.
    Signal("caption", 0.3, 10, "caption", "the query against the product's title in the joint space (cross-modal)",
           similarity, CAPTION_VECTOR, "never", _dense(CAPTION_VECTOR, "visual")),
    # With a photo, words ("in black") describe a change, not a product: the titles nearest to
    # them are any product in black, so they only score what the photo and BM25 found. (Their
    # HNSW search was also the one unsure of its top 10: recall@10 0.83 at 100k products.)
    Signal("text", 0.5, 10, "title", "the typed words against the title, sentence embeddings (text-to-text)",
           similarity, SENTENCE_VECTOR, "without_photo", _dense(SENTENCE_VECTOR, "sentence")),
    Signal("bm25", 0.3, 10, "keywords", "the typed words against the title's words (BM25)",
           keyword_share, BM25_VECTOR, "always", _bm25_probe),
    Signal("category", 0.8, 10, "category", "the product's category as predicted for the query (a photo: its nearest catalog photos; words: zero-shot)",
           category_likelihood, fields=("category",)),
    Signal("price", 0.5, 10, "price", "closeness to the price the shopper aims at",
           price_fit, applies=lambda q: q.price_target is not None, fields=("price",)),
    Signal("popularity", 0.0, 10, "popularity", "a catalog field: popularity, sales or rating",
           popularity_evidence, fields=(*POPULARITY_FIELDS, *(f"fields.{n}" for n in POPULARITY_FIELDS))),
    Signal("personal", 0.5, 10, "history", "likeness to the products in the shopper's history",
           history_likeness, IMAGE_VECTOR, "always", _history_probe, scored_by_store=False),
    # Weight picked on the tune half of the 800 grocery shopper photos (docs/quality.md): report
    # half R@1 0.325 -> 0.444 with regions; about 1 ms a verified candidate.
    Signal("match", MATCH_WEIGHT, 25, "same label", "a query photo's local features agreeing on one homography with the "
           "product photo's (SIFT + RANSAC inliers), for the best few candidates only",
           geometric_match, applies=lambda q: q.local is not None, reranks=LOCAL_VECTOR),
])
RankerWeights = SIGNALS.weights
