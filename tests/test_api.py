"""The HTTP API through the real app, the real model and a real embedded Qdrant store.

One shop of 36 real products is loaded through the upsert endpoint once for the module; tests
that write use products of their own and leave the shop as they found it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from api.errors import InsecureSettings
from engine.errors import StoreUnavailable
from engine.settings import ApiSettings, IngestSettings, Settings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import pick_products, write_catalog

API_KEY = "test-api-key-4f9c2a"
MAX_UPLOAD = 200 * 1024
AUTH = {"X-API-Key": API_KEY}
FUZZ_EXAMPLES = 25  # per operation: the whole run stays well under a minute
NO_KEY = "this needs the API key (header X-API-Key or Authorization: Bearer)"


def api_settings(folder: Path, **api) -> Settings:
    return Settings(
        store=StoreSettings(path=folder / "store"),
        api=ApiSettings(api_key=API_KEY, images_root=folder / "shop", max_upload_bytes=MAX_UPLOAD,
                        max_upsert_records=50, **api),
    )


def records_of(catalog: Path) -> list[dict]:
    """Catalog rows as JSON records (missing cells as null, as a shop's client would send them)."""
    return json.loads(pd.read_csv(catalog).to_json(orient="records"))


@pytest.fixture(scope="module")
def shop(tmp_path_factory, small_rows, fashion_frame):
    """The shop's folder, its 36 records, and two more products (Flip Flops) for the write tests."""
    folder = tmp_path_factory.mktemp("api")
    records = records_of(write_catalog(small_rows, folder / "shop"))
    extra = records_of(write_catalog(pick_products(fashion_frame, 2, ["Flip Flops"]), folder / "shop", "extra.csv"))
    return folder, records, extra


@pytest.fixture(scope="module")
def client(shop, encoder):
    folder, records, _ = shop
    with TestClient(create_app(api_settings(folder), encoder=encoder)) as client:
        response = client.post("/products", json=records, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["added"] == len(records)
        yield client


@pytest.fixture()
def extra_product(client, shop):
    """A product added for one test and removed after it."""
    record = shop[2][0]
    assert client.post("/products", json=[record], headers=AUTH).json()["stored"] == 1
    yield record
    client.post("/products/bulk-delete", json={"ids": [str(record["id"])]}, headers=AUTH)


def photo_of(shop, record) -> bytes:
    return (shop[0] / "shop" / record["image"]).read_bytes()


def local(url: str) -> str:
    return url.removeprefix("http://testserver")


# --- health -------------------------------------------------------------------------------------
def test_health_says_ok(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_reports_the_store_and_model(client, encoder):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "products": 36, "model": encoder.info.tag, "store": "edge"}


def test_ready_is_503_when_the_store_does_not_answer(client, monkeypatch):
    def broken(*args, **kwargs):
        raise StoreUnavailable("shard closed")

    monkeypatch.setattr(client.app.state.runtime.store, "count", broken)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"detail": "the store does not answer: shard closed"}


# --- search -------------------------------------------------------------------------------------
def test_text_search_finds_the_kind_of_product_described(client):
    response = client.post("/search", data={"text": "analog wrist watch", "k": "5"})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == len(body["data"]) == 5
    assert sum(hit["category"] == "Watches" for hit in body["data"]) >= 4
    hit = body["data"][0]
    assert set(hit) == {"id", "title", "price", "category", "images", "score", "signals", "explanation", "in_stock",
                        "attributes", "variants", "rules"}
    assert hit["images"] == [f"http://testserver/images/{hit['id']}/0"]
    assert hit["signals"] and abs(sum(hit["explanation"].values()) - 1) < 1e-3


def test_a_photo_finds_its_own_product(client, shop):
    record = shop[1][20]
    files = {"photo": ("query.jpg", photo_of(shop, record), "image/jpeg")}
    response = client.post("/search", files=files, data={"k": "3"})
    assert response.status_code == 200
    assert str(record["id"]) in [hit["id"] for hit in response.json()["data"]]


def test_a_box_drawn_on_the_photo_searches_only_that_region(client, shop):
    """A shopper's photo of a shelf with the product in its lower right quarter: searching the box
    finds the product first, and the answer says which region was searched."""
    record = shop[1][7]
    product = Image.open(io.BytesIO(photo_of(shop, record))).convert("RGB").resize((200, 200))
    shelf = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).resize((400, 400))
    shelf.paste(product, (200, 200))
    buffer = io.BytesIO()
    shelf.save(buffer, "JPEG", quality=92)
    files = {"photo": ("shelf.jpg", buffer.getvalue(), "image/jpeg")}
    response = client.post("/search", files=files, data={"k": "3", "crop": "0.5,0.5,0.5,0.5"})
    assert response.status_code == 200
    assert response.json()["data"][0]["id"] == str(record["id"])
    assert response.json()["region"] == [0.5, 0.5, 0.5, 0.5]
    whole = client.post("/search", files=files, data={"k": "3"}).json()
    assert whole["region"] == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("crop, detail", [
    ("0.6,0.2,0.5,0.5", "crop (0.6, 0.2, 0.5, 0.5) is outside the photo: x + w and y + h must be at most 1 "
                        "(fractions of the photo's width and height)"),
    ("-0.1,0,0.5,0.5", "crop (-0.1, 0.0, 0.5, 0.5) is outside the photo: x and y must be >= 0, w and h > 0 "
                       "(fractions of the photo's width and height)"),
    ("0.1,0.1,0.5", "crop must be 4 numbers x,y,w,h (fractions of the photo), got 3"),
    ("a,b,c,d", "crop must be 4 numbers x,y,w,h (fractions of the photo), got 'a,b,c,d'"),
    ("0,0,0.01,0.01", "crop is 2x2 px of a 224x224 photo: at least 16 px a side are needed"),
])
def test_a_crop_outside_the_photo_is_422_with_the_reason(client, shop, crop, detail):
    files = {"photo": ("query.jpg", photo_of(shop, shop[1][3]), "image/jpeg")}
    response = client.post("/search", files=files, data={"crop": crop})
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


def test_a_crop_without_a_photo_is_422(client):
    response = client.post("/search", data={"text": "shirt", "crop": "0,0,0.5,0.5"})
    assert response.status_code == 422
    assert response.json() == {"detail": "crop is a box in the photo: send a photo with it"}


def test_photo_text_and_filters_together_keep_to_the_filters(client, shop):
    record = next(r for r in shop[1] if r["category"] == "Handbags")
    files = {"photo": ("bag.jpg", photo_of(shop, record), "image/jpeg")}
    data = {"text": "black", "category": ["Handbags", "Watches"], "min_price": "20", "max_price": "80", "k": "50"}
    hits = client.post("/search", files=files, data=data).json()["data"]
    expected = [r for r in shop[1] if r["category"] in ("Handbags", "Watches") and 20 <= r["price"] <= 80]
    assert len(hits) == len(expected) > 0
    assert all(hit["category"] in ("Handbags", "Watches") and 20 <= hit["price"] <= 80 for hit in hits)


def test_ranker_weights_per_request_change_the_explanation(client):
    weights = {"image": 1, "caption": 0, "text": 0, "bm25": 0, "category": 0, "price": 0, "personal": 0}
    hits = client.post("/search", data={"text": "blue jeans", "weights": json.dumps(weights)}).json()["data"]
    assert hits and all(hit["explanation"] == {"image": 1.0} for hit in hits)


def test_price_target_and_history_become_signals(client, shop):
    history = [str(shop[1][0]["id"])]
    data = {"text": "shirt", "price_target": "40", "history": history, "k": "5"}
    hits = client.post("/search", data=data).json()["data"]
    assert all({"price", "personal"} <= set(hit["signals"]) for hit in hits)


@pytest.mark.parametrize("data, detail", [
    ({"text": "shirt", "min_price": "100", "max_price": "10"}, "min_price 100.0 is above max_price 10.0"),
    ({}, "give a text, a photo, or both"),
    ({"text": "   "}, "give a text, a photo, or both"),
    ({"text": "shirt", "k": "500"}, "k must be between 1 and 200, got 500"),
])
def test_a_search_that_cannot_be_answered_is_422_with_the_reason(client, data, detail):
    response = client.post("/search", data=data)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


def test_unknown_ranker_weight_is_422_naming_the_known_ones(client):
    response = client.post("/search", data={"text": "shirt", "weights": '{"colour": 1}'})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("unknown ranker weight(s): colour; known: image, look, caption")


@pytest.mark.parametrize("field, value", [("weights", "not json"), ("weights", "[1, 2]"), ("min_price", "-1"),
                                          ("photo_text_mix", "1.5"), ("k", "0"), ("price_target", "0")])
def test_malformed_search_fields_are_422_naming_the_field(client, field, value):
    response = client.post("/search", data={"text": "shirt", field: value})
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]


def test_a_photo_over_the_limit_is_refused_by_its_content_length(client):
    photo = b"\xff\xd8" + b"0" * (MAX_UPLOAD + 300 * 1024)
    response = client.post("/search", files={"photo": ("big.jpg", photo, "image/jpeg")})
    assert response.status_code == 413
    size = response.request.headers["content-length"]
    assert response.json() == {"detail": f"the upload is {size} bytes, more than the limit of {MAX_UPLOAD} bytes "
                                         "(SNAPSHOP_API__MAX_UPLOAD_BYTES)"}


def test_a_photo_just_over_the_limit_is_refused_while_read(client):
    photo = b"\xff\xd8" + b"0" * MAX_UPLOAD  # the body fits the form's allowance, the photo does not
    response = client.post("/search", files={"photo": ("big.jpg", photo, "image/jpeg")})
    assert response.status_code == 413
    assert response.json() == {"detail": f"the upload is over {MAX_UPLOAD} bytes, more than the limit of "
                                         f"{MAX_UPLOAD} bytes (SNAPSHOP_API__MAX_UPLOAD_BYTES)"}


def test_a_body_without_content_length_is_counted_and_cut_off(client):
    def chunks():
        for _ in range(40):
            yield b"0" * 64 * 1024  # 2.5 MB in all, never declared

    response = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("the upload is more than ")


def test_a_photo_that_is_not_an_image_type_is_415(client):
    response = client.post("/search", files={"photo": ("notes.txt", b"hello", "text/plain")})
    assert response.status_code == 415
    assert response.json() == {"detail": "the photo must be an image (JPEG, PNG, WebP, GIF...), not 'text/plain'"}


@pytest.mark.parametrize("content, reason", [
    (b"hello, not a photo", "photo 'fake.jpg': not a readable image"),
    (b"", "photo 'fake.jpg': empty file (0 bytes)"),
])
def test_a_photo_that_does_not_decode_is_422_with_the_reason(client, content, reason):
    response = client.post("/search", files={"photo": ("fake.jpg", content, "image/jpeg")})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(reason)


def test_search_defaults_give_the_ranker_weights(client):
    body = client.get("/search/defaults").json()
    assert set(body["weights"]) == {"image", "look", "caption", "text", "bm25", "category", "price", "popularity",
                                    "personal", "match"}
    assert body["max_upload_bytes"] == MAX_UPLOAD and body["max_k"] == 200


# --- facets -------------------------------------------------------------------------------------
def test_facets_count_categories_and_prices(client, shop):
    body = client.get("/facets").json()
    assert body["total"] == 36
    assert {c["name"]: c["count"] for c in body["categories"]} == {
        name: 6 for name in ["Shirts", "Watches", "Sports Shoes", "Handbags", "Sunglasses", "Jeans"]}
    assert sum(bucket["count"] for bucket in body["price_histogram"]) == 36


def test_facets_follow_the_filters(client, shop):
    body = client.get("/facets", params={"category": ["Watches", "Jeans"], "max_price": 50}).json()
    expected = [r for r in shop[1] if r["category"] in ("Watches", "Jeans") and r["price"] <= 50]
    assert body["total"] == len(expected)
    assert {c["name"] for c in body["categories"]} <= {"Watches", "Jeans"}


def test_facets_with_an_inverted_price_range_are_422(client):
    response = client.get("/facets", params={"min_price": 9, "max_price": 1})
    assert response.status_code == 422
    assert response.json() == {"detail": "min_price 9.0 is above max_price 1.0"}


# --- products -----------------------------------------------------------------------------------
def test_a_product_by_id(client, shop):
    record = shop[1][3]
    response = client.get(f"/products/{record['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(record["id"]) and body["title"] == record["title"]
    assert body["price"] == record["price"] and body["category"] == record["category"]
    assert body["fields"]["colour"] == record["colour"]
    assert "content_hash" not in body["fields"]


def test_an_unknown_product_is_404(client):
    response = client.get("/products/no-such-id")
    assert response.status_code == 404
    assert response.json() == {"detail": "no product with id 'no-such-id'"}


def test_similar_products_look_alike_and_exclude_the_product(client, shop):
    record = next(r for r in shop[1] if r["category"] == "Sunglasses")
    response = client.get(f"/products/{record['id']}/similar", params={"k": 5})
    assert response.status_code == 200
    hits = response.json()["data"]
    assert len(hits) == 5 and str(record["id"]) not in [hit["id"] for hit in hits]
    assert hits[0]["category"] == "Sunglasses"


def test_similar_products_steer_away_from_negatives_and_keep_filters(client, shop):
    record, negative = shop[1][0], shop[1][1]
    params = {"k": 10, "negative": [negative["id"]], "max_price": 60}
    hits = client.get(f"/products/{record['id']}/similar", params=params).json()["data"]
    assert str(negative["id"]) not in [hit["id"] for hit in hits]
    assert all(hit["price"] <= 60 for hit in hits)


@pytest.mark.parametrize("path, detail", [
    ("/products/nope/similar", "no product with id 'nope'"),
    ("/products/{id}/similar?negative=nope", "no product with id 'nope' (given as a negative example)"),
])
def test_similar_to_an_unknown_product_is_404(client, shop, path, detail):
    response = client.get(path.format(id=shop[1][0]["id"]))
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


# --- images -------------------------------------------------------------------------------------
def test_product_photos_are_served_from_the_payload(client, shop):
    record = shop[1][5]
    url = client.get(f"/products/{record['id']}").json()["images"][0]
    response = client.get(local(url))
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == photo_of(shop, record)


@pytest.mark.parametrize("path, status, detail", [
    ("/images/{id}/1", 404, "product '{id}' has no photo 1"),
    ("/images/nope/0", 404, "no product with id 'nope'"),
    # %2F is a '/' inside the id: it names a product, never a path
    ("/images/..%2F..%2Fetc%2Fpasswd/0", 404, "no product with id '../../etc/passwd'"),
])
def test_only_listed_photos_of_known_products_are_served(client, shop, path, status, detail):
    product_id = shop[1][5]["id"]
    response = client.get(path.format(id=product_id))
    assert response.status_code == status
    assert response.json() == {"detail": detail.format(id=product_id)}


def test_a_photo_number_must_be_a_number(client, shop):
    response = client.get(f"/images/{shop[1][5]['id']}/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code in (404, 422)
    assert b"root:" not in response.content


def test_remote_photos_are_passed_through(client, extra_product):
    product_id = str(extra_product["id"])
    remote = "https://cdn.example.com/p/1.jpg"
    client.app.state.runtime.store.set_payload(product_id, {"image_files": [remote]})
    assert client.get(f"/products/{product_id}").json()["images"] == [remote]
    response = client.get(f"/images/{product_id}/0", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == remote


# --- writes -------------------------------------------------------------------------------------
WRITES = [
    ("post", "/products", {"json": [{"id": "w1", "title": "x", "image": "images/none.jpg"}]}),
    ("patch", "/products/{id}", {"json": {"price": 1.0}}),
    ("delete", "/products/{id}", {}),
    ("post", "/products/bulk-delete", {"json": {"ids": ["{id}"]}}),
]


@pytest.mark.parametrize("method, path, kwargs", WRITES)
@pytest.mark.parametrize("headers, status, detail", [
    ({}, 401, NO_KEY),
    ({"X-API-Key": "wrong"}, 403, "wrong API key"),
    ({"Authorization": "Bearer wrong"}, 403, "wrong API key"),
    ({"Authorization": f"Basic {API_KEY}"}, 401, NO_KEY),
])
def test_every_write_needs_the_right_key_and_changes_nothing_without(client, shop, method, path, kwargs,
                                                                     headers, status, detail):
    record = shop[1][7]
    kwargs = json.loads(json.dumps(kwargs).replace("{id}", str(record["id"])))
    before = client.get(f"/products/{record['id']}").json()
    response = client.request(method.upper(), path.format(id=record["id"]), headers=headers, **kwargs)
    assert response.status_code == status
    assert response.json() == {"detail": detail}
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get(f"/products/{record['id']}").json() == before
    assert client.get("/ready").json()["products"] == 36


def test_a_bearer_token_is_accepted(client, extra_product):
    response = client.patch(f"/products/{extra_product['id']}", json={"stock": 3},
                            headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200


def test_upsert_adds_then_finds_nothing_to_do_then_rewrites_only_the_payload(client, shop):
    record = shop[2][1]
    try:
        first = client.post("/products", json=[record], headers=AUTH).json()
        assert (first["added"], first["stored"], first["problems"]) == (1, 1, [])
        again = client.post("/products", json=[record], headers=AUTH).json()
        assert (again["added"], again["unchanged"]) == (0, 1)
        cheaper = client.post("/products", json=[{**record, "price": 9.5}], headers=AUTH).json()
        assert (cheaper["payload_only"], cheaper["updated"]) == (1, 0)
        assert client.get(f"/products/{record['id']}").json()["price"] == 9.5
    finally:
        client.delete(f"/products/{record['id']}", headers=AUTH)


def test_upsert_reports_bad_rows_by_number_and_stores_the_rest(client, shop):
    good = shop[2][1]
    records = [
        good,
        {"id": "no-title", "image": good["image"]},
        {"id": "private-url", "title": "Bag", "image": "http://127.0.0.1:9/bag.jpg"},
        {"id": "escapes", "title": "Bag", "image": "../../../etc/passwd"},
        {"title": "no id", "image": good["image"]},
        {"id": "missing-file", "title": "Bag", "images": ["images/does-not-exist.jpg"]},
    ]
    try:
        response = client.post("/products", json=records, headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert (body["received"], body["added"], body["stored"]) == (6, 1, 1)
        reasons: dict[tuple[int, str | None], list[str]] = {}
        for problem in body["problems"]:
            reasons.setdefault((problem["row"], problem["product_id"]), []).append(problem["reason"])
        assert reasons[(2, "no-title")] == ["missing or empty title [title]"]
        private = " ".join(reasons[(3, "private-url")])
        assert "(127.0.0.1)" in private and "SNAPSHOP_INGEST__ALLOW_PRIVATE_URLS" in private
        assert "outside the catalog's folder" in " ".join(reasons[(4, "escapes")])
        assert reasons[(5, None)] == ["missing id (one of id, product_id, sku) [id]"]
        assert "file not found" in " ".join(reasons[(6, "missing-file")])
        for row, product_id in [(3, "private-url"), (4, "escapes"), (6, "missing-file")]:
            assert "no readable image; product not stored" in reasons[(row, product_id)]
        for product_id in ("private-url", "escapes", "missing-file", "no-title"):
            assert client.get(f"/products/{product_id}").status_code == 404
    finally:
        client.delete(f"/products/{good['id']}", headers=AUTH)


@pytest.mark.parametrize("body, detail", [
    ([], "List should have at least 1 item after validation, not 0"),
    ({"id": "1"}, "Input should be a valid list"),
])
def test_upsert_of_a_malformed_body_is_422(client, body, detail):
    response = client.post("/products", json=body, headers=AUTH)
    assert response.status_code == 422
    assert [error["msg"] for error in response.json()["detail"]] == [detail]


def test_upsert_of_too_many_records_is_422(client):
    records = [{"id": str(n), "title": "x", "image": "a.jpg"} for n in range(51)]
    response = client.post("/products", json=records, headers=AUTH)
    assert response.status_code == 422
    assert response.json() == {"detail": "51 records is more than 50 per request (SNAPSHOP_API__MAX_UPSERT_RECORDS)"}


def test_patch_changes_price_category_and_stock_without_re_embedding(client, extra_product):
    product_id = str(extra_product["id"])
    store = client.app.state.runtime.store
    vectors_before = store.get([product_id], with_vectors=True)[product_id].image_vectors
    response = client.patch(f"/products/{product_id}", json={"price": 12.5, "category": "Sale", "stock": 0},
                            headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert (body["price"], body["category"], body["fields"]["stock"]) == (12.5, "Sale", 0)
    assert body["fields"]["colour"] == extra_product["colour"]  # other fields are kept
    after = store.get([product_id], with_vectors=True)[product_id].image_vectors
    assert (after == vectors_before).all()
    data = {"text": "flip flops", "category": "Sale", "max_price": "13"}
    assert client.post("/search", data=data).json()["data"] == []  # stock 0: hidden by default
    hits = client.post("/search", data={**data, "out_of_stock": "show"}).json()["data"]
    assert [(hit["id"], hit["in_stock"]) for hit in hits] == [(product_id, False)]


@pytest.mark.parametrize("body, status, detail", [
    ({}, 422, "Value error, give at least one of price, category, stock, availability"),
    ({"price": -1}, 422, "Value error, price -1 must be a finite number >= 0"),
    ({"colour": "red"}, 422, "Extra inputs are not permitted"),
    ({"stock": 1.5}, 422, "Value error, stock 1.5 is not a whole number"),
])
def test_a_patch_that_changes_nothing_valid_is_422(client, extra_product, body, status, detail):
    response = client.patch(f"/products/{extra_product['id']}", json=body, headers=AUTH)
    assert response.status_code == status
    assert [error["msg"] for error in response.json()["detail"]] == [detail]


def test_patch_of_an_unknown_product_is_404(client):
    response = client.patch("/products/nope", json={"price": 1}, headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"detail": "no product with id 'nope'"}


def test_delete_removes_a_product_and_a_second_delete_is_404(client, extra_product):
    product_id = str(extra_product["id"])
    response = client.delete(f"/products/{product_id}", headers=AUTH)
    assert response.status_code == 204 and response.content == b""
    assert client.get(f"/products/{product_id}").status_code == 404
    again = client.delete(f"/products/{product_id}", headers=AUTH)
    assert again.status_code == 404 and again.json() == {"detail": f"no product with id '{product_id}'"}


def test_bulk_delete_says_what_was_deleted_and_what_was_not_found(client, extra_product):
    product_id = str(extra_product["id"])
    response = client.post("/products/bulk-delete", json={"ids": [product_id, "nope", product_id]}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"deleted": [product_id], "not_found": ["nope"]}
    assert client.get("/ready").json()["products"] == 36


# --- pages and docs -----------------------------------------------------------------------------
def test_the_shopper_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text
    for path in ("/static/app.js", "/static/app.css", "/merchandiser"):
        assert client.get(path).status_code == 200


def test_openapi_and_docs(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/facets", "/products", "/products/{product_id}", "/products/{product_id}/similar",
            "/images/{product_id}/{n}", "/health", "/ready"} <= set(schema["paths"])
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])


# --- start-up and shut-down ---------------------------------------------------------------------
@pytest.mark.parametrize("key", ["snapshop-dev-key", "", "  "])
def test_production_refuses_the_default_or_an_empty_key(tmp_path, key):
    settings = Settings(environment="production", store=StoreSettings(path=tmp_path), api=ApiSettings(api_key=key))
    with pytest.raises(InsecureSettings, match="SNAPSHOP_API__API_KEY"):
        create_app(settings)


def test_production_starts_with_a_real_key(tmp_path):
    create_app(Settings(environment="production", store=StoreSettings(path=tmp_path),
                        api=ApiSettings(api_key="a-long-random-secret")))


def test_the_app_holds_the_store_while_it_runs_and_lets_go_when_it_stops(tmp_path, encoder):
    settings = api_settings(tmp_path)
    with TestClient(create_app(settings, encoder=encoder)) as client:
        assert client.get("/ready").json()["products"] == 0
        with pytest.raises(StoreUnavailable):
            open_store(settings.store, encoder.info)
    open_store(settings.store, encoder.info).close()


# --- schemathesis -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, small_rows, encoder):
    """An app of its own (six products) that random but authorised writes may change at will."""
    folder = tmp_path_factory.mktemp("fuzz")
    catalog = write_catalog(small_rows.iloc[::6], folder / "shop")
    settings = api_settings(folder)
    with open_store(settings.store, encoder.info) as store:
        ingest_catalog(read_catalog(catalog), encoder, store, IngestSettings(), progress=False)
    return create_app(settings, encoder=encoder)


def test_no_generated_request_makes_the_api_fail(fuzzed_app):
    """Requests made from the OpenAPI schema, valid and invalid, with the key: never a 5xx, and every
    answer as documented."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=strategy)
        @hypothesis_settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(HealthCheck))
        def check(case):
            if case.media_type == "multipart/form-data" and isinstance(case.body, dict):
                # A form has no null: a field left empty is a field left out.
                case.body = {name: value for name, value in case.body.items() if value is not None}
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        except BaseException as e:
            e.add_note(f"while fuzzing {operation.label}")
            raise
