"""Shopper photos -> product: the search a shop's customers really do.

The catalog is ingested into a fresh embedded store (its photos are the shop's own shots);
each query photo (a shopper's picture) is searched and the rank of its product recorded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from engine.encoder import Encoder
from engine.errors import InvalidImage
from engine.images import load_image_file
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, SearchSettings, StoreSettings
from engine.store import open_store
from eval.metrics import summary
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog


def photo_queries(encoder: Encoder, catalog_path: Path, queries_path: Path, k: int = 10,
                  search_settings: SearchSettings = SearchSettings(), progress: bool = True) -> dict:
    queries = pd.read_csv(queries_path, dtype=str)
    base = queries_path.parent
    with tempfile.TemporaryDirectory() as folder:
        with open_store(StoreSettings(path=Path(folder)), encoder.info) as store:
            ingest_catalog(read_catalog(catalog_path), encoder, store, IngestSettings(), progress=progress)
            searcher = Searcher(encoder, store, search_settings)
            ranks, unreadable = [], 0
            for query in tqdm(queries.itertuples(), total=len(queries), desc="shopper photos",
                              disable=not progress):
                try:
                    photo = load_image_file(base / query.query_image)
                except InvalidImage:
                    unreadable += 1
                    continue
                results = searcher.search(SearchQuery(image=photo, k=k))
                ids = [r.product_id for r in results]
                ranks.append(ids.index(str(query.product_id)) + 1 if str(query.product_id) in ids else None)
    result = summary(ranks, ks=(1, 5, 10))
    result["unreadable_queries"] = unreadable
    result["model"] = encoder.info.tag
    return result
