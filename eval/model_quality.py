"""Cross-modal quality of a model: title -> photo retrieval on image vectors alone.

Each validation product's title is a query; the answer is that product's photo among the photos
of all validation products. No title matching is involved: this measures the joint space.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from engine.encoder import Encoder
from engine.errors import InvalidImage
from engine.images import load_image_file
from engine.training import split_validation
from eval.metrics import ndcg_at, summary
from ingest.catalog import read_catalog


def title_to_photo(encoder: Encoder, catalog_path: Path, val_fraction: float = 0.25, seed: int = 0,
                   progress: bool = True) -> dict:
    """Recall@1/5/10, MRR and nDCG@10 of title queries against the validation split's photos."""
    catalog = read_catalog(catalog_path)
    validation = split_validation([row.product_id for row in catalog.rows], val_fraction, seed)
    rows = [row for row in catalog.rows if row.product_id in validation]
    photos, kept = [], []
    for row in tqdm(rows, desc="validation photos", disable=not progress):
        try:
            photos.append(load_image_file(catalog.base_dir / row.images[0]))
            kept.append(row)
        except InvalidImage:
            continue
    photo_vectors = np.concatenate([encoder.encode_images(photos[i : i + 256]) for i in range(0, len(photos), 256)])
    title_vectors = encoder.encode_texts([row.title for row in kept])
    similarity = title_vectors @ photo_vectors.T
    order = np.argsort(-similarity, axis=1)[:, :100]
    ids = [row.product_id for row in kept]
    rankings = [[ids[j] for j in row] for row in order]
    correct = similarity[np.arange(len(kept)), np.arange(len(kept))][:, None]
    ranks = [int(r) + 1 for r in (similarity > correct).sum(axis=1)]
    result = summary(ranks)
    result["ndcg@10"] = round(ndcg_at(rankings, [{pid: 1.0} for pid in ids]), 4)
    result["products"] = len(kept)
    result["model"] = encoder.info.tag
    return result
