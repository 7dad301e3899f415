"""Search by photo, by text, or both, with filters; one result per product.

A query is prepared (turned into vectors once), planned (``Searcher.plan``: which signals of the
registry, ``engine.signals``, apply, which of their searches gather candidates and which only
score them), gathered from Qdrant, and each candidate is scored on every signal that applies and
the scores fused by the hybrid ranker (``engine.ranking``), so a product found by one signal is
still judged on all of them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from engine.attributes import attribute_filters, facet_counts, payload_key
from engine.encoder import Encoder
from engine.errors import CalibrationError, InvalidQuery, ProductNotFound
from engine.lexical import query_terms
from engine.local_features import LocalFeatures, extract_beside
from engine.photo_kind import RANKED_VOTERS, photo_kind, ranked_kind
from engine.products import payload_of
from engine.ranking import VERIFIED_MATCH, fuse, fused_scores, softmax, squash
from engine.regions import JOINT_REGIONS, LOOK_REGIONS, WHOLE, Region, pick, search_regions
from engine.rules import Merchandising, Rule, adjust, expand, pin, rule_fields
from engine.settings import SearchSettings
from engine.shopper_centre import ShopperCentre
from engine.signals import SIGNALS, Candidates, PreparedQuery, SignalRegistry, mean_direction, photo_breadth
from engine.sorting import SORT_FIELDS, Sort, sorted_order
from engine.stock import AVAILABILITY, STOCK, OutOfStock, in_stock
from engine.store import IMAGE_VECTOR, SearchFilters, VectorStore
from engine.store.base import CAPTION_VECTOR, LOOK_VECTOR, SENTENCE_VECTOR, VectorQuery
from engine.timing import StageClock
from engine.variants import FAMILY_PAYLOAD_FIELDS, MAX_VARIANTS, family_of, one_per_family

# Candidates each signal brings: 4 per result wanted, at least 40. Measured on the validation
# split (300 text and photo queries, k=10): 40, 48 and 64 give identical top-10 lists, and every
# candidate costs scoring and a payload read.
CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 40
# A photo with words ("like this, in brown"): the words' searches run again within the fewest
# categories holding this share of the photo's neighbours' vote (engine.photo_kind). On the
# training split's photo + "in <colour>" queries (800 products) that gathering lifts nDCG@10
# from 0.846 to 0.892; a share of 0.95 gives the same (0.893).
KIND_SHARE = 0.8
# The payload fields sorting, stock and variants read (a free catalog column sits under "fields");
# the signals' own come from the registry.
PAGE_FIELDS = ["product_id", "category", *SORT_FIELDS, payload_key(AVAILABILITY), payload_key(STOCK),
                  *FAMILY_PAYLOAD_FIELDS]
# The stored vectors the ranker's background sample holds, by the StoredProduct attribute holding them.
SAMPLED_VECTORS = {IMAGE_VECTOR: "image_vectors", CAPTION_VECTOR: "caption_vector", SENTENCE_VECTOR: "sentence_vector",
                   LOOK_VECTOR: "look_vectors"}


@dataclass(frozen=True)
class EncodedPhoto:
    """A query photo turned into what search needs, once (``Searcher.encode_photo``)."""

    joint: np.ndarray  # the joint-space vector: the mean direction of the searched regions'
    look: np.ndarray  # the appearance vector, likewise
    local: LocalFeatures | None  # local features of the searched region (None: not verified)
    region: Region = WHOLE  # the box of the photo searched


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
    encoded_photo: EncodedPhoto | None = None
    crop: Region | None = None  # the shopper's box in the photo; None: the searcher picks the regions
    # Pages: ``offset`` given (0 for the first page) or a sort other than relevance makes the
    # search rank the settings' stable ``depth`` of candidates and cut pages of ``k`` from it.
    offset: int | None = None
    sort: Sort | str = Sort.relevance
    floor: float | None = None  # None: the settings' relevance_floor (sorted lists and facets)
    facets: bool = False  # count the attributes of the products above the floor
    out_of_stock: OutOfStock | str | None = None  # None: the settings' out_of_stock
    ungrouped: bool = False  # every variant on its own, not one result per family (engine.variants)
    merchandising: Merchandising | None = None  # rules to preview instead of the stored ones


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
    variants: list[dict] = field(default_factory=list)  # its family's products ({product_id, payload}), grouped
    rules: list[str] = field(default_factory=list)  # the merchandising rules that moved it, described


@dataclass
class SearchResponse:
    results: list[SearchResult]
    nothing_close: bool
    predicted_category: str | None = None
    # Seconds per stage (encode, gather, score, rank), for metrics and the query log.
    seconds: dict[str, float] = field(default_factory=dict)
    # Each result's evidence per signal (results x SIGNALS, NaN where one does not apply): what
    # the ranker fused, so logged clicks can refit its weights offline (engine.analytics.tune).
    evidence: np.ndarray | None = None
    # The query's photo in the joint space, when it had one (the query log keeps it, not the photo).
    photo_vector: np.ndarray | None = None
    # Its appearance vector before any shopper-photo centre, when the whole photo was searched:
    # the query log keeps it too, and the shop's centre is learnt from it (engine.analytics.centre).
    photo_look: np.ndarray | None = None
    total: int = 0  # products in the list the pages are cut from
    offset: int = 0
    facets: dict | None = None  # {"total", "categories", "attributes"} over the products above the floor
    region: Region | None = None  # the part of the query photo that was searched


@dataclass(frozen=True)
class SearchPlan:
    """Which signals rank a query, which of their searches gather candidates (at what breadth and
    limit) and which only score the candidates found."""

    signals: tuple[str, ...]  # the signals that apply, in explanation order
    gather: tuple[VectorQuery, ...]  # the searches that bring candidates
    score: dict[str, VectorQuery]  # per signal scored by the store, its query on the candidates
    record_vectors: tuple[str, ...]  # stored vectors the scoring functions read from the candidates
    limit: int  # candidates each gathering search brings

    @property
    def score_only(self) -> tuple[str, ...]:
        """The signals whose search only scores the candidates others found."""
        gathering = {id(query) for query in self.gather}
        return tuple(name for name, query in self.score.items() if id(query) not in gathering)


@dataclass
class _Ranked:
    """Every candidate of a query, best fused score first."""

    keys: list  # point keys
    fused: np.ndarray  # (candidates,) fused score, 0..1
    matrix: np.ndarray  # (candidates, SIGNALS) evidence
    records: dict  # point key -> StoredProduct with the ranking fields
    notes: dict = field(default_factory=dict)  # point key -> the rules that moved it, described

    def payloads(self, positions: list[int]) -> list[dict]:
        return [self.records[self.keys[i]].payload for i in positions]


@dataclass(frozen=True)
class _Page:
    """What one query ranks and which of it is listed."""

    sort: Sort
    floor: float  # a sorted list and the facets hold the ranked products at or above it
    offset: int
    candidates: int  # each signal's candidates
    depth: int  # products ranked at most
    out_of_stock: OutOfStock
    grouped: bool  # one result per variant family
    paged: bool  # a page of the depth's list, not the fast list of k

    def listed(self, fused: np.ndarray) -> list[int]:
        """Positions of the ranking that make the list: the best ``depth``, and when sorted, only
        those at or above the floor."""
        floor = self.floor if self.sort is not Sort.relevance else -1.0
        return [i for i in range(min(len(fused), self.depth)) if fused[i] >= floor]

    def relevant(self, fused: np.ndarray) -> list[int]:
        """Positions of the ranking at or above the floor: the set facets count."""
        return [i for i in range(min(len(fused), self.depth)) if fused[i] >= self.floor]

    def arranged(self, listed: list[int], payloads: list[dict]) -> list[int]:
        """``listed`` in the page's order (sorted; out-of-stock last when demoted)."""
        order = sorted_order(payloads, self.sort)
        if self.out_of_stock is OutOfStock.demote:
            order = [i for i in order if in_stock(payloads[i])] + [i for i in order if not in_stock(payloads[i])]
        return [listed[i] for i in order]


class Searcher:
    """Answers shoppers' queries against one store with one encoder, ranked by ``signals``."""

    def __init__(self, encoder: Encoder, store: VectorStore, settings: SearchSettings = SearchSettings(),
                 signals: SignalRegistry = SIGNALS):
        self.encoder = encoder
        self.store = store
        self.settings = settings
        self.signals = signals
        signals.check_names(settings.weights)
        self.weights = signals.weights(**settings.weights)
        self._background: tuple[int, dict[str, np.ndarray]] | None = None
        self._categories: tuple[int, list[str], np.ndarray] | None = None
        self._attributes: tuple[int, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self.merchandising = Merchandising.model_validate(store.read_rules() or {})
        # "auto": the server learns it from its shoppers' photos and hands it over (use_shopper_centre).
        self.shopper_centre = (ShopperCentre.load(settings.shopper_centre, encoder.info)
                               if isinstance(settings.shopper_centre, Path) else None)

    # --- public -----------------------------------------------------------------------------
    def set_merchandising(self, merchandising: Merchandising) -> None:
        """Keep new rules and synonyms with the products, and search with them from now on."""
        self.store.write_rules(merchandising.model_dump(mode="json"))
        self.merchandising = merchandising

    def use_shopper_centre(self, centre: ShopperCentre | None) -> None:
        """Centre photo queries' appearance vectors on ``centre`` from now on (None: not at all)."""
        if centre is not None and centre.vector.shape != (self.encoder.info.look_dim,):
            raise CalibrationError(f"a shopper-photo centre of {centre.vector.shape} numbers does not fit "
                                   f"appearance vectors of {self.encoder.info.look_dim}")
        self.shopper_centre = centre

    def search(self, query: SearchQuery) -> SearchResponse:
        """A page of products for ``query``: prepare it, plan its searches, gather candidates, score
        each on every signal that applies, fuse, then apply the merchandising rules and the page."""
        text = (query.text or "").strip() or None
        merchandising = query.merchandising or self.merchandising
        # Synonyms widen the words matched against titles (keywords and sentences), not the
        # joint-space query: "sneakers trainers" as one picture would be neither.
        words = expand(text, merchandising.synonyms) if text else None
        clock = StageClock()
        prepared = self.prepare(query, clock, words)
        weights = prepared.weights
        category_probs, predicted = self._category_probs(prepared) if weights.category > 0 else ({}, None)
        rules = [rule for rule in merchandising.rules if rule.applies(text, {*query.filters.categories, predicted})]
        page = self._page(query, pinned=any(rule.action == "pin" for rule in rules))
        filters = self._searched_filters(query)
        prepared.limit = page.candidates
        plan = self.plan(prepared)
        keys, scores = self._gather(plan, filters, clock, prepared)
        with clock.stage("rank"):
            ranked = self._rank(keys, scores, prepared, plan, category_probs, rules, clock)
            if prepared.kind is not None and len(ranked.keys):
                # The rules above read the neighbours' vote, known before ranking; what the
                # response says the photo shows is the ranking's own vote (engine.photo_kind).
                predicted = ranked_kind(self._ranked_categories(ranked)).predicted or predicted
            listed = page.listed(ranked.fused)
            if page.grouped:
                listed = one_per_family(listed, ranked.payloads(listed))
            arranged = pin(page.arranged(listed, ranked.payloads(listed)), ranked, rules)
            shown = arranged[page.offset:page.offset + query.k]
            results, evidence = self._results(ranked, shown, weights)
            if page.grouped:
                self._add_variants(results)
            facets = self._query_facets(ranked, page) if query.facets else None
        best = float(ranked.fused[0]) if len(ranked.fused) else 0.0
        verified = any(r.signals.get("match", 0.0) >= VERIFIED_MATCH for r in results)
        return SearchResponse(results, best < self.settings.nothing_close and not verified, predicted,
                              seconds=clock.seconds, evidence=evidence, photo_vector=prepared.photo,
                              offset=page.offset, facets=facets, total=len(listed) if page.paged else len(results),
                              region=prepared.region, photo_look=prepared.photo_look)

    def prepare(self, query: SearchQuery, clock: StageClock | None = None, words: str | None = None) -> PreparedQuery:
        """The query checked, turned into vectors once (timed as the ``encode`` stage of
        ``clock``), with the weights that rank it; ``words`` (the text widened by synonyms) are
        what the titles' sentences and keywords are matched against."""
        text = (query.text or "").strip() or None
        if text is None and query.image is None and query.encoded_photo is None:
            raise InvalidQuery("give a text, a photo, or both")
        self._check_k(query.k)
        weights = self._weights(query.weights)
        mix = self.settings.photo_text_mix if query.photo_text_mix is None else query.photo_text_mix
        if not 0.0 <= mix <= 1.0:
            raise InvalidQuery(f"photo_text_mix must be between 0 and 1, got {mix}")
        if query.price_target is not None and not (math.isfinite(query.price_target) and query.price_target > 0):
            raise InvalidQuery(f"price_target must be a positive number, got {query.price_target}")

        words = words or text
        with (clock or StageClock()).stage("encode"):
            text_joint = self.encoder.encode_text(text) if text else None
            sentence = self.encoder.encode_sentence(words) if words else None
        encoded = query.encoded_photo
        if encoded is None and query.image is not None:
            verify = text is None and getattr(weights, "match", 0.0) > 0
            encoded = self.encode_photo(query.image, query.crop, verify=verify, clock=clock)
        photo, look = (encoded.joint, encoded.look) if encoded is not None else (None, None)
        if look is not None and self.shopper_centre is not None:  # what every shop photo shares, out
            look = self.shopper_centre.centred(look)
        # Geometric verification is of a photo alone: words ask for something else than it shows.
        local = encoded.local if encoded is not None and text_joint is None else None
        # What the photo shows, from its nearest catalog photos: the category signal's vote. A photo
        # alone searches as deep as its candidates, so that its gathering search is this one.
        # With words the vote's search is not reused (their searches do not read it): none is asked
        # for, and under a one-category filter none is made.
        kind = None
        if photo is not None and weights.category > 0:
            kind = photo_kind(self.store, photo, look if self.encoder.info.look_dim else None,
                              self._searched_filters(query),
                              limit=0 if text else max(query.k * CANDIDATES_PER_RESULT, MIN_CANDIDATES))
        if text_joint is not None or not self.encoder.info.look_dim:
            # "Like this, but in black": the words change what is wanted, so matching the photo's
            # exact appearance would pull back the very product the shopper wants changed.
            look = None
        if text is not None and photo is not None:
            # With a photo, words ("in brown") describe a change, not a product: they act mostly
            # through the composed query vector; title matching alone would find brown anything.
            weights = weights.model_copy(update={"text": weights.text * mix, "bm25": weights.bm25 * mix})
        return PreparedQuery(
            visual=compose(photo, text_joint, mix),
            photo=photo,
            look=look,
            text_joint=text_joint,
            sentence=sentence,
            terms=query_terms(words) if words else None,
            personal=self._history_vector(query.history) if weights.personal > 0 else None,
            price_target=query.price_target,
            has_photo=photo is not None,
            kind=kind,
            weights=weights,
            limit=max(query.k * CANDIDATES_PER_RESULT, MIN_CANDIDATES),
            local=local,
            region=encoded.region if encoded is not None else None,
            photo_look=encoded.look if encoded is not None and query.crop is None else None,
        )

    def encode_photo(self, image: Image.Image, crop: Region | None = None, verify: bool = True,
                     clock: StageClock | None = None) -> EncodedPhoto:
        """A shopper's photo as query vectors: the appearance vector is the mean direction of the
        vectors of its search regions at ``LOOK_REGIONS`` (``engine.regions``; a mean of unit
        vectors scores each product by its mean cosine to the regions), the joint-space vector that
        of the regions at ``JOINT_REGIONS``; and the local features of the whole photo (the box),
        when the store keeps products' local features and ``verify``. The local features are made
        beside the trunks' passes (``verify`` stage: their own time, within the ``encode`` stage's
        wall time)."""
        clock = clock or StageClock()
        with clock.stage("crops"):
            regions = search_regions(crop)
            cuts = [region.cut(image) for region in regions]
        verifying = verify and self.settings.verify_top > 0 and getattr(self.store, "local_features", False)
        pending = extract_beside(cuts[0]) if verifying else None
        with clock.stage("encode"):
            joint, looks = self.encoder.encode_query_photo(pick(cuts, JOINT_REGIONS), pick(cuts, LOOK_REGIONS))
            local, seconds = pending.result() if pending is not None else (None, 0.0)
        if pending is not None:
            clock.add("verify", seconds)
        return EncodedPhoto(mean_direction(joint), mean_direction(looks), local, crop or WHOLE)

    def plan(self, query: PreparedQuery) -> SearchPlan:
        """Which signals apply to ``query`` (a weight above 0, and what they read is there), which
        of their searches gather candidates and which only score them (``engine.signals``)."""
        applying, gather, score, record_vectors = [], [], {}, []
        for signal in self.signals:
            if getattr(query.weights, signal.name) <= 0 and not signal.required:
                continue
            probe = signal.probe(query) if signal.probe is not None else None
            if probe is None if signal.probe is not None else not signal.applies(query):
                continue
            applying.append(signal.name)
            if probe is not None and signal.gathers_for(query):
                gather.append(probe)
            if probe is not None and signal.scored_by_store:
                score[signal.name] = probe
            elif signal.vector is not None and not signal.reranks:
                record_vectors.append(signal.vector)
        return SearchPlan(tuple(applying), tuple(gather), score, tuple(dict.fromkeys(record_vectors)), query.limit)

    def similar(self, product_id: str, k: int = 12, filters: SearchFilters = SearchFilters(),
                negative_ids: tuple[str, ...] = ()) -> list[SearchResult]:
        """More like ``product_id`` (and less like ``negative_ids``), itself excluded: Qdrant recommend."""
        self._check_k(k)
        stored = self.store.get([product_id, *negative_ids], with_vectors=[IMAGE_VECTOR])
        if product_id not in stored or stored[product_id].image_vectors is None:
            raise ProductNotFound(f"no product with id '{product_id}'")
        missing = [pid for pid in negative_ids if pid not in stored]
        if missing:
            raise ProductNotFound(f"no product with id '{missing[0]}' (given as a negative example)")
        positive = mean_direction(stored[product_id].image_vectors)
        negatives = [mean_direction(stored[pid].image_vectors) for pid in negative_ids]
        filters = filters.but(exclude_ids=(*filters.exclude_ids, product_id, *negative_ids))
        hits = self.store.recommend([positive], negatives, filters, k)
        return [to_result(hit.product_id, hit.payload, hit.score, {"image": hit.score}, {"image": 1.0}) for hit in hits]

    def attributes(self) -> dict[str, str]:
        """The store's attributes (name -> 'keyword' or 'number'), read again when its size changes."""
        count = self.store.count()
        with self._lock:
            if self._attributes is None or self._attributes[0] != count:
                self._attributes = (count, self.store.attribute_indexes())
            return self._attributes[1]

    def attribute_filters(self, filters: SearchFilters, given: dict | None) -> SearchFilters:
        """``filters`` and a request's attribute filters (``{"brand": ["A"], "rating": {"min": 4}}``)."""
        if not given:
            return filters
        keywords, ranges = attribute_filters(given, self.attributes())
        return filters.but(attributes=(*filters.attributes, *keywords), ranges=(*filters.ranges, *ranges))

    def facets(self, filters: SearchFilters = SearchFilters(), price_buckets: int = 8) -> dict:
        """Catalog-wide counts under ``filters``: per category, per keyword attribute's value, and a
        price histogram."""
        categories = self.store.facet("category", filters, limit=500)
        attributes = {name: self.store.facet(payload_key(name), filters, limit=500)
                      for name, kind in self.attributes().items() if kind == "keyword"}
        attributes = {name: counts for name, counts in attributes.items() if counts}  # none in this catalog
        total = self.store.count(filters)
        histogram = []
        if total:
            low, high = self._price_range(filters)
            if low is not None and high is not None:
                edges = np.linspace(low, high, price_buckets + 1) if high > low else np.array([low, high])
                for i in range(len(edges) - 1):
                    upper = float(edges[i + 1])
                    count = self.store.count(filters.but(min_price=float(edges[i]), max_price=upper))
                    if i > 0:  # bucket bounds are inclusive: do not count an edge price twice
                        count -= self.store.count(filters.but(min_price=float(edges[i]), max_price=float(edges[i])))
                    histogram.append({"min": round(float(edges[i]), 2), "max": round(upper, 2), "count": count})
        return {"total": total, "categories": categories, "attributes": attributes, "price_histogram": histogram}

    def _query_facets(self, ranked: _Ranked, page: _Page) -> dict:
        """The facets of a query: counts over its ranked products at or above the floor."""
        payloads = [ranked.records[ranked.keys[i]].payload for i in page.relevant(ranked.fused)]
        keywords = [name for name, kind in self.attributes().items() if kind == "keyword"]
        categories = facet_counts([{"fields": {"category": p.get("category")}} for p in payloads], ["category"])
        attributes = {name: counts for name, counts in facet_counts(payloads, keywords).items() if counts}
        return {"total": len(payloads), "categories": categories["category"], "attributes": attributes}

    # --- internals --------------------------------------------------------------------------
    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.settings.max_k}, got {k}")

    def _weights(self, overrides: dict[str, float] | None):
        if overrides:
            try:
                self.signals.check_names(overrides)
                return self.signals.weights(**{**self.weights.model_dump(), **overrides})
            except ValueError as e:
                errors = e.errors() if hasattr(e, "errors") else None
                raise InvalidQuery(f"bad ranker weights: {errors[0]['msg']}" if errors else str(e)) from e
        return self.weights

    def _gather(self, plan: SearchPlan, filters: SearchFilters, clock: StageClock,
                query: PreparedQuery | None = None) -> tuple[list, dict[str, dict]]:
        """Candidates from the plan's gathering searches, then every store-scored signal's score
        for each of them.

        Both steps are one batch each, scored inside Qdrant: a candidate found by one signal is
        still judged on all of them, and no vector leaves the store (turning a few hundred
        1,280-d appearance vectors into Python lists cost more than all the searches together).
        Returns the candidates' point keys and, per signal, each candidate's raw score.
        """
        with clock.stage("gather"):
            within = self._gather_within_kind(query, plan, filters) if query is not None else []
            found = self._search_many(plan, filters, query, within)
        keys = list(dict.fromkeys(key for hits in found for key, _ in hits))
        with clock.stage("score"):
            scored = self.store.score(keys, list(plan.score.values()))
        return keys, dict(zip(plan.score, scored))

    def _search_many(self, plan: SearchPlan, filters: SearchFilters, query: PreparedQuery | None,
                     more: list[VectorQuery] = ()) -> list:
        """The hits of each of the plan's gathering searches, in the plan's order, then of ``more``,
        all in one batch of the store (engine.store.base.batched_breadths: searches of one vector
        under one filter share their pass); one that the photo's neighbours' vote already ran
        (the same vector, filters and depth) is not run again."""
        earlier = query.kind.search if query is not None and query.kind is not None else None
        done = [earlier.hits if earlier is not None and earlier.answers(probe, filters, plan.limit) else None
                for probe in plan.gather]
        done += [None] * len(more)
        wanted = [p for p, d in zip([*plan.gather, *more], done) if d is None]
        fresh = iter(self.store.search_many(wanted, filters, plan.limit))
        return [d if d is not None else next(fresh) for d in done]

    def _searched_filters(self, query: SearchQuery) -> SearchFilters:
        """The query's filters as its searches apply them: out-of-stock products left out when hidden."""
        hidden = OutOfStock.parse(query.out_of_stock or self.settings.out_of_stock) is OutOfStock.hide
        return query.filters.but(in_stock=True) if hidden else query.filters

    def _page(self, query: SearchQuery, pinned: bool = False) -> _Page:
        """How deep this query ranks and what it keeps; raises InvalidQuery for a page out of range."""
        sort = Sort.parse(query.sort)
        floor = self.settings.relevance_floor if query.floor is None else query.floor
        if not 0.0 <= floor <= 1.0:
            raise InvalidQuery(f"floor must be between 0 and 1, got {floor}")
        out_of_stock = OutOfStock.parse(query.out_of_stock or self.settings.out_of_stock)
        grouped = not query.ungrouped
        if query.offset is None and sort is Sort.relevance and not query.facets and not pinned:
            # One list of k, not a page of a longer one: only what its top k needs is gathered.
            candidates = max(query.k * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
            return _Page(sort, floor, 0, candidates, candidates, out_of_stock, grouped, paged=False)
        depth, offset = self.settings.depth, query.offset or 0
        if not 0 <= offset < depth:
            raise InvalidQuery(f"offset {offset} is past the {depth} products a query ranks "
                               "(SNAPSHOP_SEARCH__DEPTH)")
        return _Page(sort, floor, offset, depth, depth, out_of_stock, grouped, paged=True)

    def _add_variants(self, results: list[SearchResult]) -> None:
        """Each result's variant family (itself included), for swatches: one store read per family field."""
        families: dict[str, set[str]] = {}
        for result in results:
            family = family_of(result.payload)
            if family is not None:
                families.setdefault(family[0], set()).add(family[1])
        members: dict[tuple[str, str], list] = {}
        for name, values in families.items():
            found = self.store.find(SearchFilters(attributes=((name, tuple(sorted(values))),)),
                                    limit=MAX_VARIANTS * len(values))
            for product in found:
                members.setdefault(family_of(product.payload), []).append(product)
        for result in results:
            family = family_of(result.payload)
            if family is not None and len(members.get(family, [])) > 1:
                result.variants = [{"product_id": p.product_id, "payload": p.payload} for p in members[family]]

    def _rank(self, keys: list, scores: dict[str, dict], q: PreparedQuery, plan: SearchPlan,
              category_probs: dict, rules: list[Rule], clock: StageClock | None = None) -> _Ranked:
        """Every candidate by fused score (moved by the rules that hide, boost or bury), best first,
        with the payload fields ranking, sorting and the rules read."""
        fields = list(dict.fromkeys([*self.signals.ranking_fields, *PAGE_FIELDS,
                                     *(payload_key(name) for name in {*self.attributes(), *rule_fields(rules)})]))
        records = self.store.records(keys, fields, list(plan.record_vectors) or None)
        keys = [key for key in keys if key in records]  # a product deleted meanwhile is left out
        if not keys:
            return _Ranked([], np.zeros(0), np.zeros((0, len(self.signals))), {})
        candidates = Candidates(keys, [records[key].payload for key in keys], records, scores, plan.score, q,
                                self._background_sample(), category_probs)
        matrix = self._evidence(candidates, plan)
        fused = fused_scores(matrix, q.weights)
        reranking = [s for s in self.signals if s.reranks and s.name in plan.signals]
        if reranking and self.settings.verify_top > 0:
            with (clock or StageClock()).stage("verify"):  # within "rank": the rank stage's time includes it
                fused = self._rerank(candidates, matrix, fused, reranking)
        kept, fused, notes = adjust(keys, [records[key] for key in keys], fused, rules)
        order = sorted(kept, key=lambda i: -fused[i])  # stable: ties keep the candidates' order
        return _Ranked([keys[i] for i in order], fused[order], matrix[order], records,
                       {keys[i]: notes[i] for i in order if notes.get(i)})

    def _results(self, ranked: _Ranked, positions: list[int],
                 weights) -> tuple[list[SearchResult], np.ndarray]:
        """The products at ``positions`` of the ranking, in that order, each explained, and their
        evidence rows (results x SIGNALS)."""
        payloads = self.store.records([ranked.keys[i] for i in positions])
        results, rows = [], []
        for i in positions:
            if ranked.keys[i] in payloads:
                rows.append(i)
                stored = payloads[ranked.keys[i]]
                evidence = {name: float(value) for name, value in zip(self.signals.names, ranked.matrix[i]) if not np.isnan(value)}
                score, shares = fuse(evidence, weights)
                signals = {name: squash(value) for name, value in evidence.items()}
                results.append(to_result(stored.product_id, stored.payload, score, signals, shares))
                results[-1].rules = ranked.notes.get(ranked.keys[i], [])
        return results, ranked.matrix[rows] if rows else np.zeros((0, len(self.signals)))

    def _rerank(self, candidates: Candidates, matrix: np.ndarray, fused: np.ndarray, reranking: list) -> np.ndarray:
        """The re-ranking signals (``Signal.reranks``: the match signal's geometric verification)
        on the best ``verify_top`` candidates by the other signals, their stored vector read for
        those only; filled into ``matrix``, fused again.

        Candidates not verified count no such evidence (0), as verified ones without any: they
        keep their order among themselves, and a verified match rises above them.
        """
        top = np.argsort(-fused, kind="stable")[: self.settings.verify_top]
        keys = [candidates.keys[i] for i in top]
        stored = self.store.records(keys, ["product_id"], list(dict.fromkeys(s.reranks for s in reranking)))
        best = Candidates(keys, [candidates.payloads[i] for i in top], stored, candidates.scores, candidates.queries,
                          candidates.query, candidates.sample, candidates.category_probs)
        for signal in reranking:
            column = self.signals.names.index(signal.name)
            values = signal.evidence(signal, best)
            if values is not None:
                matrix[:, column] = 0.0
                matrix[top, column] = values
        return fused_scores(matrix, candidates.query.weights)

    def _evidence(self, candidates: Candidates, plan: SearchPlan) -> np.ndarray:
        """Each signal's evidence for each candidate, (candidates, signals), in standard deviations
        above the signal's background; NaN where a signal does not apply to a candidate."""
        matrix = np.full((len(candidates.keys), len(self.signals)), np.nan)
        for column, signal in enumerate(self.signals):
            if signal.name in plan.signals and not signal.reranks:
                values = signal.evidence(signal, candidates)
                if values is not None:
                    matrix[:, column] = values
        return matrix

    def _background_sample(self, size: int = 512) -> dict[str, np.ndarray]:
        """A random sample of the catalog's stored vectors (each product's mean direction), by
        vector name: the background each dense signal's scores are calibrated against."""
        count = self.store.count()
        with self._lock:
            if self._background is None or self._background[0] != count:
                products = self.store.sample(size)
                sample = {}
                for vector, attribute in SAMPLED_VECTORS.items():
                    rows = [getattr(p, attribute) for p in products if getattr(p, attribute) is not None]
                    rows = [mean_direction(v) if v.ndim == 2 else v for v in rows]
                    sample[vector] = np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)
                self._background = (count, sample)
            return self._background[1]

    def _gather_within_kind(self, q: PreparedQuery, plan: SearchPlan, filters: SearchFilters) -> list[VectorQuery]:
        """With a photo and words, the words' searches again within the categories the photo shows,
        and the words alone against the photos there: "in brown" among handbags finds brown
        handbags, where the whole catalog's brown things are shoes and belts. Returns the
        searches (with their filters), run in the gathering's batch."""
        if q.kind is None or q.text_joint is None or not q.kind.categories:
            return []
        likely = q.kind.likely(KIND_SHARE)
        if filters.categories:
            likely = tuple(c for c in likely if c in filters.categories)
        if not likely:
            return []
        within = filters.but(categories=likely)
        words = [plan.score[name] for name in ("text", "bm25", "image") if name in plan.score]
        if within == filters:
            # The photo shows what the filter already asks for: the query's own gathering searches
            # ran there, so only the words' searches they left out run (two of four at a million
            # products, 10-15 ms each with a filter).
            words = [w for w in words if not any(w is g for g in plan.gather)]
        words.append(VectorQuery(IMAGE_VECTOR, q.text_joint, breadth=photo_breadth(True)))
        return [replace(w, filters=within) for w in words]

    @staticmethod
    def _ranked_categories(ranked: _Ranked) -> list[tuple[float, str | None]]:
        """(fused score, category) of the ranking's best products, best first."""
        voters = range(min(len(ranked.keys), RANKED_VOTERS))
        return [(float(ranked.fused[i]), payload.get("category")) for i, payload in zip(voters, ranked.payloads(list(voters)))]

    def _category_probs(self, q: PreparedQuery) -> tuple[dict[str, float], str | None]:
        """The query photo's category from its nearest catalog photos; without a photo, zero-shot."""
        if q.kind is not None and q.kind.categories:
            return q.kind.relative(), q.kind.predicted
        return self._zero_shot_category(q.visual)

    def _zero_shot_category(self, visual: np.ndarray) -> tuple[dict[str, float], str | None]:
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
        stored = self.store.get(list(history)[:50], with_vectors=[IMAGE_VECTOR])
        vectors = [mean_direction(v.image_vectors) for v in stored.values() if v.image_vectors is not None]
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
    return mean_direction(np.stack([(1.0 - text_share) * photo, text_share * text]), weights_given=True)


def to_result(product_id: str, payload: dict, score: float, signals: dict[str, float],
              shares: dict[str, float]) -> SearchResult:
    product = payload_of(payload, product_id)
    return SearchResult(
        product_id=product_id,
        score=round(score, 6),
        title=product.title,
        price=product.price,
        category=product.category,
        images=list(product.images),
        payload=payload,
        signals={k: round(v, 4) for k, v in signals.items()},
        explanation={k: round(v, 4) for k, v in shares.items()},
    )

