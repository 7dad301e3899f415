"""What kind of product a query photo shows, read off the catalog's own photos.

A shop's photos are labelled examples of its categories: the catalog products whose photos look
most like the query photo vote for their category, each by how close it is. With words ("like
this, in brown") the vote says what the photo keeps (the kind of product) and the words what
changes (engine.search gathers the words' matches within the voted categories).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.store.base import IMAGE_VECTOR, LOOK_VECTOR, SearchFilters, VectorQuery, VectorStore

# Nearest catalog products that vote, and how sharply closeness weighs a vote (a softmax over
# their cosine similarities at this temperature).
NEIGHBOURS = 10
VOTE_TEMPERATURE = 0.1
# Once the search has ranked a photo's products (appearance, geometric verification, the vote
# above), its best few vote again, by fused score: on the grocery shopper photos' tune half
# (eval/photo_study.split) the predicted category is right for 0.613 against 0.539 by the
# appearance neighbours' vote; 1 to 20 voters and temperatures 0.003 to 0.01 tie there.
RANKED_VOTERS = 5
RANKED_TEMPERATURE = 0.01


@dataclass(frozen=True)
class NeighbourSearch:
    """The appearance search a photo's vote read, kept so that the query's own gathering search of
    the same vector does not run again: at a million products (ten segments) that search is a
    third of a filtered photo query's time in the store."""

    query: VectorQuery
    filters: SearchFilters
    limit: int
    hits: list  # (point key, score), best first

    def answers(self, probe: VectorQuery, filters: SearchFilters, limit: int) -> bool:
        """Whether ``probe`` under ``filters`` for ``limit`` candidates is this very search."""
        return (probe.using == self.query.using and probe.breadth == self.query.breadth and probe.terms is None
                and (probe.limit or limit) == self.limit and filters == self.filters
                and probe.vector is not None and np.array_equal(probe.vector, self.query.vector))


@dataclass(frozen=True)
class PhotoKind:
    """What a query photo shows: its category, as shares of its nearest catalog products' vote."""

    categories: dict[str, float]  # category -> share of the vote, summing to 1
    search: NeighbourSearch | None = None  # the neighbours' search, when the vote came from one

    @property
    def predicted(self) -> str | None:
        return max(self.categories, key=self.categories.get) if self.categories else None

    def likely(self, share: float) -> tuple[str, ...]:
        """The fewest categories, most likely first, that hold ``share`` of the vote."""
        out, total = [], 0.0
        for name, value in sorted(self.categories.items(), key=lambda item: -item[1]):
            out.append(name)
            total += value
            if total >= share:
                break
        return tuple(out)

    def relative(self) -> dict[str, float]:
        """Each category's vote relative to the most likely one's (1 for the predicted category)."""
        top = max(self.categories.values(), default=0.0)
        return {name: value / top for name, value in self.categories.items()} if top > 0 else {}


def photo_kind(store: VectorStore, photo: np.ndarray, look: np.ndarray | None,
               filters: SearchFilters = SearchFilters(), neighbours: int = NEIGHBOURS,
               temperature: float = VOTE_TEMPERATURE, limit: int = 0) -> PhotoKind:
    """The kind of product ``photo`` (joint space) shows, from its ``neighbours`` nearest catalog
    products under ``filters``: by appearance (``look``) when the model has it, it tells
    products apart far better than the joint space (shopper-like photos R@1 0.93 against 0.71).
    The search brings ``limit`` products when that is more (the query's candidates: kept in
    ``PhotoKind.search``); the best ``neighbours`` vote. Filtered to one category, the vote can
    only be that category: without a search asked for (``limit`` 0), none is made."""
    if len(filters.categories) == 1 and limit <= 0:
        return PhotoKind({filters.categories[0]: 1.0})
    query = VectorQuery(LOOK_VECTOR, look) if look is not None else VectorQuery(IMAGE_VECTOR, photo)
    wanted = max(neighbours, limit)
    (hits,) = store.search_many([query], filters, wanted)
    voters = hits[:neighbours]
    records = store.records([key for key, _ in voters], ["category"]) if voters else {}
    found = [(score, records[key].payload.get("category")) for key, score in voters if key in records]
    return PhotoKind(vote(found, temperature).categories, NeighbourSearch(query, filters, wanted, hits))


def ranked_kind(ranked: list[tuple[float, str | None]], voters: int = RANKED_VOTERS,
                temperature: float = RANKED_TEMPERATURE) -> PhotoKind:
    """The kind of product a photo shows, from its search's best ``voters`` products
    ((fused score, category), best first): the ranking holds more evidence than appearance alone."""
    return vote(ranked[:voters], temperature)


def vote(found: list[tuple[float, str | None]], temperature: float) -> PhotoKind:
    """Each product's category gets its softmax share of the (score, category) pairs' scores."""
    if not found:
        return PhotoKind({})
    scores = np.array([score for score, _ in found], dtype=np.float64)
    weights = np.exp((scores - scores.max()) / temperature)
    weights /= weights.sum()
    categories: dict[str, float] = {}
    for (_, category), weight in zip(found, weights):
        if category:
            categories[str(category)] = categories.get(str(category), 0.0) + float(weight)
    return PhotoKind(categories)
