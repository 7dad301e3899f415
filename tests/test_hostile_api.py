"""Hostile API bodies: NaN, Infinity, deep nesting and bad numbers are a row problem in an upsert
(the other records are stored) and a 422 with the reason elsewhere; never a 5xx, never a
poisoned store. Bodies are sent as raw JSON text, as a hostile client would: Python's JSON
reader (and FastAPI's) takes NaN and Infinity, which no JSON answer can carry back."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.records import MAX_DEPTH
from tests.conftest import pick_products, write_catalog
from tests.test_api import AUTH, api_settings, records_of

JSON = {**AUTH, "Content-Type": "application/json"}


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def shop(tmp_path_factory, fashion_frame):
    folder = tmp_path_factory.mktemp("hostile-api")
    records = records_of(write_catalog(pick_products(fashion_frame, 3, ["Flip Flops"]), folder / "shop"))
    return folder, records


@pytest.fixture(scope="module")
def client(shop, encoder):
    with TestClient(create_app(api_settings(shop[0]), encoder=encoder)) as client:
        yield client


def upsert(client, text: str) -> dict:
    response = client.post("/products", content=text, headers=JSON)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_deeply_nested_record_is_a_row_problem_and_the_store_still_searches(client, shop):
    good, other = shop[1][0], shop[1][1]
    body = upsert(client, json.dumps([{**other, "specs": nested(150)}, good]))
    assert (body["received"], body["added"]) == (2, 1)
    assert body["problems"] == [{"row": 1, "product_id": str(other["id"]), "reason":
                                 f"lists or objects nested too deeply (the limit is {MAX_DEPTH} levels inside a "
                                 "field) [specs]"}]
    response = client.post("/search", data={"text": "flip flops"})
    assert response.status_code == 200 and str(good["id"]) in [hit["id"] for hit in response.json()["data"]]
    assert client.delete(f"/products/{good['id']}", headers=AUTH).status_code == 204


@pytest.mark.parametrize("extra, reason", [
    ('"weight": NaN', "NaN is not a number (JSON has no NaN) [weight]"),
    ('"weight": Infinity', "inf is not a finite number [weight]"),
    ('"weight": 1e999', "inf is not a finite number [weight]"),
    ('"sizes": [1, -Infinity]', "-inf is not a finite number [sizes]"),
    ('"stock": 1000000000000000000000000000000',
     "the number 1000000000000000000000000000000 is outside the 64-bit integer range [stock]"),
])
def test_a_non_finite_number_loses_its_record_only(client, shop, extra, reason):
    bad, good = shop[1][1], shop[1][2]
    text = json.dumps([bad, good])
    text = text.replace("{", "{" + extra + ", ", 1)
    body = upsert(client, text)
    assert (body["received"], body["stored"]) == (2, 1)
    assert [(p["row"], p["reason"]) for p in body["problems"]] == [(1, reason)]
    assert client.get(f"/products/{good['id']}").status_code == 200
    assert client.delete(f"/products/{good['id']}", headers=AUTH).status_code == 204


@pytest.fixture()
def product(client, shop):
    record = shop[1][0]
    assert upsert(client, json.dumps([record]))["stored"] == 1
    yield record
    client.delete(f"/products/{record['id']}", headers=AUTH)


@pytest.mark.parametrize("body, message", [
    ('{"price": NaN}', "Value error, NaN is not a number (JSON has no NaN)"),
    ('{"price": Infinity}', "Value error, price inf must be a finite number >= 0"),
    ('{"price": 1e308}', "Value error, price 1e+308 is more than the limit of 1e+12"),
    ('{"price": "1_000"}', "Value error, price '1_000' is not a number"),
    ('{"stock": 1e30}', "Value error, stock 1e+30 must be from 0 to 1000000000000"),
    ('{"stock": 1000000000000000000000000000000}',
     "Value error, stock 1000000000000000000000000000000 must be from 0 to 1000000000000"),
    ('{"category": "\\ud800"}', "Value error, text holds an unpaired surrogate at character 0 (not valid Unicode)"),
])
def test_a_patch_with_a_number_or_text_no_store_can_hold_is_422_and_changes_nothing(client, product, body,
                                                                                   message):
    before = client.get(f"/products/{product['id']}").json()
    response = client.patch(f"/products/{product['id']}", content=body, headers=JSON)
    assert response.status_code == 422
    assert [error["msg"] for error in response.json()["detail"]] == [message]
    assert client.get(f"/products/{product['id']}").json() == before


@pytest.mark.parametrize("body", ['{"ids": [NaN]}', '{"ids": [Infinity, "x"]}', '{"ids": ["\\udc00"]}'])
def test_a_bulk_delete_with_nan_or_broken_text_is_422(client, body):
    response = client.post("/products/bulk-delete", content=body, headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "ids", 0]


def test_a_nan_ranker_weight_is_refused_as_not_finite(client):
    response = client.post("/search", data={"text": "shoes", "weights": '{"image": NaN}'})
    assert response.status_code == 422
    assert "finite number" in response.text


# --- ids are opaque -----------------------------------------------------------------------------
ODD_IDS = ["a/b", "x/similar", "what?", "#1", "../etc/passwd", "50%", "%2F", "with space", "ünï/cödé ✓", "a\\b",
           "+&=;,", "bulk-delete"]


def path_of(product_id: str) -> str:
    return "/products/" + quote(product_id, safe="")


def test_any_id_the_catalog_holds_works_in_every_route_and_link(client, shop):
    template = shop[1][0]
    records = [{**template, "id": product_id, "title": f"odd id flip flop {n}"}
               for n, product_id in enumerate(ODD_IDS)]
    assert upsert(client, json.dumps(records))["stored"] == len(ODD_IDS)
    try:
        hits = client.post("/search", data={"text": "odd id flip flop", "k": 50})
        assert hits.status_code == 200
        by_id = {hit["id"]: hit for hit in hits.json()["data"]}
        assert set(ODD_IDS) <= set(by_id)
        for n, product_id in enumerate(ODD_IDS):
            image = client.get(by_id[product_id]["images"][0])
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg", product_id
            product = client.get(path_of(product_id))
            assert (product.status_code, product.json()["id"]) == (200, product_id)
            assert product.json()["title"] == f"odd id flip flop {n}"
            similar = client.get(path_of(product_id) + "/similar", params={"k": 3})
            assert similar.status_code == 200 and product_id not in [h["id"] for h in similar.json()["data"]]
            patched = client.patch(path_of(product_id), json={"price": n}, headers=AUTH)
            assert (patched.status_code, patched.json()["price"]) == (200, n)
        for product_id in ODD_IDS:
            assert client.delete(path_of(product_id), headers=AUTH).status_code == 204, product_id
            assert client.get(path_of(product_id)).status_code == 404
        assert client.get(path_of("a")).status_code == 404  # 'a/b' was never 'a'
    finally:
        client.post("/products/bulk-delete", json={"ids": ODD_IDS}, headers=AUTH)


# --- photos -------------------------------------------------------------------------------------
def test_a_photo_over_the_pixel_limit_is_422_before_it_is_decoded(client):
    from tests.test_hostile_photos import png

    data = png(7200, 7200, level=9)  # 51.8 megapixels in 50 KB
    assert len(data) < 200 * 1024
    response = client.post("/search", files={"photo": ("big.png", data, "image/png")})
    assert response.status_code == 422
    assert response.json()["detail"] == ("photo 'big.png': 7200x7200 pixels is more than the limit of 50000000 "
                                         "(possible decompression bomb)")
    assert client.app.state.runtime.decode_budget.in_use == 0


# --- writes -------------------------------------------------------------------------------------
def test_an_upsert_reports_each_record_and_a_retry_after_a_cut_short_request_is_safe(client, shop):
    records = shop[1] + [{"id": "no-title", "image": shop[1][0]["image"]}]
    ids = [str(record["id"]) for record in shop[1]]
    try:
        # A request cut short after its first batch is, for the store, the first record alone.
        first = upsert(client, json.dumps(records[:1]))
        assert [r["outcome"] for r in first["records"]] == ["added"]
        retry = upsert(client, json.dumps(records))
        assert [(r["row"], r["product_id"], r["outcome"]) for r in retry["records"]] == [
            (1, ids[0], "unchanged"), (2, ids[1], "added"), (3, ids[2], "added"), (4, "no-title", "skipped")]
        assert retry["problems"][0]["row"] == 4
        again = upsert(client, json.dumps(records))
        assert [r["outcome"] for r in again["records"]] == ["unchanged"] * 3 + ["skipped"]
        assert client.get("/ready").json()["products"] == 3
    finally:
        client.post("/products/bulk-delete", json={"ids": ids}, headers=AUTH)
