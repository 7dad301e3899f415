"""Storefront access through the real app and store: search by an image URL (through the address
guard), a CORS allow-list, and reads behind a read-only key."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.settings import ApiSettings, IngestSettings, Settings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import write_catalog

WRITE_KEY, READ_KEY = "storefront-write-key", "storefront-read-key"
SHOP_ORIGIN = "https://shop.example"


@pytest.fixture(scope="module")
def shop(tmp_path_factory, small_rows, encoder):
    folder = tmp_path_factory.mktemp("storefront")
    catalog = write_catalog(small_rows, folder / "shop")
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(catalog), encoder, store, IngestSettings(), progress=False)
    return folder


def settings_for(folder: Path, allow_private: bool = False, **api) -> Settings:
    return Settings(store=StoreSettings(path=folder / "store"), ingest=IngestSettings(allow_private_urls=allow_private),
                    api=ApiSettings(api_key=WRITE_KEY, images_root=folder / "shop", **api))


@pytest.fixture(scope="module")
def photo_server(shop):
    """The shop's photos over HTTP on 127.0.0.1, as a shop's CDN would serve them (but private)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shop / "shop"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_search_by_image_url_finds_the_product(shop, encoder, photo_server, small_rows):
    product = small_rows[small_rows.category == "Watches"].iloc[1]
    url = f"{photo_server}/images/{Path(product['image']).name}"
    with TestClient(create_app(settings_for(shop, allow_private=True), encoder=encoder)) as client:
        body = client.post("/search", data={"image_url": url, "k": "3"}).json()
        assert str(product["id"]) == body["data"][0]["id"]
        both = client.post("/search", data={"image_url": url}, files={"photo": ("a.jpg", b"\xff\xd8", "image/jpeg")})
        assert both.status_code == 422


@pytest.mark.parametrize("url, detail", [
    ("{server}/images/x.jpg", "is a private, loopback, link-local or reserved address"),
    ("file:///etc/passwd", "image_url must be an http(s) URL, got 'file:///etc/passwd'"),
])
def test_an_image_url_the_guard_refuses_is_422_with_the_reason(shop, encoder, photo_server, url, detail):
    with TestClient(create_app(settings_for(shop), encoder=encoder)) as client:
        response = client.post("/search", data={"image_url": url.format(server=photo_server)})
        assert response.status_code == 422 and detail in response.json()["detail"]


def test_cors_lets_only_the_listed_origins_call_from_a_browser(shop, encoder):
    with TestClient(create_app(settings_for(shop, cors_origins=[SHOP_ORIGIN]), encoder=encoder)) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        allowed = client.options("/search", headers={"Origin": SHOP_ORIGIN, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == SHOP_ORIGIN
        other = client.options("/search", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        answer = client.post("/search", data={"text": "watch"}, headers={"Origin": SHOP_ORIGIN})
        assert answer.headers["access-control-allow-origin"] == SHOP_ORIGIN


def test_reads_behind_a_read_only_key(shop, encoder, small_rows):
    settings = settings_for(shop, public_reads=False, read_key=READ_KEY)
    product_id = str(small_rows.iloc[0]["id"])
    with TestClient(create_app(settings, encoder=encoder)) as client:
        assert client.post("/search", data={"text": "watch"}).status_code == 401
        assert client.get("/facets").status_code == 401
        assert client.get(f"/products/{product_id}").status_code == 401
        assert client.post("/search", data={"text": "watch"}, headers={"X-API-Key": "guess"}).status_code == 403
        for key in (READ_KEY, WRITE_KEY):
            assert client.post("/search", data={"text": "watch"}, headers={"X-API-Key": key}).status_code == 200
        read = {"Authorization": f"Bearer {READ_KEY}"}
        assert client.get(f"/products/{product_id}", headers=read).status_code == 200
        # The read key cannot write.
        patch = client.patch(f"/products/{product_id}", json={"stock": 1}, headers={"X-API-Key": READ_KEY})
        assert patch.status_code == 403
        assert client.get("/health").status_code == 200  # health stays open for load balancers
