"""A shop's shoppers' photos centred on their own mean (engine.shopper_centre): made from photos
alone by `snapshop calibrate`, refused when another model made it, and finding real shopper
photos' products first more often on the grocery catalog with the real model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.errors import CalibrationError
from engine.images import load_image_file
from engine.model_info import ModelInfo
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, SearchSettings, StoreSettings
from engine.shopper_centre import MIN_PHOTOS, ShopperCentre
from engine.store import open_store
from eval.halves import halves
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import GROCERY, require
from tests.test_cli import snapshop

INFO = ModelInfo("some-model", "1", dim=4, look_dim=3)


def unit_rows(count: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, 3)) + np.array([2.0, 0.0, 0.0])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_centred_vector_is_unit_length_and_loses_what_the_photos_share():
    centre = ShopperCentre.of(unit_rows(50), INFO.tag)
    look = unit_rows(1, seed=1)[0]
    moved = centre.centred(look)
    assert np.isclose(np.linalg.norm(moved), 1.0)
    shared = centre.vector / np.linalg.norm(centre.vector)
    assert moved @ shared < look @ shared


def test_too_few_photos_are_refused_with_the_number_needed():
    with pytest.raises(CalibrationError, match=f"at least {MIN_PHOTOS} photos, got 3"):
        ShopperCentre.of(unit_rows(3), INFO.tag)


def test_a_saved_centre_loads_back_for_its_model_and_is_refused_for_another(tmp_path):
    path = tmp_path / "centre.dat"
    ShopperCentre.of(unit_rows(20), INFO.tag).save(path)
    loaded = ShopperCentre.load(path, INFO)
    assert loaded.photos == 20 and loaded.model == INFO.tag
    other = ModelInfo("some-model", "2", dim=4, look_dim=3)
    with pytest.raises(CalibrationError, match="made by model some-model@1.*snapshop calibrate"):
        ShopperCentre.load(path, other)
    (tmp_path / "broken.npz").write_bytes(b"not a centre")
    with pytest.raises(CalibrationError, match="cannot read"):
        ShopperCentre.load(tmp_path / "broken.npz", INFO)


@pytest.fixture(scope="module")
def grocery_store(tmp_path_factory, encoder):
    """The grocery catalog ingested once (closed again: the CLI's processes open it too)."""
    folder = tmp_path_factory.mktemp("grocery-centre")
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(require(GROCERY) / "catalog.csv"), encoder, store, IngestSettings(), progress=False)
    return folder / "store"


@pytest.fixture()
def grocery(grocery_store, encoder):
    with open_store(StoreSettings(path=grocery_store), encoder.info) as store:
        yield grocery_store, Searcher(encoder, store)


def test_real_fruit_photos_find_their_product_first_more_often_centred(grocery):
    """80 real photos of fruit from one half of the shopper photos, searched with the centre of 60
    photos of every kind from the other half (photos only, no labels): the right variety comes
    first more often than in the same search uncentred."""
    _, searcher = grocery
    queries = pd.read_csv(GROCERY / "queries.csv", dtype=str)
    first, second = halves(list(queries.product_id))
    calibration = queries.iloc[first[::7]]
    fruit = queries.iloc[second]
    fruit = fruit[fruit.query_image.str.contains("_Fruit_")].iloc[::2]

    def encoded(frame):
        return [searcher.encode_photo(load_image_file(GROCERY / path)) for path in frame.query_image]

    centre = ShopperCentre.of(np.stack([e.look for e in encoded(calibration)]), searcher.encoder.info.tag)
    right = {"plain": 0, "centred": 0}
    for photo, product_id in zip(encoded(fruit), fruit.product_id):
        for name, used in (("plain", None), ("centred", centre)):
            searcher.use_shopper_centre(used)
            right[name] += searcher.search(SearchQuery(encoded_photo=photo, k=1)).results[0].product_id == product_id
    searcher.use_shopper_centre(None)
    assert right["centred"] >= right["plain"] + 4, right


def test_calibrate_writes_a_centre_that_search_uses_and_skips_a_broken_photo(grocery_store, tmp_path):
    photos = tmp_path / "shoppers"
    photos.mkdir()
    queries = pd.read_csv(GROCERY / "queries.csv").iloc[::40]
    for path in queries.query_image:
        (photos / path.split("/")[-1]).write_bytes((GROCERY / path).read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a photo")
    env = {"SNAPSHOP_STORE__PATH": str(grocery_store)}
    result = snapshop("calibrate", str(photos), "--out", str(tmp_path / "centre.npz"), cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr
    assert f"centre of {len(queries)} shopper photos (1 unreadable skipped)" in result.stdout
    assert "broken.jpg" in result.stderr
    searched = snapshop("search", "--image", str(GROCERY / queries.query_image.iloc[0]), "--k", "3", "--json",
                        cwd=tmp_path, env_extra={**env, "SNAPSHOP_SEARCH__SHOPPER_CENTRE": str(tmp_path / "centre.npz")})
    assert searched.returncode == 0, searched.stderr
    assert len(json.loads(searched.stdout)["data"]) == 3


def test_a_centre_of_another_model_stops_search_with_how_to_redo_it(grocery_store, tmp_path):
    ShopperCentre.of(unit_rows(20), INFO.tag).save(tmp_path / "old.npz")
    result = snapshop("search", "--text", "apple", cwd=tmp_path,
                      env_extra={"SNAPSHOP_STORE__PATH": str(grocery_store),
                                 "SNAPSHOP_SEARCH__SHOPPER_CENTRE": str(tmp_path / "old.npz")})
    assert result.returncode == 2
    assert "made by model some-model@1" in result.stderr and "snapshop calibrate" in result.stderr


def test_eval_can_centre_each_half_of_real_photos_on_the_other_and_as_they_come(grocery_store, tmp_path, encoder):
    from eval.harness import format_table, run_eval

    queries = pd.read_csv(GROCERY / "queries.csv").iloc[::5]
    queries["query_image"] = [str(GROCERY / q) for q in queries.query_image]
    csv = tmp_path / "queries.csv"
    queries.to_csv(csv, index=False)
    report = run_eval(encoder, GROCERY / "catalog.csv", queries_csv=csv, limit_queries=80, progress=False,
                      only={"photos"}, centre_halves=True, centre_learnt=True, search=SearchSettings(),
                      store_path=grocery_store)
    sets = report["query_sets"]
    assert sets["shopper_photos"]["fused"]["queries"] == sets["shopper_photos_learnt"]["fused"]["queries"] == len(queries)
    # The same photos, searched with other centres: the appearance signal ranks them otherwise.
    assert sets["shopper_photos_learnt"]["look"]["mrr"] != sets["shopper_photos"]["look"]["mrr"]
    table = format_table(report)
    assert "centred on the other half" in table and "shopper_photos_learnt by department" in table


def test_a_switch_to_another_models_index_searches_on_without_the_old_centre(grocery_store, encoder, tmp_path):
    """Serving: a centre of the model before a re-index does not fit the new one; the server
    switches anyway and searches uncentred, where a start with that centre is refused."""
    from api.runtime import searcher_after_switch
    from engine.settings import Settings

    ShopperCentre.of(unit_rows(20), INFO.tag).save(tmp_path / "old.npz")
    settings = Settings(store=StoreSettings(path=grocery_store), search=SearchSettings(shopper_centre=tmp_path / "old.npz"))
    with open_store(settings.store, encoder.info) as store:
        with pytest.raises(CalibrationError):
            Searcher(encoder, store, settings.search)
        searcher = searcher_after_switch(settings, encoder, store)
        assert searcher.shopper_centre is None
        assert searcher.search(SearchQuery(text="apple", k=3)).results
