"""What the query log says: top searches, searches that found nothing, click-through by position,
and what shoppers photograph that the shop does not sell.

The last is a clustering of the photo embeddings of "nothing close" photo searches (k-means,
scipy): each cluster is a kind of thing shoppers look for in vain, shown by its most typical
photos (their hashes; photos are never kept) and each one's nearest products in the shop.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.cluster.vq import kmeans2

from engine.analytics.log import QueryLog

# Nearest products of a photo embedding: (product id, title) pairs, best first.
Nearest = Callable[[np.ndarray], list[tuple[str, str]]]
PHOTO_KINDS = ("photo", "photo+text")


@dataclass
class QueryCount:
    text: str
    count: int


@dataclass
class PositionRate:
    position: int
    impressions: int  # searches that showed a result at this position
    clicks: int  # of those, the searches whose result at this position was clicked
    rate: float


@dataclass
class PhotoCluster:
    searches: int
    examples: list[str]  # SHA-256 of the cluster's most typical photos
    nearest: list[list[tuple[str, str]]]  # each example's nearest products (id, title)


@dataclass
class Report:
    searches: int
    sessions: int
    by_kind: dict[str, int]
    nothing_close_share: float
    median_latency_ms: float | None
    events: dict[str, int]
    top_queries: list[QueryCount] = field(default_factory=list)
    zero_result_queries: list[QueryCount] = field(default_factory=list)
    nothing_close_queries: list[QueryCount] = field(default_factory=list)
    click_through: list[PositionRate] = field(default_factory=list)
    unmet_photos: list[PhotoCluster] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def build_report(log: QueryLog, since: float = 0.0, top: int = 20, positions: int = 10, clusters: int = 5,
                 nearest: Nearest | None = None) -> Report:
    """The report of the searches and events logged from ``since`` (UNIX time) on."""
    queries = list(log.queries(since))
    events = log.events(since)
    kinds = Counter(q.kind for q in queries)
    latencies = [q.latency_ms for q in queries]
    return Report(
        searches=len(queries),
        sessions=len({q.session for q in queries if q.session}),
        by_kind=dict(kinds),
        nothing_close_share=round(sum(q.nothing_close for q in queries) / len(queries), 4) if queries else 0.0,
        median_latency_ms=round(float(np.median(latencies)), 2) if latencies else None,
        events=dict(Counter(e.kind for e in events)),
        top_queries=_top([q.text for q in queries], top),
        zero_result_queries=_top([q.text for q in queries if not q.results], top),
        nothing_close_queries=_top([q.text for q in queries if q.nothing_close], top),
        click_through=_click_through(queries, events, positions),
        unmet_photos=_unmet_photos(queries, clusters, nearest),
    )


def normalise(text: str | None) -> str | None:
    """Searches counted as one: case and spacing do not make another query."""
    return " ".join(text.lower().split()) if text and text.strip() else None


def _top(texts: list[str | None], top: int) -> list[QueryCount]:
    counts = Counter(t for t in map(normalise, texts) if t)
    return [QueryCount(text, count) for text, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def _click_through(queries, events, positions: int) -> list[PositionRate]:
    """Per position: of the searches that showed a result there, the share whose result there was clicked."""
    clicked: dict[int, set[str]] = defaultdict(set)
    for event in events:
        if event.kind == "click":
            clicked[event.position].add(event.query_id)
    out = []
    for position in range(1, positions + 1):
        shown = [q.id for q in queries if len(q.results) >= position]
        clicks = sum(qid in clicked[position] for qid in shown)
        out.append(PositionRate(position, len(shown), clicks, round(clicks / len(shown), 4) if shown else 0.0))
    return out


def _unmet_photos(queries, clusters: int, nearest: Nearest | None, examples: int = 3) -> list[PhotoCluster]:
    """Clusters of the photos of "nothing close" photo searches, largest first."""
    photos = [q for q in queries if q.nothing_close and q.kind in PHOTO_KINDS and q.photo_vector is not None]
    if not photos:
        return []
    vectors = np.stack([q.photo_vector for q in photos]).astype(np.float64)
    groups = min(clusters, len(photos))
    # Seeded, so the same log gives the same report; k-means++ seeds spread over the photos.
    centroids, labels = kmeans2(vectors, groups, minit="++", seed=0)
    out = []
    for group in range(groups):
        members = np.flatnonzero(labels == group)
        if not len(members):
            continue
        typical = members[np.argsort(-(vectors[members] @ centroids[group]))][:examples]
        out.append(PhotoCluster(
            searches=len(members),
            examples=[photos[i].photo_sha256 or "" for i in typical],
            nearest=[nearest(photos[i].photo_vector) if nearest else [] for i in typical],
        ))
    return sorted(out, key=lambda c: -c.searches)


def store_nearest(store, k: int = 3) -> Nearest:
    """``Nearest`` from a store's photos (joint space): what the shop has closest to a photo."""
    from engine.store import IMAGE_VECTOR, SearchFilters

    def nearest(vector: np.ndarray) -> list[tuple[str, str]]:
        hits = store.query(np.asarray(vector, np.float32), IMAGE_VECTOR, SearchFilters(), k)
        return [(hit.product_id, str(hit.payload.get("title", ""))) for hit in hits]

    return nearest
