"""What a shop's search page is built on, through the real app, model and embedded store: sorts
with a relevance floor, pages cut from one stable list, attribute filters and facets, stock.

One shop of 1,040 real fashion products (more than 20 pages of 48), with a seeded rating column
for the popularity sort, is ingested once for the module.
"""

from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.settings import DEV_API_KEY, ApiSettings, IngestSettings, SearchSettings, Settings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import pick_products, write_catalog

PAGE = 48
PAGES = 21  # page 21 is the one past 20 full pages
CATEGORIES = ["Tshirts", "Shirts", "Casual Shoes", "Watches", "Sports Shoes", "Kurtas", "Tops", "Handbags",
              "Heels", "Sunglasses", "Wallets", "Flip Flops", "Belts"]


@pytest.fixture(scope="module")
def page_shop(tmp_path_factory, fashion_frame, encoder):
    folder = tmp_path_factory.mktemp("pages")
    rows = pick_products(fashion_frame, 80, CATEGORIES)
    rng = random.Random(7)
    rows["rating"] = [round(rng.uniform(1, 5), 1) for _ in range(len(rows))]
    rows["availability"] = ["out_of_stock" if rng.random() < 0.05 else "in_stock" for _ in range(len(rows))]
    catalog = read_catalog(write_catalog(rows, folder / "shop"))
    assert not catalog.errors and len(catalog.rows) == len(rows) >= PAGE * PAGES
    settings = Settings(store=StoreSettings(path=folder / "store"),
                        api=ApiSettings(images_root=folder / "shop"), search=SearchSettings())
    with open_store(settings.store, encoder.info) as store:
        summary = ingest_catalog(catalog, encoder, store, IngestSettings(), progress=False)
        assert summary.stored == len(rows)
    return settings, rows


@pytest.fixture(scope="module")
def client(page_shop, encoder):
    with TestClient(create_app(page_shop[0], encoder=encoder)) as client:
        yield client


def pages(client, data: dict, size: int = PAGE, count: int = PAGES) -> list[dict]:
    data = {"out_of_stock": "show", **data}
    """``count`` pages of ``size``, following next_offset from offset 0."""
    answers, offset = [], 0
    for _ in range(count):
        response = client.post("/search", data={**data, "k": str(size), "offset": str(offset)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["offset"] == offset and body["count"] == len(body["data"])
        answers.append(body)
        if body["next_offset"] is None:
            break
        offset = body["next_offset"]
    return answers


def ids(answers: list[dict]) -> list[str]:
    return [hit["id"] for body in answers for hit in body["data"]]


def test_twenty_pages_of_48_never_repeat_or_skip_a_product(client):
    by_48 = pages(client, {"text": "casual shoes for men"})
    assert len(by_48) == PAGES and all(body["count"] == PAGE for body in by_48[:20])
    listed = ids(by_48)
    assert len(listed) == len(set(listed)) >= 20 * PAGE
    # The same list cut into pages of another size: no page boundary moves a product.
    by_96 = pages(client, {"text": "casual shoes for men"}, size=96, count=11)
    assert ids(by_96)[:len(listed)] == listed[:len(ids(by_96))]
    for body in by_48:
        scores = [hit["score"] for hit in body["data"]]
        assert scores == sorted(scores, reverse=True)
    assert by_48[0]["data"][0]["score"] >= by_48[-1]["data"][-1]["score"]


@pytest.mark.parametrize("sort, key, descending", [
    ("price_asc", lambda row: row["price"], False),
    ("price_desc", lambda row: row["price"], True),
    ("newest", lambda row: row["year"], True),
    ("popularity", lambda row: row["rating"], True),
])
def test_every_page_of_a_sorted_list_is_in_order(client, page_shop, sort, key, descending):
    rows = page_shop[1].set_index(page_shop[1]["id"].astype(str))
    answers = pages(client, {"text": "watch", "sort": sort, "floor": "0", "out_of_stock": "show"})
    assert len(answers) == PAGES and answers[0]["total"] >= 20 * PAGE
    listed = ids(answers)
    assert len(listed) == len(set(listed))
    for body in answers:  # in order within every page and across them
        values = [key(rows.loc[hit["id"]]) for hit in body["data"] if rows.loc[hit["id"]].notna().all()]
        assert values == sorted(values, reverse=descending), f"page at {body['offset']} out of {sort} order"
    every = [key(rows.loc[pid]) for pid in listed]
    assert every == sorted(every, reverse=descending)


def test_a_sorted_list_holds_only_products_above_the_floor(client):
    relevance = client.post("/search", data={"text": "black leather wallet", "k": "200", "offset": "0"}).json()
    default_floor = client.get("/search/defaults").json()["relevance_floor"]
    expected = [hit["id"] for hit in relevance["data"] if hit["score"] >= default_floor]
    cheapest = client.post("/search", data={"text": "black leather wallet", "sort": "price_asc", "k": "200"}).json()
    assert 0 < cheapest["total"] == len(expected) < relevance["total"]
    assert sorted(hit["id"] for hit in cheapest["data"]) == sorted(expected)
    assert all(hit["category"] == "Wallets" for hit in cheapest["data"][:10])
    prices = [hit["price"] for hit in cheapest["data"]]
    assert prices == sorted(prices)
    # A stricter floor per request: fewer products, each at least that relevant.
    strict = client.post("/search", data={"text": "black leather wallet", "sort": "price_asc", "k": "200",
                                          "floor": "0.9"}).json()
    assert strict["total"] < cheapest["total"] and all(hit["score"] >= 0.9 for hit in strict["data"])


def test_a_plain_search_is_the_first_page_of_the_paged_list(client):
    plain = client.post("/search", data={"text": "red t-shirt", "k": "12"}).json()
    first = client.post("/search", data={"text": "red t-shirt", "k": "12", "offset": "0"}).json()
    assert [hit["id"] for hit in plain["data"][:10]] == [hit["id"] for hit in first["data"][:10]]
    assert plain["next_offset"] is None and first["next_offset"] == 12


@pytest.mark.parametrize("data, detail", [
    ({"offset": "1000", "k": "48"}, "offset 1000 is past the 1000 products a query ranks (SNAPSHOP_SEARCH__DEPTH)"),
])
def test_a_page_past_the_ranked_depth_is_422_with_the_reason(client, data, detail):
    response = client.post("/search", data={"text": "shirt", **data})
    assert response.status_code == 422 and response.json() == {"detail": detail}


@pytest.mark.parametrize("field, value", [("sort", "cheapest"), ("offset", "-1"), ("floor", "1.5")])
def test_malformed_page_fields_are_422_naming_the_field(client, field, value):
    response = client.post("/search", data={"text": "shirt", field: value})
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]


def test_openapi_documents_every_search_page_parameter(client):
    openapi = client.get("/openapi.json").json()
    schema = openapi["components"]["schemas"]
    form = schema["SearchForm"]["properties"]
    for name in ("sort", "offset", "floor", "attributes", "facets", "out_of_stock"):
        assert form[name]["description"], name
    assert set(schema["Sort"]["enum"]) == {"relevance", "price_asc", "price_desc", "newest", "popularity"}
    assert {"total", "offset", "next_offset", "facets"} <= set(schema["SearchResults"]["properties"])
    facets_params = {p["name"]: p for p in openapi["paths"]["/facets"]["get"]["parameters"]}
    assert facets_params["attributes"]["description"]
    assert {"stock", "availability"} <= set(schema["ProductPatch"]["properties"])


# --- attributes and facets ----------------------------------------------------------------------
def catalog_of(page_shop):
    rows = page_shop[1].copy()
    rows["id"] = rows["id"].astype(str)
    return rows.set_index("id")


def test_catalog_columns_become_attributes_with_catalog_wide_facets(client, page_shop):
    rows = page_shop[1]
    body = client.get("/facets").json()
    facets = {facet["name"]: {v["value"]: v["count"] for v in facet["values"]} for facet in body["attributes"]}
    assert {"gender", "colour", "season", "usage", "availability"} <= set(facets)
    assert "title" not in facets and "image" not in facets
    assert {"year", "rating"} <= set(body["numbers"])
    assert facets["colour"] == rows["colour"].value_counts().to_dict()
    assert body["total"] == len(rows)


def test_attribute_filters_any_of_and_ranges_keep_to_them(client, page_shop):
    rows = catalog_of(page_shop)
    wanted = {"colour": ["Black", "White"], "year": {"min": 2012, "max": 2015}}
    data = {"text": "casual shoes", "attributes": json.dumps(wanted), "k": "200", "offset": "0",
            "out_of_stock": "show"}
    body = client.post("/search", data=data).json()
    expected = rows[rows.colour.isin(["Black", "White"]) & rows.year.between(2012, 2015)]
    assert body["total"] == len(expected) > 0  # fewer than the depth: every match is ranked
    for hit in body["data"]:
        assert hit["attributes"]["colour"] in ("Black", "White") and 2012 <= hit["attributes"]["year"] <= 2015
    counted = client.get("/facets", params={"attributes": json.dumps(wanted)}).json()
    assert counted["total"] == len(expected)


def brute_force_facets(client, rows, data: dict, floor: float) -> tuple[int, dict, dict]:
    """Counts of colour and category over the query's relevance list, kept to scores >= floor."""
    hits = [hit for body in pages(client, {"out_of_stock": "hide", **data, "floor": "0"}, size=200, count=5)
            for hit in body["data"]]
    kept = [hit["id"] for hit in hits if hit["score"] >= floor]
    return len(kept), rows.loc[kept, "colour"].value_counts().to_dict(), rows.loc[kept, "category"].value_counts().to_dict()


@pytest.mark.parametrize("text", ["black leather wallet", "women heels", "sports shoes"])
def test_facets_follow_the_query_and_equal_a_brute_force_count(client, page_shop, text):
    rows = catalog_of(page_shop)
    floor = client.get("/search/defaults").json()["relevance_floor"]
    body = client.post("/search", data={"text": text, "facets": "true", "k": "12"}).json()
    facets = body["facets"]
    colours = {v["value"]: v["count"] for f in facets["attributes"] if f["name"] == "colour" for v in f["values"]}
    categories = {c["name"]: c["count"] for c in facets["categories"]}
    total, expected_colours, expected_categories = brute_force_facets(client, rows, {"text": text}, floor)
    assert 0 < facets["total"] == total < len(rows)
    assert colours == expected_colours and categories == expected_categories


def test_facets_change_with_the_query(client):
    def categories(text):
        body = client.post("/search", data={"text": text, "facets": "true"}).json()
        return max(body["facets"]["categories"], key=lambda c: c["count"])["name"]

    assert categories("analog wrist watch") == "Watches"
    assert categories("leather wallet") == "Wallets"


@pytest.mark.parametrize("attributes, detail", [
    ({"brand": ["Nike"]}, "unknown attribute 'brand'; filterable attributes: availability, colour, gender, "),
    ({"year": ["2012"]}, "attribute 'year' is a number: give {\"min\": ..., \"max\": ...}, got ['2012']"),
    ({"year": {"min": 2015, "max": 2010}}, "attribute 'year': min 2015 is above max 2010"),
])
def test_a_bad_attribute_filter_is_422_naming_the_attribute(client, attributes, detail):
    response = client.post("/search", data={"text": "shirt", "attributes": json.dumps(attributes)})
    assert response.status_code == 422 and response.json()["detail"].startswith(detail)


def test_attributes_are_read_back_from_the_store_after_a_restart(tmp_path, encoder):
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as store:
        store.index_attributes({"brand": "keyword", "rating": "number"})
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as store:
        # availability and stock are indexed with every new store (engine.stock)
        assert store.attribute_indexes() == {"brand": "keyword", "rating": "number", "availability": "keyword",
                                             "stock": "number"}


# --- stock --------------------------------------------------------------------------------------
def test_out_of_stock_products_are_hidden_by_default_or_demoted_or_shown(client, page_shop):
    rows = catalog_of(page_shop)
    out = set(rows.index[rows.availability == "out_of_stock"])
    data = {"text": "casual shoes for men", "k": "200", "offset": "0"}
    hidden = client.post("/search", data=data).json()
    assert hidden["data"] and not out & {hit["id"] for hit in hidden["data"]}
    assert all(hit["in_stock"] for hit in hidden["data"])
    shown = client.post("/search", data={**data, "out_of_stock": "show"}).json()
    shown_out = [hit["id"] for hit in shown["data"] if not hit["in_stock"]]
    assert shown_out and set(shown_out) <= out
    demoted = pages(client, {"text": "casual shoes for men", "out_of_stock": "demote"}, size=200, count=5)
    flags = [hit["in_stock"] for body in demoted for hit in body["data"]]
    assert False in flags and flags == sorted(flags, reverse=True)  # every product in stock first
    assert {hit["id"] for body in demoted for hit in body["data"] if not hit["in_stock"]} <= out


def test_a_patch_to_stock_0_hides_a_product_and_back_shows_it(client):
    top = client.post("/search", data={"text": "analog wrist watch", "k": "3"}).json()["data"][0]["id"]
    patched = client.patch(f"/products/{top}", json={"stock": 0}, headers={"X-API-Key": DEV_API_KEY})
    assert patched.status_code == 200, patched.text
    try:
        after = client.post("/search", data={"text": "analog wrist watch", "k": "3"}).json()["data"]
        assert top not in [hit["id"] for hit in after]
        shown = client.post("/search", data={"text": "analog wrist watch", "k": "3", "out_of_stock": "show"}).json()
        assert {"id": top, "in_stock": False}.items() <= shown["data"][0].items()
    finally:
        client.patch(f"/products/{top}", json={"stock": 5}, headers={"X-API-Key": DEV_API_KEY})
    back = client.post("/search", data={"text": "analog wrist watch", "k": "3"}).json()["data"]
    assert back[0]["id"] == top and back[0]["in_stock"]
