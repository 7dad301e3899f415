"""Catalog views (engine.catalog_views): each catalog photo also seen heaped and on a shelf, its
views counted into the appearance vector the store keeps, the same on every ingest."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.catalog_views import VIEW_SIZE, catalog_views
from engine.images import load_image_file
from engine.settings import IngestSettings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import GROCERY, require, write_catalog

APPLE = "0"  # Golden Delicious on white


def test_views_show_many_copies_of_the_product_and_are_the_same_every_time():
    photo = load_image_file(require(GROCERY) / "images" / f"{APPLE}.jpg")
    views = catalog_views(photo, 3)
    again = catalog_views(photo, 3)
    assert len(views) == 3 and all(view.size == (VIEW_SIZE, VIEW_SIZE) for view in views)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(views, again))
    assert not np.array_equal(np.asarray(views[0]), np.asarray(views[1]))
    for view in views:
        pixels = np.asarray(view).astype(int)
        # Yellow-green apple skin (red and green well above blue) covers much of each view.
        apple = (pixels[..., 1] > pixels[..., 2] + 40) & (pixels[..., 0] > pixels[..., 2] + 20)
        assert apple.mean() > 0.3, apple.mean()


def test_a_photo_without_a_white_backdrop_still_gets_views():
    noise = np.random.default_rng(0).integers(0, 200, (180, 120, 3), dtype=np.uint8)
    views = catalog_views(Image.fromarray(noise), 2)
    assert [view.size for view in views] == [(VIEW_SIZE, VIEW_SIZE)] * 2


@pytest.fixture(scope="module")
def two_products(tmp_path_factory):
    import pandas as pd

    folder = tmp_path_factory.mktemp("views")
    rows = pd.read_csv(require(GROCERY) / "catalog.csv").head(2).copy()
    rows["image"] = [str(GROCERY / image) for image in rows.image]
    return write_catalog(rows, folder)


def test_the_store_keeps_each_photos_appearance_with_its_views_and_reads_it_back_after_a_restart(
        tmp_path, encoder, two_products):
    from engine.store.base import LOOK_VECTOR

    views = encoder.model.catalog_views
    assert (views["count"], views["weight"]) == (3, 0.3)  # the default model's (registry version 4 on)
    settings = StoreSettings(path=tmp_path / "store")
    with open_store(settings, encoder.info) as store:
        ingest_catalog(read_catalog(two_products), encoder, store, IngestSettings(), progress=False)
    photos = [load_image_file(require(GROCERY) / "images" / f"{pid}.jpg") for pid in ("0", "1")]
    _, own = encoder.encode_photos(photos)
    _, viewed = encoder.encode_photos([v for photo in photos for v in catalog_views(photo, views["count"])])
    expected = own + views["weight"] * viewed.reshape(2, views["count"], -1).mean(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    with open_store(settings, encoder.info) as store:  # reopened: what a restart reads
        stored = store.get(["0", "1"], with_vectors=[LOOK_VECTOR])
    for row, pid in enumerate(("0", "1")):
        look = stored[pid].look_vectors
        assert look.shape == (1, encoder.info.look_dim)
        assert float(look[0] @ expected[row]) > 0.9999
        assert float(look[0] @ own[row]) < 0.999  # the views moved it
