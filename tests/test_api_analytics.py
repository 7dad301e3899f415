"""Search analytics through the real app: searches logged (a photo as its hash and embedding,
never the photo), events public but rate-limited, the report for the merchandiser's key only."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.settings import AnalyticsSettings, ApiSettings, Settings, StoreSettings
from tests.conftest import SMALL_CATEGORIES, pick_products, write_catalog

API_KEY = "analytics-test-key-51c0"
AUTH = {"X-API-Key": API_KEY}
EVENTS_PER_MINUTE = 5


@pytest.fixture(scope="module")
def shop(tmp_path_factory, fashion_frame):
    folder = tmp_path_factory.mktemp("analytics")
    catalog = write_catalog(pick_products(fashion_frame, 2, SMALL_CATEGORIES), folder / "shop")
    return folder, json.loads(pd.read_csv(catalog).to_json(orient="records"))


def settings_for(folder, enabled: bool) -> Settings:
    return Settings(store=StoreSettings(path=folder / ("store" if enabled else "store-off")),
                    api=ApiSettings(api_key=API_KEY, images_root=folder / "shop"),
                    analytics=AnalyticsSettings(enabled=enabled, path=folder / "analytics.sqlite",
                                                events_per_minute=EVENTS_PER_MINUTE))


@pytest.fixture(scope="module")
def client(shop, encoder):
    folder, records = shop
    with TestClient(create_app(settings_for(folder, True), encoder=encoder)) as client:
        assert client.post("/products", json=records, headers=AUTH).status_code == 200
        yield client


def test_a_photo_search_is_logged_as_its_hash_and_embedding_never_the_photo(client, shop):
    folder, records = shop
    photo = (folder / "shop" / records[5]["image"]).read_bytes()
    response = client.post("/search", files={"photo": ("q.jpg", photo, "image/jpeg")},
                           data={"k": "4", "session": "visit-1", "category": ["Watches", "Shirts"]})
    body = response.json()
    assert response.status_code == 200 and body["query_id"]
    with sqlite3.connect(folder / "analytics.sqlite") as db:
        row = db.execute("SELECT kind, session, filters, photo_sha256, length(photo_vector), results, evidence, "
                         "latency_ms FROM queries WHERE id = ?", (body["query_id"],)).fetchone()
        blobs = [value for (value,) in db.execute("SELECT photo_vector FROM queries") if value]
    kind, session, filters, sha, vector_bytes, results, evidence, latency = row
    assert (kind, session) == ("photo", "visit-1")
    assert json.loads(filters)["category"] == ["Watches", "Shirts"]
    assert sha == hashlib.sha256(photo).hexdigest()
    assert vector_bytes == 4 * client.app.state.runtime.encoder.info.dim
    assert json.loads(results) == [hit["id"] for hit in body["data"]]
    assert len(json.loads(evidence)) == body["count"] and "image" in json.loads(evidence)[0]
    assert latency > 0
    log_bytes = (folder / "analytics.sqlite").read_bytes() + b"".join(blobs)
    assert photo[:64] not in log_bytes  # not a byte of the photo's start is kept


def test_events_record_the_results_position_and_are_rate_limited(client):
    body = client.post("/search", data={"text": "analog wrist watch", "k": "5"}).json()
    third = body["data"][2]["id"]
    accepted = client.post("/events", json={"query_id": body["query_id"], "product_id": third, "kind": "click"})
    assert accepted.status_code == 202
    assert accepted.json() == {"query_id": body["query_id"], "product_id": third, "kind": "click", "position": 3}
    unknown = client.post("/events", json={"query_id": "f" * 32, "product_id": third, "kind": "click"})
    assert unknown.status_code == 404 and "no logged search" in unknown.json()["detail"]
    bad_kind = client.post("/events", json={"query_id": body["query_id"], "product_id": third, "kind": "like"})
    assert bad_kind.status_code == 422
    answers = [client.post("/events", json={"query_id": body["query_id"], "product_id": third,
                                            "kind": "purchase"}).status_code for _ in range(EVENTS_PER_MINUTE)]
    # Two were spent above (the malformed one was refused before it reached the limit).
    assert answers == [202] * (EVENTS_PER_MINUTE - 2) + [429] * 2
    refused = client.post("/events", json={"query_id": body["query_id"], "product_id": third, "kind": "click"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "at most 5 a minute" in refused.json()["detail"]


def test_the_report_needs_the_key_and_names_nothing_close_searches(client):
    client.post("/search", data={"text": "industrial diesel generator spare parts", "k": "3"})
    assert client.get("/analytics/report").status_code == 401
    response = client.get("/analytics/report", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert "industrial diesel generator spare parts" in [row["text"] for row in body["nothing_close_queries"]]
    assert body["click_through"][2]["clicks"] >= 1
    assert body["events"]["click"] >= 1


def test_events_are_404_when_analytics_are_off(shop, encoder):
    folder, _ = shop
    with TestClient(create_app(settings_for(folder, False), encoder=encoder)) as off:
        response = off.post("/events", json={"query_id": "a", "product_id": "b", "kind": "click"})
        assert response.status_code == 404
        assert response.json()["detail"] == "search analytics are off (SNAPSHOP_ANALYTICS__ENABLED=true turns them on)"
        assert off.post("/search", data={"text": "shirt"}).json()["query_id"] is None
