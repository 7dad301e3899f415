"""Merchandising rules and synonyms through the real app, model and embedded store: pin, hide,
boost and bury, shown in the results' explanations, kept with the products across a restart,
previewed without saving, written only with the key."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.settings import ApiSettings, IngestSettings, Settings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import write_catalog

KEY = {"X-API-Key": "rules-test-key"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory, small_rows, encoder):
    folder = tmp_path_factory.mktemp("rules")
    settings = Settings(store=StoreSettings(path=folder / "store"),
                        api=ApiSettings(api_key=KEY["X-API-Key"], images_root=folder / "shop"))
    with open_store(settings.store, encoder.info) as store:
        ingest_catalog(read_catalog(write_catalog(small_rows, folder / "shop")), encoder, store, IngestSettings(),
                       progress=False)
    return settings


@pytest.fixture(scope="module")
def app_client(settings, encoder):
    with TestClient(create_app(settings, encoder=encoder)) as client:
        yield client


@pytest.fixture()
def client(app_client):
    yield app_client
    assert app_client.put("/merchandising", json={}, headers=KEY).status_code == 200  # no rule outlives its test


def ids(client, text: str, **data) -> list[str]:
    body = client.post("/search", data={"text": text, "k": "12", **data}).json()
    return [hit["id"] for hit in body["data"]]


def test_a_pinned_product_comes_first_for_its_query_and_says_why(client, small_rows):
    before = ids(client, "black watch")
    chosen = before[7]
    response = client.post("/rules", json={"action": "pin", "query": "Black  Watch", "product_id": chosen,
                                           "position": 1}, headers=KEY)
    assert response.status_code == 201 and response.json()["id"]
    body = client.post("/search", data={"text": "black watch", "k": "12"}).json()
    assert body["data"][0]["id"] == chosen
    assert body["data"][0]["rules"] == [f"pinned at 1 (product {chosen}, for query 'Black  Watch')"]
    assert [hit["id"] for hit in body["data"][1:]] == [pid for pid in before if pid != chosen][:11]
    assert ids(client, "leather handbag")[0] != chosen  # another query is left alone


def test_hide_a_product_or_everything_matching_a_condition(client, small_rows):
    first = ids(client, "shirt")[0]
    client.post("/rules", json={"action": "hide", "product_id": first}, headers=KEY)
    assert first not in ids(client, "shirt")
    client.post("/rules", json={"action": "hide", "attribute": "gender", "value": "Women"}, headers=KEY)
    women = set(small_rows[small_rows.gender == "Women"]["id"].astype(str))
    assert women and not women & set(ids(client, "handbag", ungrouped="true"))


def test_boost_and_bury_by_attribute_move_products_and_show_in_the_explanation(client, small_rows):
    black = set(small_rows[small_rows.colour == "Black"]["id"].astype(str))
    data = {"text": "analog watch", "k": "6", "category": "Watches"}
    client.post("/rules", json={"action": "boost", "category": "Watches", "attribute": "colour", "value": "black",
                                "amount": 0.5}, headers=KEY)
    boosted = client.post("/search", data=data).json()["data"]
    flags = [hit["id"] in black for hit in boosted]
    assert flags.count(True) == 2 and flags == sorted(flags, reverse=True)  # the black watches first
    assert all(hit["rules"] == ["boosted by 0.5 (colour = black, for category Watches)"]
               for hit in boosted if hit["id"] in black)
    client.put("/merchandising", json={"rules": [{"action": "bury", "attribute": "colour", "value": "Black",
                                                  "amount": 1}]}, headers=KEY)
    buried = client.post("/search", data=data).json()["data"]
    flags = [hit["id"] in black for hit in buried]
    assert flags.count(True) == 2 and flags == sorted(flags)  # the black watches last
    assert [hit["rules"] for hit in buried if hit["id"] in black] == [["buried by 1 (colour = Black)"]] * 2
    # Scores stay the relevance the ranker saw; the rules only move the products.
    assert {hit["id"]: hit["score"] for hit in buried} == {hit["id"]: hit["score"] for hit in boosted}


def test_rules_survive_a_restart_of_the_app(app_client, settings, encoder):
    rule = {"action": "hide", "attribute": "colour", "value": "Blue"}
    app_client.put("/merchandising", json={"rules": [rule], "synonyms": [{"words": ["specs", "sunglasses"]}]},
                   headers=KEY)
    app_client.__exit__(None, None, None)  # stop the app: the store is let go of
    try:
        with TestClient(create_app(settings, encoder=encoder)) as restarted:
            document = restarted.get("/merchandising", headers=KEY).json()
            assert [(r["action"], r["attribute"], r["value"]) for r in document["rules"]] == [("hide", "colour", "Blue")]
            assert document["synonyms"] == [{"words": ["specs", "sunglasses"]}]
            restarted.put("/merchandising", json={}, headers=KEY)
    finally:
        app_client.__enter__()


def test_a_preview_applies_rules_without_saving_them(client):
    first = ids(client, "jeans")[0]
    preview = {"rules": [{"action": "hide", "product_id": first}]}
    assert first not in ids(client, "jeans", merchandising=json.dumps(preview))
    assert ids(client, "jeans")[0] == first
    assert client.get("/merchandising", headers=KEY).json()["rules"] == []


def test_synonyms_widen_the_keywords_of_a_query(client):
    def keyword_signal(text):
        hits = client.post("/search", data={"text": text, "k": "5"}).json()["data"]
        return [hit["signals"].get("bm25", 0) for hit in hits], [hit["category"] for hit in hits]

    before, _ = keyword_signal("timepiece")
    assert max(before) < 0.1  # no title says "timepiece": no keyword evidence (squashed 0)
    client.put("/merchandising", json={"synonyms": [{"words": ["timepiece", "watch"]}]}, headers=KEY)
    after, categories = keyword_signal("timepiece")
    assert max(after) > 0.5 and categories.count("Watches") >= 4


@pytest.mark.parametrize("rule, detail", [
    ({"action": "pin", "product_id": "1"}, "Value error, a pin needs product_id and position"),
    ({"action": "boost", "amount": 0.3},
     "Value error, a boost needs an attribute and value (e.g. brand = Nike, in_stock = true)"),
    ({"action": "swap"}, "Input should be 'pin', 'hide', 'boost' or 'bury'"),
])
def test_a_bad_rule_is_422_with_the_reason(client, rule, detail):
    response = client.post("/rules", json=rule, headers=KEY)
    assert response.status_code == 422 and response.json()["detail"][0]["msg"] == detail


def test_rules_need_the_key_and_a_deleted_rule_is_gone(client):
    assert client.post("/rules", json={"action": "hide", "product_id": "1"}).status_code == 401
    assert client.get("/merchandising").status_code == 401
    rule = client.post("/rules", json={"action": "hide", "product_id": "1"}, headers=KEY).json()
    assert client.delete(f"/rules/{rule['id']}", headers=KEY).status_code == 204
    missing = client.delete(f"/rules/{rule['id']}", headers=KEY)
    assert missing.status_code == 404 and missing.json() == {"detail": f"no rule with id '{rule['id']}'"}
