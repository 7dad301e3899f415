"""``GET /metrics`` scraped like Prometheus would, after real searches, refusals and an upsert
through the real app, model and embedded Qdrant store."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from engine.settings import ApiSettings, Settings, StoreSettings
from tests.conftest import SMALL_CATEGORIES, pick_products, write_catalog

API_KEY = "metrics-test-key-8d1e"


@pytest.fixture(scope="module")
def shop(tmp_path_factory, fashion_frame):
    folder = tmp_path_factory.mktemp("metrics")
    catalog = write_catalog(pick_products(fashion_frame, 2, SMALL_CATEGORIES), folder / "shop")
    return folder, json.loads(pd.read_csv(catalog).to_json(orient="records"))


@pytest.fixture(scope="module")
def client(shop, encoder):
    folder, records = shop
    settings = Settings(store=StoreSettings(path=folder / "store"),
                        api=ApiSettings(api_key=API_KEY, images_root=folder / "shop"))
    with TestClient(create_app(settings, encoder=encoder)) as client:
        assert client.post("/products", json=records, headers={"X-API-Key": API_KEY}).status_code == 200
        yield client


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_and_timed_per_route_template(client, shop):
    before = scrape(client)
    assert client.get(f"/products/{shop[1][0]['id']}").status_code == 200
    assert client.get("/products/no-such-product").status_code == 404
    after = scrape(client)
    route = "/products/{product_id}"
    for code in ("200", "404"):
        assert (value(after, "snapshop_http_requests_total", route=route, method="GET", status=code)
                - value(before, "snapshop_http_requests_total", route=route, method="GET", status=code)) == 1
    assert (value(after, "snapshop_http_request_duration_seconds_count", route=route, method="GET")
            - value(before, "snapshop_http_request_duration_seconds_count", route=route, method="GET")) == 2
    assert not any(name.startswith("snapshop_http") and dict(labels).get("route") == "/products/no-such-product"
                   for name, labels in after)


def test_a_photo_search_fills_every_stage_histogram(client, shop):
    folder, records = shop
    before = scrape(client)
    photo = (folder / "shop" / records[3]["image"]).read_bytes()
    response = client.post("/search", files={"photo": ("q.jpg", photo, "image/jpeg")}, data={"k": "3"})
    assert response.status_code == 200
    after = scrape(client)
    for stage in ("decode", "encode", "gather", "score", "rank"):
        added = (value(after, "snapshop_search_stage_duration_seconds_count", stage=stage)
                 - value(before, "snapshop_search_stage_duration_seconds_count", stage=stage))
        assert added == 1, stage
        assert value(after, "snapshop_search_stage_duration_seconds_sum", stage=stage) > 0
    assert value(after, "snapshop_searches_total", kind="photo") - value(before, "snapshop_searches_total",
                                                                          kind="photo") == 1


def test_nothing_close_answers_are_counted(client):
    before = scrape(client)
    body = client.post("/search", data={"text": "industrial diesel generator spare parts", "k": "3"}).json()
    after = scrape(client)
    counted = (value(after, "snapshop_search_nothing_close_total", kind="text")
               - value(before, "snapshop_search_nothing_close_total", kind="text"))
    assert counted == (1 if body["nothing_close"] else 0)
    assert body["nothing_close"]  # nothing in a clothes shop is close to a diesel generator


def test_errors_are_counted_by_kind(client):
    before = scrape(client)
    assert client.post("/search", data={"k": "3"}).status_code == 422  # no text, no photo: InvalidQuery
    assert client.post("/search", data={"text": "shirt", "k": "zero"}).status_code == 422  # bad field
    assert client.post("/products", json=[{"id": "x"}]).status_code == 401  # no key
    after = scrape(client)
    for kind in ("InvalidQuery", "RequestValidationError", "HTTP401"):
        assert value(after, "snapshop_errors_total", kind=kind) - value(before, "snapshop_errors_total",
                                                                        kind=kind) == 1, kind


def test_ingest_progress_and_store_size_are_exported(client, shop):
    samples = scrape(client)
    records = shop[1]
    assert value(samples, "snapshop_store_products") == len(records)
    assert value(samples, "snapshop_store_disk_bytes") > 0
    assert value(samples, "snapshop_ingest_embedded_products_total") == len(records)
    assert value(samples, "snapshop_ingest_products_total", outcome="added") == len(records)
    assert value(samples, "snapshop_ingest_running") == 0
