"""Property-based fuzzing of product records, through a catalog file and through every API body.

Records are made of hostile values: NaN, Infinity, numbers past 64 bits, lone surrogates,
control characters, odd ids, deep nesting, wrong types. Whatever is made, the answer is a row
problem or a 4xx, never a crash or a 5xx; after a restart the store opens, holds exactly the
products that were accepted, and searches. Bounded so that both run in about a minute
(``SNAPSHOP_FUZZ_EXAMPLES`` raises the count).
"""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from engine.errors import CatalogError
from engine.settings import IngestSettings, StoreSettings
from engine.store import CAPTION_VECTOR, SearchFilters, open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, require
from tests.test_api import AUTH, api_settings

EXAMPLES = int(os.environ.get("SNAPSHOP_FUZZ_EXAMPLES", "150")) // 5
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
JSON = {**AUTH, "Content-Type": "application/json"}

# --- hostile values ---------------------------------------------------------------------------------
ODD_TEXT = ["", " ", "..", ".", "a/b", "?x#y", "%2F", "\ud800", "a\x00b", "\n", "x" * 300, "ünï ✓", "1e308",
            "1_000", "NaN", "-0", "12,50", "1,299.00"]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**30, 1e308, 5e-324, -0.0]),
)
TEXT = st.one_of(st.text(max_size=20), st.sampled_from(ODD_TEXT))
FORM_TEXT = TEXT.filter(lambda text: "\ud800" not in text)  # a form is sent encoded: no lone surrogates
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(TEXT, inner, max_size=3)), max_leaves=12)


def deep(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


EXTRA = st.one_of(VALUES, st.integers(10, 200).map(deep))


def records(image: str):
    """Catalog-like records: half of them with an id, a title and a real photo (so that many are
    stored, with hostile extra fields), half of anything."""
    product = st.fixed_dictionaries(
        {"id": st.one_of(st.integers(0, 50), st.sampled_from(["a/b", "?x#y", "%2F", "ünï ✓", "x" * 256])),
         "title": st.just("fuzzed shirt"), "image": st.just(image), "specs": EXTRA},
        optional={"price": st.one_of(NUMBERS, TEXT), "category": TEXT, "colour": EXTRA})
    anything = st.fixed_dictionaries(
        {"id": st.one_of(TEXT, st.integers(0, 50), NUMBERS)},
        optional={"title": st.one_of(st.just("fuzzed shirt"), TEXT, VALUES), "image": st.just(image),
                  "price": st.one_of(NUMBERS, TEXT), "category": st.one_of(TEXT, VALUES),
                  "colour": EXTRA, "specs": EXTRA})
    return st.lists(st.one_of(product, anything), min_size=1, max_size=4)


def photo_folder(folder) -> str:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(next(iter(sorted((require(FASHION) / "images").glob("*.jpg")))), folder / "images" / "p.jpg")
    return "images/p.jpg"


def reopened_count(store_settings, encoder) -> int:
    with open_store(store_settings, encoder.info) as store:
        count = store.count()
        vector = encoder.encode_texts(["fuzzed shirt"])[0]
        assert len(store.query(vector, CAPTION_VECTOR, SearchFilters(), 5)) == min(count, 5)
        return count


# --- catalogs -------------------------------------------------------------------------------------
def test_fuzzed_jsonl_catalogs_store_only_what_reads_back_after_a_restart(tmp_path, encoder):
    image = photo_folder(tmp_path)
    store_settings = StoreSettings(path=tmp_path / "store")
    accepted: set[str] = set()

    @FUZZ
    @given(batch=records(image))
    def ingest(batch):
        path = tmp_path / "catalog.jsonl"
        path.write_text("\n".join(json.dumps(record) for record in batch) + "\n", encoding="utf-8")
        try:
            catalog = read_catalog(path)
        except CatalogError as e:  # no title or image column at all: one error naming the file
            assert str(path) in str(e)
            return
        assert len(catalog.rows) + len(catalog.errors) == len(batch)
        with open_store(store_settings, encoder.info) as store:
            summary = ingest_catalog(catalog, encoder, store, IngestSettings(), progress=False)
            accepted.update(row.product_id for row in catalog.rows)
            assert summary.stored == len(catalog.rows)
            assert store.count() == len(accepted)

    ingest()
    assert reopened_count(store_settings, encoder) == len(accepted) > 0


# --- every API body ----------------------------------------------------------------------------------
def body(value) -> str:
    return json.dumps(value, allow_nan=True)


@pytest.fixture()
def app_folder(tmp_path):
    photo_folder(tmp_path / "shop")
    return tmp_path


def test_fuzzed_api_bodies_are_never_a_5xx_and_the_store_reopens_whole(app_folder, encoder):
    app_settings = api_settings(app_folder)
    ids = st.one_of(TEXT, st.integers(0, 50).map(str))

    upserts = st.tuples(st.just("upsert"), st.one_of(records("images/p.jpg"), records("images/p.jpg"), VALUES))
    requests = st.one_of(
        upserts, upserts, upserts,
        st.tuples(st.just("patch"), st.tuples(ids, st.one_of(
            st.fixed_dictionaries({}, optional={"price": st.one_of(NUMBERS, TEXT), "category": st.one_of(TEXT, VALUES),
                                                "stock": st.one_of(NUMBERS, TEXT)}), VALUES))),
        st.tuples(st.just("delete"), st.one_of(st.fixed_dictionaries({"ids": st.lists(st.one_of(ids, NUMBERS))}),
                                               VALUES)),
        st.tuples(st.just("get"), ids),
        st.tuples(st.just("search"), st.fixed_dictionaries({"text": FORM_TEXT}, optional={
            "weights": st.one_of(VALUES.map(body), FORM_TEXT), "min_price": FORM_TEXT, "history": FORM_TEXT,
            "k": FORM_TEXT})),
    )
    with TestClient(create_app(app_settings, encoder=encoder)) as client:

        @FUZZ
        @given(request=requests)
        def call(request):
            kind, value = request
            if kind == "upsert":
                response = client.post("/products", content=body(value), headers=JSON)
            elif kind == "patch":
                product_id, patch = value
                response = client.patch("/products/" + quote(product_id, safe="", errors="surrogatepass"),
                                        content=body(patch), headers=JSON)
            elif kind == "delete":
                response = client.post("/products/bulk-delete", content=body(value), headers=JSON)
            elif kind == "get":
                path = "/products/" + quote(value, safe="", errors="surrogatepass")
                response = client.get(path)
                if response.status_code == 200:
                    for url in response.json()["images"]:
                        assert client.get(url).status_code == 200
                    response = client.get(path + "/similar")
            else:
                response = client.post("/search", data=value)
            assert response.status_code < 500, (kind, value, response.text)

        call()
        held = client.get("/ready").json()["products"]
    assert reopened_count(app_settings.store, encoder) == held
    with TestClient(create_app(app_settings, encoder=encoder)) as client:
        assert client.get("/ready").json()["products"] == held
        assert client.post("/search", data={"text": "fuzzed shirt"}).status_code == 200
