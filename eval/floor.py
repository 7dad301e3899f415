"""How the relevance floor is chosen, and what a paged query costs: `python -m eval.floor --catalog
... --store ...`.

A sorted list and a query's facets hold the ranked products whose fused score is at or above
the floor. The floor is the score that best separates relevant products from the rest: for each
candidate floor, the products above it are compared with the query's relevant products (its
category, for category and describing queries) as precision, recall and F1. The floor is chosen
on one half of the queries (the "choose" half) and reported on the other ("report") half; the
store holds the catalog's validation split only, products the model never trained on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from engine.encoder import Encoder
from engine.model_loading import load_encoder
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, ModelSettings, SearchSettings, StoreSettings
from engine.store import open_store
from engine.training import split_validation
from eval.query_sets import category_queries, describing_queries
from ingest.catalog import Catalog, read_catalog
from ingest.pipeline import ingest_catalog

FLOORS = tuple(round(f, 2) for f in np.arange(0.05, 0.96, 0.05))
DEPTH = 1000


def measure_floors(encoder: Encoder, catalog_path: Path, store_path: Path, limit_queries: int = 200) -> dict:
    """Precision, recall and F1 of the list above each floor, on the two halves of the queries."""
    catalog = read_catalog(catalog_path)
    meta = encoder.metadata or {}
    held_out = split_validation([r.product_id for r in catalog.rows], meta.get("val_fraction", 0.25),
                                meta.get("val_seed", 0))
    rows = [r for r in catalog.rows if r.product_id in held_out]
    queries = [(q.text, q.gains) for q in describing_queries(rows, limit_queries)]
    queries += [(q.text, q.gains) for q in category_queries(rows)]
    settings = SearchSettings(depth=DEPTH, max_k=DEPTH)
    with open_store(StoreSettings(path=store_path), encoder.info) as store:
        ingest_catalog(Catalog(catalog.path, rows, []), encoder, store, IngestSettings(), progress=False)
        searcher = Searcher(encoder, store, settings)
        scored = []
        for text, gains in queries:
            response = searcher.search(SearchQuery(text=text, k=DEPTH, offset=0))
            scored.append(([r.score for r in response.results], [r.product_id in gains for r in response.results],
                           sum(1 for g in gains.values() if g > 0)))
    halves = {"choose": scored[0::2], "report": scored[1::2]}
    table = {name: {floor: _quality(half, floor) for floor in FLOORS} for name, half in halves.items()}
    best = max(FLOORS, key=lambda f: table["choose"][f]["f1"])
    return {"products": len(rows), "queries": len(scored), "chosen_floor": best,
            "at_chosen": {name: table[name][best] for name in table}, "table": table}


def measure_page_cost(encoder: Encoder, store_path: Path, texts: list[str], repeats: int = 3) -> dict:
    """Median time of a plain k=12 query against a paged, a sorted and a faceted one (depth 1000),
    each query run in turn so that a busy machine slows them alike; ratios to the plain query."""
    kinds = {"plain k=12": {}, "page of 48 at depth 1000": {"offset": 0, "k": 48},
             "sorted price_asc": {"sort": "price_asc", "k": 48}, "facets": {"facets": True}}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    with open_store(StoreSettings(path=store_path), encoder.info) as store:
        searcher = Searcher(encoder, store, SearchSettings())
        for text in texts[:2]:  # warm the caches (background sample, category names)
            searcher.search(SearchQuery(text=text))
        for _ in range(repeats):
            for text in texts:
                for name, options in kinds.items():
                    started = time.perf_counter()
                    searcher.search(SearchQuery(text=text, **options))
                    times[name].append(time.perf_counter() - started)
    base = float(np.median(times["plain k=12"]))
    return {name: {"median_ms": round(float(np.median(v)) * 1000, 1), "ratio": round(float(np.median(v)) / base, 2)}
            for name, v in times.items()}


def _quality(scored: list, floor: float) -> dict:
    precision, recall, f1 = [], [], []
    for scores, relevant, relevant_total in scored:
        above = [hit for score, hit in zip(scores, relevant) if score >= floor]
        found = sum(above)
        p = found / len(above) if above else 1.0
        r = found / relevant_total if relevant_total else 1.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"precision": round(float(np.mean(precision)), 3), "recall": round(float(np.mean(recall)), 3),
            "f1": round(float(np.mean(f1)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True, help="store for the validation split (reused)")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args()
    encoder = load_encoder(ModelSettings())
    report = measure_floors(encoder, args.catalog, args.store)
    texts = [q.text for q in describing_queries(read_catalog(args.catalog).rows, 10)]
    report["page_cost"] = measure_page_cost(encoder, args.store, texts)
    for name, figures in report["page_cost"].items():
        print(f"{name:26s} {figures['median_ms']:8.1f} ms  x{figures['ratio']:.2f}")
    for floor in FLOORS:
        row = "  ".join(f"{name} P {report['table'][name][floor]['precision']:.3f} "
                        f"R {report['table'][name][floor]['recall']:.3f} F1 {report['table'][name][floor]['f1']:.3f}"
                        for name in report["table"])
        print(f"floor {floor:.2f}  {row}")
    print(f"chosen on the 'choose' half: {report['chosen_floor']}; at it: {report['at_chosen']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
