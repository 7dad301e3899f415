"""The product service: typed payloads, get / patch / delete through one door; delete loads no model."""

import os
import subprocess
import sys

import numpy as np
import pytest

from engine.errors import InvalidProduct, ProductNotFound, StoreError
from engine.model_info import ModelInfo
from engine.products import PATCHED, ProductPayload, Products, new_payload, stored_form
from engine.settings import StoreSettings
from engine.store import ProductPoint, open_existing_store, open_store
from tests.conftest import REPO

INFO = ModelInfo("snapshop-lit-fashion", "1-test", 8)


def point(product_id: str, title: str, price: float, category: str, seed: int) -> ProductPoint:
    vectors = np.random.default_rng(seed).standard_normal((2, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payload = new_payload(product_id, title, price, category, [f"{product_id}.jpg"], [f"/photos/{product_id}.jpg"],
                          {"colour": "Black", "stock": 3}, "c-hash", "m-hash", INFO.tag)
    return ProductPoint(product_id, vectors, vectors[0], stored_form(payload))


@pytest.fixture(params=["edge", "server"])
def settings(request, tmp_path):
    return StoreSettings(path=tmp_path / "store") if request.param == "edge" else StoreSettings(url=":memory:")


@pytest.fixture()
def products(settings):
    with open_store(settings, INFO) as store:
        service = Products(store)
        service.upsert([point("shirt-1", "Black shirt", 20.0, "Shirts", 1), point("watch-1", "Watch", 99.5, "Watches", 2)])
        yield service


def test_products_come_back_typed(products):
    shirt = products.get("shirt-1")
    assert isinstance(shirt, ProductPayload)
    assert (shirt.product_id, shirt.title, shirt.price, shirt.category) == ("shirt-1", "Black shirt", 20.0, "Shirts")
    assert shirt.fields == {"colour": "Black", "stock": 3} and shirt.photo_sources == ["/photos/shirt-1.jpg"]
    assert products.bookkeeping()["watch-1"].content_hash == "c-hash"
    with pytest.raises(ProductNotFound, match="no product with id 'nope'"):
        products.get("nope")


def test_a_patch_changes_the_payload_only_and_marks_it_for_the_next_ingest(products):
    patched = products.patch("shirt-1", {"price": 25, "stock": 0})
    stored = products.get("shirt-1")
    assert patched == stored
    assert stored.price == 25.0 and stored.fields == {"colour": "Black", "stock": 0} and stored.title == "Black shirt"
    assert stored.meta_hash == PATCHED and products.bookkeeping()["shirt-1"].content_hash == "c-hash"
    # The one validation of product records (engine.records) checks a patch, whoever sends it.
    with pytest.raises(InvalidProduct, match="price"):
        products.patch("shirt-1", {"price": -5})
    with pytest.raises(InvalidProduct, match="stock"):
        products.patch("shirt-1", {"stock": -1})
    assert products.get("shirt-1").price == 25.0
    with pytest.raises(ProductNotFound):
        products.patch("nope", {"price": 1})


def test_delete_says_what_was_deleted_and_what_was_not_found(products):
    assert products.delete(["watch-1", "nope", "watch-1"]) == (["watch-1"], ["nope"])
    assert products.get_many(["watch-1", "shirt-1"]).keys() == {"shirt-1"}
    with pytest.raises(ProductNotFound):
        products.delete_one("watch-1")


def test_snapshop_delete_loads_no_model(tmp_path):
    store_path = tmp_path / "store"
    with open_store(StoreSettings(path=store_path), INFO) as store:
        Products(store).upsert([point("shirt-1", "Black shirt", 20.0, "Shirts", 1), point("watch-1", "Watch", 9.0,
                                                                                            "Watches", 2)])
    probe = ("import sys\nfrom snapshop.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print('exit', e.code)\nprint('torch' in sys.modules)")
    # A model that does not exist: loading it would fail.
    env = {**os.environ, "PYTHONPATH": str(REPO), "SNAPSHOP_MODEL__NAME": "no-such-model"}
    out = subprocess.run([sys.executable, "-c", probe, "delete", "watch-1", "gone", "--store", str(store_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.splitlines()[-3:] == ["deleted 1 products; not found: gone", "exit 0", "False"], out.stderr
    with open_existing_store(StoreSettings(path=store_path)) as store:
        assert store.info == INFO and list(Products(store).get_many(["shirt-1", "watch-1"])) == ["shirt-1"]
    with pytest.raises(StoreError, match="there is no store"):
        open_existing_store(StoreSettings(path=tmp_path / "elsewhere"))
