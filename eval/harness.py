"""`snapshop eval`: retrieval quality per query set and per signal, as a table, JSON and a plot.

The catalog (or its validation split) is ingested into a fresh embedded store; every query set
is then run through the real search path once per signal on its own (the others weighted 0) and
once fused with the default weights.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from engine.encoder import Encoder
from engine.errors import CalibrationError
from engine.images import load_image_file
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, SearchSettings, StoreSettings
from engine.shopper_centre import LEARN_EVERY, MIN_PHOTOS, ShopperCentre
from engine.signals import SIGNALS
from engine.store import open_store
from engine.training import split_validation
from eval.halves import halves
from eval.learnt_centre import centres_as_they_come
from eval.metrics import first_relevant_ranks, mrr, ndcg_at, recall_at
from eval.query_sets import (
    FOR_WHOM,
    IN_COLOUR,
    augmented_photo_queries,
    category_queries,
    composed_queries,
    describing_queries,
    real_photo_queries,
)
from ingest.catalog import Catalog, read_catalog
from ingest.pipeline import ImageLoader, ingest_catalog

KS = (1, 5, 10, 20)
ALONE = {name: {other: (1.0 if other == name else 0.0) for other in SIGNALS.names} for name in SIGNALS.names}
TEXT_CONFIGS = {"image": ALONE["image"], "text": ALONE["text"], "bm25": ALONE["bm25"], "fused": None}
PHOTO_CONFIGS = {"image": ALONE["image"], "look": ALONE["look"], "caption": ALONE["caption"],
                 "category": ALONE["category"], "fused": None}


def run_eval(encoder: Encoder, catalog_path: Path, queries_csv: Path | None = None, split: str = "all",
             limit_products: int | None = None, limit_queries: int = 500, search: SearchSettings = SearchSettings(),
             progress: bool = True, seed: int = 0, only: set[str] | None = None,
             store_path: Path | None = None, centre_halves: bool = False, centre_learnt: bool = False) -> dict:
    """``only`` names the query sets to run (all when None); ``store_path`` reuses a store ingested
    by an earlier run of the same catalog and split (ingest skips what is already there);
    ``centre_halves`` searches each half of the real shopper photos with the shopper-photo centre
    (engine.shopper_centre) of the other half's photos, as a shop calibrated on earlier photos;
    ``centre_learnt`` searches each photo set once more (sets ``*_learnt``), each photo with the
    centre learnt from the photos searched before it (eval.learnt_centre), as a server learns it
    by default (SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto)."""
    catalog = read_catalog(catalog_path)
    rows = catalog.rows
    if split != "all":
        # The split the model's training used (its checkpoint says which): "validation" is what
        # it never saw, "train" is for tuning weights without looking at the validation split.
        meta = encoder.metadata or {}
        held_out = split_validation([r.product_id for r in rows], meta.get("val_fraction", 0.25), meta.get("val_seed", 0))
        rows = [r for r in rows if (r.product_id in held_out) == (split == "validation")]
    rows = rows[:limit_products] if limit_products else rows
    subset = Catalog(catalog.path, rows, [])
    loader = ImageLoader(catalog.base_dir, IngestSettings())
    report = {"catalog": str(catalog_path), "products": len(rows), "model": encoder.info.tag,
              "split": split, "query_sets": {}}
    wanted = (lambda name: only is None or name in only)
    with tempfile.TemporaryDirectory() as folder, \
            open_store(StoreSettings(path=store_path or Path(folder)), encoder.info) as store:
        ingest_catalog(subset, encoder, store, IngestSettings(), progress=progress)
        searcher = Searcher(encoder, store, search)
        sets = report["query_sets"]
        titles = [(row.title, {row.product_id: 1.0}) for row in rows[:limit_queries * 4]]
        if wanted("title_to_photo"):
            sets["title_to_photo"] = _text_set(searcher, titles, {"image": ALONE["image"]}, progress)
        describing = describing_queries(rows, limit_queries, seed) if wanted("describing") else []
        if describing:
            sets["describing"] = _text_set(searcher, [(q.text, q.gains) for q in describing], TEXT_CONFIGS, progress)
        categories = category_queries(rows) if wanted("category") else []
        if categories:
            sets["category"] = _text_set(searcher, [(q.text, q.gains) for q in categories], TEXT_CONFIGS, progress)
        for name, change in (("photo_plus_text", IN_COLOUR), ("photo_for_whom", FOR_WHOM)):
            composed = composed_queries(rows, catalog.base_dir, limit_queries, seed, loader.load, change) \
                if wanted(name) else []
            if composed:
                sets[name] = _composed_set(searcher, composed, progress)
        departments = {row.product_id: str(row.fields.get("department") or "") for row in rows}
        category = {row.product_id: row.category for row in rows}
        photo_sets = []
        if wanted("photos") and queries_csv is not None:
            photo_sets.append(("shopper_photos", real_photo_queries(queries_csv, load_image_file)[:limit_queries * 2]))
        if wanted("photos"):
            photo_sets.append(("shopper_like_photos",
                               augmented_photo_queries(rows, catalog.base_dir, limit_queries, seed, loader.load)))
        for name, photos in photo_sets:
            if not photos:
                continue
            encoded = [searcher.encode_photo(query.image)  # once, searched once per signal and centre
                       for query in tqdm(photos, desc="encode photos", disable=not progress, leave=False)]
            for set_name, centres in _centre_plans(searcher, name, encoded, photos, centre_halves, centre_learnt):
                sets[set_name], predicted = _photo_set(searcher, photos, encoded, progress, departments, centres)
                report.setdefault("category_accuracy", {})[set_name] = round(float(np.mean(
                    [guess == category.get(q.product_id) for q, guess in zip(photos, predicted)])), 4)
            if centre_halves or centre_learnt:
                report["shopper_centre"] = _centre_note(centre_halves and "shopper_photos" in sets, centre_learnt)
        if "shopper_photos" in sets and "shopper_like_photos" in sets:
            report["synthetic_vs_real"] = synthetic_gap(sets["shopper_like_photos"], sets["shopper_photos"])
    return report


def synthetic_gap(synthetic: dict, real: dict) -> dict:
    """How much better each signal finds products from made-up shopper views than from real photos
    (R@1 points): the views are training material, real photos are the judge."""
    return {signal: round(synthetic[signal]["recall@1"] - real[signal]["recall@1"], 4)
            for signal in real if signal in synthetic}


def _text_set(searcher: Searcher, queries: list[tuple[str, dict]], configs: dict, progress: bool) -> dict:
    out = {}
    for name, weights in configs.items():
        rankings, latencies = [], []
        for text, _ in tqdm(queries, desc=f"{name}", disable=not progress, leave=False):
            started = time.perf_counter()
            response = searcher.search(SearchQuery(text=text, k=max(KS), weights=weights))
            latencies.append(time.perf_counter() - started)
            rankings.append([r.product_id for r in response.results])
        out[name] = _metrics(rankings, [gains for _, gains in queries], latencies)
    return out


def _composed_set(searcher: Searcher, queries, progress: bool) -> dict:
    """The photo alone, the words alone, and both: both should beat either."""
    variants = {"photo only": lambda q: SearchQuery(image=q.image, k=max(KS)),
                "text only": lambda q: SearchQuery(text=q.text, k=max(KS)),
                "photo+text": lambda q: SearchQuery(image=q.image, text=q.text, k=max(KS))}
    out = {}
    for name, make in variants.items():
        rankings, latencies = [], []
        for query in tqdm(queries, desc=name, disable=not progress, leave=False):
            started = time.perf_counter()
            rankings.append([r.product_id for r in searcher.search(make(query)).results])
            latencies.append(time.perf_counter() - started)
        out[name] = _metrics(rankings, [q.gains for q in queries], latencies)
    return out


def _centre_plans(searcher: Searcher, name: str, encoded, photos, halves: bool, learnt: bool):
    """(set name, each photo's shopper-photo centre) of each way a photo set is searched: the
    searcher's own centre, unless real shopper photos are centred on the other half's; and, asked
    for, the centre learnt as they come."""
    real = name == "shopper_photos"
    yield name, (_cross_centres(searcher, encoded, photos) if halves and real
                 else [searcher.shopper_centre] * len(photos))
    if learnt:  # as served by default (SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto), made-up views too
        looks = np.stack([vectors.look for vectors in encoded])
        yield f"{name}_learnt", centres_as_they_come(looks, searcher.encoder.info.tag)


def _centre_note(halves: bool, learnt: bool) -> str:
    notes = ["each half of the shopper photos centred on the other half's mean"] if halves else []
    if learnt:
        notes.append(f"*_learnt: each photo centred on the mean of the photos searched before it, as a server "
                     f"learns it by default (seeded shuffle; the first {MIN_PHOTOS} not centred; learnt again "
                     f"every {LEARN_EVERY})")
    return "; ".join(notes)


def _photo_set(searcher: Searcher, photos, encoded, progress: bool, departments: dict[str, str],
               centres: list) -> tuple[dict, list[str | None]]:
    """Each signal alone and fused, per department too when the catalog names them; and the
    category the fused search predicted for each photo. Each photo (``encoded``: its vectors) is
    searched with its own shopper-photo centre (``centres``, None: none)."""
    out, predicted = {}, []
    kept = searcher.shopper_centre
    for name, weights in PHOTO_CONFIGS.items():
        rankings, latencies = [], []
        for vectors, centre in tqdm(list(zip(encoded, centres)), desc=f"photos {name}", disable=not progress,
                                    leave=False):
            searcher.use_shopper_centre(centre)
            started = time.perf_counter()
            response = searcher.search(SearchQuery(encoded_photo=vectors, k=max(KS), weights=weights))
            latencies.append(time.perf_counter() - started)
            rankings.append([r.product_id for r in response.results])
            if name == "fused":
                predicted.append(response.predicted_category)
        searcher.use_shopper_centre(kept)
        out[name] = _metrics(rankings, [{q.product_id: 1.0} for q in photos], latencies)
        groups = sorted({departments.get(q.product_id, "") for q in photos} - {""})
        if len(groups) > 1:
            out[name]["by_department"] = {
                group: _metrics([r for r, q in zip(rankings, photos) if departments.get(q.product_id) == group],
                                [{q.product_id: 1.0} for q in photos if departments.get(q.product_id) == group], [])
                for group in groups}
    return out, predicted


def _cross_centres(searcher: Searcher, encoded, photos) -> list[ShopperCentre]:
    """For each photo, the centre of the other half's photos' appearance vectors (eval.halves)."""
    first, second = halves([q.product_id for q in photos])
    looks = np.stack([vectors.look for vectors in encoded])
    tag = searcher.encoder.info.tag
    centres: list = [None] * len(photos)
    if min(len(first), len(second)) < MIN_PHOTOS:
        raise CalibrationError(f"centring each half on the other needs {MIN_PHOTOS} photos in each half; the "
                               f"{len(photos)} shopper photos split into {len(first)} and {len(second)}")
    for rows, other in ((first, second), (second, first)):
        centre = ShopperCentre.of(looks[other], tag)
        for row in rows:
            centres[row] = centre
    return centres


def _metrics(rankings: list[list[str]], gains: list[dict], latencies: list[float]) -> dict:
    # Recall and MRR count the best grade as relevant; nDCG uses every grade.
    relevant = [{pid for pid, g in gain.items() if g == max(gain.values())} for gain in gains]
    ranks = first_relevant_ranks(rankings, relevant)
    metrics = {f"recall@{k}": round(recall_at(ranks, k), 4) for k in KS}
    metrics["mrr"] = round(mrr(ranks), 4)
    metrics["ndcg@10"] = round(ndcg_at(rankings, gains, 10), 4)
    metrics["queries"] = len(rankings)
    metrics["p50_ms"] = round(float(np.percentile(latencies, 50)) * 1000, 1) if latencies else None
    return metrics


def format_table(report: dict) -> str:
    lines = [f"{'query set':<22} {'signal':<11} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>8} "
             f"{'n':>5} {'p50 ms':>7}", "(photo sets: p50 excludes encoding the photo, done once per query)"]
    for set_name, signals in report["query_sets"].items():
        for signal, m in signals.items():
            lines.append(f"{set_name:<22} {signal:<11} {m['recall@1']:6.3f} {m['recall@5']:6.3f} {m['recall@10']:6.3f} "
                         f"{m['mrr']:6.3f} {m['ndcg@10']:8.3f} {m['queries']:5d} {m['p50_ms']:7.1f}")
    for set_name, accuracy in report.get("category_accuracy", {}).items():
        lines.append(f"{set_name:<22} predicted category correct: {accuracy:.3f}")
    lines += _department_lines(report)
    if "shopper_centre" in report:
        lines.append(f"photo sets             appearance vectors: {report['shopper_centre']}")
    if "synthetic_vs_real" in report:
        gap = ", ".join(f"{signal} {value:+.3f}" for signal, value in report["synthetic_vs_real"].items())
        lines.append(f"synthetic-vs-real gap (shopper-like minus real photos, R@1): {gap}")
    return "\n".join(lines)


def _department_lines(report: dict) -> list[str]:
    """R@1 / R@5 of each photo set per department (rows) and signal (columns)."""
    lines = []
    for set_name, signals in report["query_sets"].items():
        groups = next((m["by_department"] for m in signals.values() if "by_department" in m), None)
        if not groups:
            continue
        lines.append(f"{set_name} by department, R@1 / R@5:")
        lines.append(f"  {'department':<14} {'n':>4} " + " ".join(f"{signal:>13}" for signal in signals))
        for group in groups:
            cells = [f"{m['by_department'][group]['recall@1']:.3f} / {m['by_department'][group]['recall@5']:.3f}"
                     for m in signals.values()]
            lines.append(f"  {group:<14} {groups[group]['queries']:4d} " + " ".join(f"{c:>13}" for c in cells))
    return lines


def write_outputs(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "eval.json"
    json_path.write_text(json.dumps(report, indent=2))
    png_path = out_dir / "recall_at_k.png"
    plot_recall(report, png_path)
    return {"json": json_path, "plot": png_path}


def plot_recall(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["query_sets"]
    figure, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for axis, (set_name, signals) in zip(axes[0], sets.items()):
        for signal, m in signals.items():
            axis.plot(KS, [m[f"recall@{k}"] for k in KS], marker="o", label=signal,
                      linewidth=2.5 if signal == "fused" else 1.2)
        axis.set_title(set_name)
        axis.set_xlabel("k")
        axis.set_ylim(0, 1)
        axis.set_xticks(KS)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("Recall@k")
    figure.suptitle(f"{report['model']} on {Path(report['catalog']).parent.name} ({report['products']} products)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
