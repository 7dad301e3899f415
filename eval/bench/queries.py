"""Query latency through the real engine path, beside exact search, and HNSW recall against it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.images import load_image_file
from engine.search import Searcher, SearchQuery
from engine.store import IMAGE_VECTOR, SearchFilters
from engine.store.base import CAPTION_VECTOR, LOOK_VECTOR, SENTENCE_VECTOR
from eval.bench.corpus import RealEmbeddings, SyntheticCatalog

KINDS = ("text", "photo", "photo_text")
MODES = ("unfiltered", "filtered")
RECALL_K = 10
# ann-benchmarks' "epsilon recall": a result counts when its distance (1 - cosine) is within 1 %
# of the exact 10th's. The synthetic catalog copies each real product ~125 times at a million, and
# near-copies tie: the strict id-overlap recall partly measures the order among ties.
RECALL_EPSILON = 0.01
LOOK_RECALL_QUERIES = 25  # appearance vectors are 1,280-d: their exact search is the slow one
MATRIX = {IMAGE_VECTOR: "image", CAPTION_VECTOR: "text", SENTENCE_VECTOR: "sentence", LOOK_VECTOR: "look"}


@dataclass
class BenchQuery:
    """One shopper query made from a real product (``source``): its words, its photo, or both."""

    source: int
    text: str | None = None
    image: Image.Image | None = None


@dataclass
class QueryPlan:
    """Distinct queries for every kind and filter mode: a repeated text would come from the cache."""

    queries: dict[str, dict[str, list[BenchQuery]]]
    warmup: list[BenchQuery]


def plan_queries(real: RealEmbeddings, per_run: int, seed: int = 0, warmup: int = 100) -> QueryPlan:
    """``warmup`` texts (and a quarter as many photos) are searched before timing, never timed."""
    rng = random.Random(seed)
    texts = _text_pool(real, rng)
    warm_photos = max(2, warmup // 4)
    photos = rng.sample(range(len(real)), min(len(real), 2 * per_run + warm_photos))
    while len(photos) < 2 * per_run + warm_photos:  # a small real catalog: photos repeat (they are not cached)
        photos.append(rng.randrange(len(real)))
    images = {i: load_image_file(Path(real.image_files[i])) for i in set(photos)}
    colours = sorted({str(f.get("colour") or f.get("color") or "").lower() for f in real.fields} - {""}) or ["black"]

    def text_queries(offset):
        return [BenchQuery(source, text) for text, source in texts[offset : offset + per_run]]

    def photo_queries(offset, with_text):
        return [BenchQuery(i, f"in {rng.choice(colours)}" if with_text else None, images[i])
                for i in photos[offset : offset + per_run]]

    queries = {
        "text": {"unfiltered": text_queries(0), "filtered": text_queries(per_run)},
        "photo": {"unfiltered": photo_queries(0, False), "filtered": photo_queries(per_run, False)},
        "photo_text": {"unfiltered": photo_queries(0, True), "filtered": photo_queries(per_run, True)},
    }
    warm = [BenchQuery(source, text) for text, source in texts[2 * per_run : 2 * per_run + max(2, warmup)]]
    warm += [BenchQuery(i, None, images[i]) for i in photos[2 * per_run :]]
    return QueryPlan(queries, warm)


def _text_pool(real: RealEmbeddings, rng: random.Random) -> list[tuple[str, int]]:
    """Distinct shopper-like texts, each with the real product it describes.

    From the catalog's attributes where it has them ("navy blue men casual shirts"), and titles.
    """
    seen, pool = set(), []
    for i in range(len(real)):
        fields = {k: str(v).lower() for k, v in real.fields[i].items() if v not in (None, "")}
        category = real.categories[i].lower()
        colour = fields.get("colour") or fields.get("color") or ""
        candidates = [f"{colour} {category}", f"{fields.get('gender', '')} {colour} {category}",
                      f"{colour} {fields.get('usage', '')} {category}", real.titles[i]]
        for text in candidates:
            text = " ".join(text.split())
            if text and text.lower() not in seen:
                seen.add(text.lower())
                pool.append((text, i))
    rng.shuffle(pool)
    return pool


def filters_for(query: BenchQuery, real: RealEmbeddings) -> SearchFilters:
    """What a shopper narrows to: the product's category, at most half again its price."""
    return SearchFilters(categories=(real.categories[query.source],),
                         max_price=round(float(real.prices[query.source]) * 1.5, 2))


def filter_rows(filters: SearchFilters, synthetic: SyntheticCatalog) -> np.ndarray:
    code = synthetic.category_names.index(filters.categories[0])
    return np.flatnonzero((synthetic.category_codes == code) & (synthetic.prices <= filters.max_price))


def exact_top(matrix: np.ndarray, vector: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Brute force: the ``k`` rows of ``matrix`` closest to ``vector`` (among ``rows``), best first."""
    if matrix.dtype != np.float32:
        return _exact_top_half(matrix, vector, k, rows)
    return _top(matrix @ vector, k, rows)


def _top(scores: np.ndarray, k: int, rows: np.ndarray | None) -> np.ndarray:
    if rows is not None:
        scores = scores[rows]
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return rows[top] if rows is not None else top


def _exact_top_half(matrix: np.ndarray, vector: np.ndarray, k: int, rows: np.ndarray | None) -> np.ndarray:
    """Half-precision rows (appearance vectors, kept as the store keeps them): a shortlist scored in
    half precision by torch (numpy has no fast float16 product), then rescored exactly in float32."""
    coarse = (torch.from_numpy(matrix) @ torch.from_numpy(vector.astype(matrix.dtype))).float().numpy()
    shortlist = _top(coarse, k * 20, rows)
    exact = matrix[shortlist].astype(np.float32) @ vector
    return shortlist[np.argsort(-exact, kind="stable")[:k]]


def run_queries(searcher: Searcher, real: RealEmbeddings, synthetic: SyntheticCatalog, plan: QueryPlan,
                cached_repeats: int) -> tuple[dict, list[tuple[np.ndarray, SearchFilters, np.ndarray | None]]]:
    """Latency of every kind and filter mode, exact search's latency and HNSW recall@10 beside it.

    Returns the report and every (named vector, query vector, filters, exact top 10) searched, for
    the ef sweep.
    """
    # A server answers queries all day: the first ones after opening a store pay for the pages of
    # its files they touch (measured at 100k products: text queries' search part 15 ms over the
    # first 100, 8 ms after), and build the ranker's background sample and category names. They
    # are searched first, half of them filtered, and reported apart as the cold start.
    cold = [_timed_search(searcher, SearchQuery(text=q.text, image=q.image, k=RECALL_K,
                                                filters=filters_for(q, real) if i % 2 else SearchFilters()))
            for i, q in enumerate(plan.warmup)]
    report, probes = {"warmup": {"queries": len(cold), **_percentiles(cold)}}, []
    # Every kind's and mode's searches are timed first, back to back as a server runs them, and the
    # exact searches for recall come after them all: those read every product's vectors, which
    # pushes the store's own pages out of memory at a million products (the bench holds 6 GB of
    # exact-search vectors beside the store's 9 GB on a 24 GB machine).
    timed = {(kind, mode): _time(searcher, real, plan.queries[kind][mode], mode) for kind in KINDS for mode in MODES}
    repeats = plan.queries["text"]["unfiltered"][:cached_repeats]
    latencies = [_timed_search(searcher, SearchQuery(text=q.text, k=RECALL_K)) for q in repeats]
    for kind in KINDS:
        report[kind] = {}
        for mode in MODES:
            report[kind][mode], mode_probes = _recall(searcher, real, synthetic, plan.queries[kind][mode], mode,
                                                      timed[kind, mode])
            probes += mode_probes
    report["text"]["cached"] = {"queries": len(latencies), **_percentiles(latencies)}
    report["text"]["cached"]["uncached_over_cached_p50"] = _ratio(report["text"]["unfiltered"]["p50_ms"],
                                                                  report["text"]["cached"]["p50_ms"])
    return report, probes


def _time(searcher: Searcher, real: RealEmbeddings, queries: list[BenchQuery], mode: str) -> dict:
    """Each query's seconds end to end, in the store, and per stage (engine.search), back to back."""
    latencies, store_seconds, stages = [], [], []
    store, timer = searcher.store, StoreTimer(searcher.store)
    searcher.store = timer
    try:
        for query in queries:
            filters = filters_for(query, real) if mode == "filtered" else SearchFilters()
            decode = _timed_decode(real, query) if query.image is not None else {}
            timer.seconds = 0.0
            latencies.append(_timed_search(searcher, SearchQuery(text=query.text, image=query.image,
                                                                 filters=filters, k=RECALL_K), stages))
            stages[-1].update(decode)
            store_seconds.append(timer.seconds)
    finally:
        searcher.store = store
    return {"latencies": latencies, "store_seconds": store_seconds, "stages": stages}


def _recall(searcher: Searcher, real: RealEmbeddings, synthetic: SyntheticCatalog, queries: list[BenchQuery],
            mode: str, timed: dict):
    """The mode's report: its timed searches' figures (``_time``), exact search's latency and each
    gathering search's recall@10 against exact search beside them."""
    latencies, store_seconds, stages = timed["latencies"], timed["store_seconds"], timed["stages"]
    exact_latencies, ann_latencies, selectivity = [], [], []
    recalls: dict[str, list[float]] = {using: [] for using in MATRIX}
    tolerant: dict[str, list[float]] = {using: [] for using in MATRIX}
    probes = []
    for query in queries:
        filters = filters_for(query, real) if mode == "filtered" else SearchFilters()
        # The searches the engine makes for this query, as its plan says (engine.search.Searcher.plan):
        # which vectors gather candidates (the joint-space titles and, beside a photo, the
        # sentences only score) and at what breadth and limit.
        prepared = searcher.prepare(SearchQuery(text=query.text, image=query.image, k=RECALL_K))
        plan = searcher.plan(prepared)
        rows = filter_rows(filters, synthetic) if mode == "filtered" else None
        selectivity.append(len(rows) / len(synthetic) if rows is not None else 1.0)
        started = time.perf_counter()
        exact_images = exact_top(synthetic.image, prepared.visual, RECALL_K, rows)
        exact_latencies.append(time.perf_counter() - started)
        photo = next(probe for probe in plan.gather if probe.using == IMAGE_VECTOR)
        started = time.perf_counter()
        searcher.store.query(photo.vector, IMAGE_VECTOR, filters, plan.limit, breadth=photo.breadth)
        ann_latencies.append(time.perf_counter() - started)
        for probe in plan.gather:
            if probe.using not in MATRIX or probe.vector is None:
                continue  # BM25 terms have no exact search to compare with
            if probe.using == LOOK_VECTOR and (synthetic.look is None or len(recalls[LOOK_VECTOR]) >= LOOK_RECALL_QUERIES):
                continue
            matrix = getattr(synthetic, MATRIX[probe.using])
            exact = exact_images if probe.using == IMAGE_VECTOR else exact_top(matrix, probe.vector, RECALL_K, rows)
            hits = searcher.store.query(probe.vector, probe.using, filters, RECALL_K, breadth=probe.breadth)
            recalls[probe.using].append(_overlap(hits, exact))
            tolerant[probe.using].append(_epsilon_overlap(hits, exact, matrix, probe.vector))
            probes.append((probe.using, probe.vector, filters, exact))
    engine, exact, in_store = _percentiles(latencies), _percentiles(exact_latencies), _percentiles(store_seconds)
    decoded = [latency + stage.get("decode", 0.0) for latency, stage in zip(latencies, stages)]
    return {
        "queries": len(queries), **engine,
        "end_to_end_p50_ms": _percentiles(decoded)["p50_ms"],
        "store_p50_ms": in_store["p50_ms"], "store_p99_ms": in_store["p99_ms"],
        "stages_p50_ms": _stage_medians(stages),
        "exact_p50_ms": exact["p50_ms"], "exact_p99_ms": exact["p99_ms"],
        "engine_over_exact_p50": _ratio(engine["p50_ms"], exact["p50_ms"]),
        "ann_p50_ms": _percentiles(ann_latencies)["p50_ms"],
        "selectivity": round(float(np.mean(selectivity)), 5),
        "recall@10": {name: round(float(np.mean(v)), 4) for name, v in recalls.items() if v},
        "recall@10_epsilon": {name: round(float(np.mean(v)), 4) for name, v in tolerant.items() if v},
    }, probes


class StoreTimer:
    """The store as a timed search sees it, adding up the seconds of its calls: a query's time in
    the store (its searches, candidates' scores, payload reads), apart from the model's encoding
    and the ranker's own work."""

    def __init__(self, store):
        self.store = store
        self.seconds = 0.0

    def __getattr__(self, name):
        found = getattr(self.store, name)
        if not callable(found):
            return found

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return found(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


def _timed_search(searcher: Searcher, query: SearchQuery, stages: list | None = None) -> float:
    """Seconds of one search; its seconds per stage (engine.search) appended to ``stages``."""
    started = time.perf_counter()
    response = searcher.search(query)
    elapsed = time.perf_counter() - started
    if stages is not None:
        stages.append(dict(response.seconds))
    return elapsed


def _timed_decode(real: RealEmbeddings, query: BenchQuery) -> dict[str, float]:
    """Reading and decoding the query's photo file, as an upload is (the timed search gets it decoded)."""
    started = time.perf_counter()
    load_image_file(Path(real.image_files[query.source]))
    return {"decode": time.perf_counter() - started}


def _stage_medians(stages: list[dict[str, float]]) -> dict[str, float]:
    """The median ms of each stage over the queries (0 where a query skipped it). Stages overlap:
    verify's first half (the query's SIFT) runs beside the trunks, within the encode stage's time,
    its second half (matching the top candidates) within the rank stage's (engine.search)."""
    names = dict.fromkeys(name for stage in stages for name in stage)
    return {name: round(float(np.median([stage.get(name, 0.0) for stage in stages]) * 1000), 2)
            for name in names}


def _overlap(hits, exact: np.ndarray) -> float:
    """Share of the exact top 10 that the store's HNSW search found."""
    if len(exact) == 0:
        return 1.0
    found = {SyntheticCatalog.index_of(hit.product_id) for hit in hits}
    return len(found & set(exact.tolist())) / len(exact)


def _epsilon_overlap(hits, exact: np.ndarray, matrix: np.ndarray, vector: np.ndarray) -> float:
    """Share of the 10 results whose exact distance is within RECALL_EPSILON of the exact 10th's."""
    if len(exact) == 0:
        return 1.0
    vector = vector.astype(np.float32)
    found = [SyntheticCatalog.index_of(hit.product_id) for hit in hits]
    tenth = 1.0 - float(matrix[exact[-1]].astype(np.float32) @ vector)
    distances = 1.0 - matrix[found].astype(np.float32) @ vector if found else np.zeros(0)
    return min(1.0, float((distances <= tenth * (1 + RECALL_EPSILON) + 1e-6).sum()) / len(exact))


def ef_sweep(searcher: Searcher, probes, efs: list[int]) -> dict:
    """Recall@10 and latency of each named vector's HNSW search at each search breadth (hnsw_ef),
    against the exact top 10 found for the same queries before. Every probe searches at the
    vector's own breadth (titles 4x, EF_MULTIPLE), not the wider one the engine gives a photo
    search that has words (CROSS_MODAL_BREADTH): the sweep describes the graph."""
    store, saved = searcher.store, searcher.store.hnsw_ef
    out: dict[str, dict] = {}
    try:
        for ef in efs:
            store.hnsw_ef = ef
            found: dict[str, tuple[list, list]] = {}
            for using, vector, filters, exact in probes:
                started = time.perf_counter()
                hits = store.query(vector, using, filters, RECALL_K)
                recalls, latencies = found.setdefault(using, ([], []))
                latencies.append(time.perf_counter() - started)
                recalls.append(_overlap(hits, exact))
            for using, (recalls, latencies) in found.items():
                # Keyed by the breadth this vector really searched with (engine.store.base.EF_MULTIPLE).
                out.setdefault(using, {})[str(store.ef_for(using, RECALL_K))] = {"recall@10": round(float(np.mean(recalls)), 4),
                                                      **_percentiles(latencies)}
    finally:
        store.hnsw_ef = saved
    return out


def _percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None}
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None
