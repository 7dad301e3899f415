"""Does a faster precision cost retrieval quality? Titles against photos, per encoder precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.encoder import Encoder
from engine.images import load_image_file
from engine.settings import IngestSettings
from engine.training import split_validation
from ingest.catalog import read_catalog
from ingest.pipeline import ImageLoader

MAX_DROP_POINTS = 1.0  # a precision is kept only when it costs at most this many points


def precision_quality(encoders: dict[str, Encoder], catalog_path: Path, count: int) -> dict:
    """Recall@1/10 and MRR of each title finding its product's photo among ``count`` held-out products.

    The products are the model's validation split (never trained on); every precision sees the
    same photos, and each figure is compared with fp32's.
    """
    reference = next(iter(encoders.values()))
    catalog = read_catalog(catalog_path)
    meta = reference.metadata or {}
    held_out = split_validation([r.product_id for r in catalog.rows], meta.get("val_fraction", 0.25),
                                meta.get("val_seed", 0))
    rows = [r for r in catalog.rows if r.product_id in held_out and r.images][:count]
    loader = ImageLoader(catalog.base_dir, IngestSettings())
    photos = [load_image_file(Path(loader.locate(row.images[0]))) for row in rows]
    titles = [row.title for row in rows]
    report = {"products": len(rows)}
    for name, encoder in encoders.items():
        report[name] = _title_to_photo(encoder.encode_texts(titles), encoder.encode_images(photos))
    if "fp32" in report:
        for name in encoders:
            if name != "fp32":
                drop = {k: round((report["fp32"][k] - report[name][k]) * 100, 2) for k in report["fp32"]}
                report[name]["drop_points_vs_fp32"] = drop
                report[name]["within_1_point"] = max(drop.values()) <= MAX_DROP_POINTS
    return report


def _title_to_photo(texts: np.ndarray, photos: np.ndarray) -> dict:
    similarity = texts @ photos.T
    ranks = (similarity > np.diag(similarity)[:, None]).sum(axis=1) + 1
    return {"recall@1": round(float(np.mean(ranks <= 1)), 4), "recall@10": round(float(np.mean(ranks <= 10)), 4),
            "mrr": round(float(np.mean(1.0 / ranks)), 4)}
