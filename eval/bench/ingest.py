"""Ingest end to end (decode, encode, upsert) against the encoder alone on the same products."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from engine.encoder import Encoder
from engine.settings import IngestSettings, StoreSettings
from engine.store import open_store
from eval.bench.corpus import photo_vectors
from ingest.catalog import Catalog, read_catalog
from ingest.pipeline import ImageLoader, ingest_catalog


def bench_ingest(encoder: Encoder, catalog_path: Path, count: int, settings: IngestSettings, work_dir: Path) -> dict:
    """Products/s of ``ingest_catalog`` into a fresh embedded store, and of the encoder on the same
    products with their photos decoded beforehand (the ceiling ingest can reach).

    The encoder-only pass runs first, so both read the photos from a warm page cache.
    """
    catalog = read_catalog(catalog_path)
    subset = Catalog(catalog.path, catalog.rows[:count], [])
    loader = ImageLoader(catalog.base_dir, settings)
    photos = [[loader.load(source) for source in row.images] for row in subset.rows]
    started = time.perf_counter()
    for start in range(0, len(subset.rows), settings.upsert_batch):
        rows = subset.rows[start : start + settings.upsert_batch]
        photo_vectors(encoder, [photo for product in photos[start : start + len(rows)] for photo in product])
        titles = [row.title for row in rows]
        encoder.encode_texts(titles)
        encoder.encode_sentences(titles)
    encoder_s = time.perf_counter() - started

    work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ingest-", dir=work_dir))
    try:
        started = time.perf_counter()
        with open_store(StoreSettings(path=folder), encoder.info) as store:
            summary = ingest_catalog(subset, encoder, store, settings, progress=False)
        end_to_end_s = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    products = len(subset.rows)
    return {
        "products": products, "photos": sum(len(p) for p in photos), "stored": summary.stored,
        "decode_workers": settings.decode_workers, "upsert_batch": settings.upsert_batch,
        "end_to_end_per_s": round(products / end_to_end_s, 2), "encoder_only_per_s": round(products / encoder_s, 2),
        "end_to_end_over_encoder_only": round(encoder_s / end_to_end_s, 3),
        "stages_s": {k: round(v, 2) for k, v in summary.seconds.items()},
    }
