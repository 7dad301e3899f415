"""Shops' own exports, read as they are: a Merchant Center TSV, a Merchant Center RSS 2.0 XML feed
and a Shopify product CSV, each made here from real fashion products, ingested with no skipped
row into the real embedded store and searched through the real app with their attributes as
filters."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.errors import CatalogError
from engine.settings import ApiSettings, IngestSettings, Settings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import pick_products, write_catalog

CATEGORIES = ["Shirts", "Watches", "Handbags", "Casual Shoes"]
SIZES = ["S", "M", "L"]


@pytest.fixture(scope="module")
def products(tmp_path_factory, fashion_frame):
    """16 real products with their photos copied next to where the feeds will be written."""
    folder = tmp_path_factory.mktemp("feeds")
    rows = pick_products(fashion_frame, 4, CATEGORIES)
    write_catalog(rows, folder)
    return folder, [{**row, "image": f"images/{Path(row['image']).name}"} for row in rows.to_dict("records")]


def merchant_items(rows: list[dict]) -> list[dict]:
    """Merchant Center fields as a shop fills them: prices with currency, a category path, groups."""
    items = []
    for n, row in enumerate(rows):
        items.append({
            "id": f"MC{row['id']}", "title": row["title"], "description": f"{row['title']} ({row['usage']})",
            "link": f"https://shop.example/p/{row['id']}", "image_link": row["image"],
            "additional_image_link": rows[(n + 1) % len(rows)]["image"],
            "price": f"{row['price']:,.2f} INR", "sale_price": f"{row['price'] * 0.8:.2f} INR" if n % 3 == 0 else "",
            "availability": "out of stock" if n == 5 else "in stock", "brand": row["title"].split()[0],
            "product_type": f"{row['master_category']} > {row['sub_category']} > {row['category']}",
            "google_product_category": "Apparel & Accessories", "item_group_id": f"G{n // 2}",
            "color": row["colour"], "size": SIZES[n % 3], "gender": row["gender"], "condition": "new",
        })
    return items


def write_merchant_tsv(folder: Path, items: list[dict]) -> Path:
    path = folder / "merchant.tsv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(items[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(items)
    return path


def write_merchant_xml(folder: Path, items: list[dict]) -> Path:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><title>Shop</title>']
    for item in items:
        lines.append("<item>")
        for name, value in item.items():
            if value:
                tag = name if name in ("title", "link", "description") else f"g:{name}"
                lines.append(f"<{tag}>{escape(value)}</{tag}>")
        lines.append("<g:shipping><g:country>IN</g:country><g:price>50.00 INR</g:price></g:shipping></item>")
    lines.append("</channel></rss>")
    path = folder / "merchant.xml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


SHOPIFY_COLUMNS = ["Handle", "Title", "Body (HTML)", "Vendor", "Product Category", "Type", "Tags", "Published",
                   "Option1 Name", "Option1 Value", "Option2 Name", "Option2 Value", "Variant SKU", "Variant Grams",
                   "Variant Inventory Tracker", "Variant Inventory Qty", "Variant Price", "Variant Compare At Price",
                   "Image Src", "Image Position", "Variant Image", "Status"]


def write_shopify_csv(folder: Path, rows: list[dict]) -> Path:
    """Two variants (colours of one category) per product, and an extra photo on a row of its own."""
    lines = []
    for n in range(0, len(rows), 2):
        first, second = rows[n], rows[n + 1]
        handle = f"{first['category'].lower().replace(' ', '-')}-{n}"
        lines.append({"Handle": handle, "Title": f"{first['category']} by {first['title'].split()[0]}",
                      "Body (HTML)": f"<p>{first['title']}</p>", "Vendor": first["title"].split()[0],
                      "Product Category": f"Apparel & Accessories > {first['category']}", "Type": first["category"],
                      "Tags": first["usage"], "Published": "true", "Option1 Name": "Color",
                      "Option1 Value": first["colour"], "Option2 Name": "Size", "Option2 Value": "M",
                      "Variant SKU": f"SKU-{first['id']}", "Variant Grams": "300", "Variant Inventory Tracker": "shopify",
                      "Variant Inventory Qty": "0" if n == 4 else "7", "Variant Price": f"{first['price']:.2f}",
                      "Variant Compare At Price": f"{first['price'] * 1.2:.2f}", "Image Src": first["image"],
                      "Image Position": "1", "Variant Image": first["image"], "Status": "active"})
        lines.append({"Handle": handle, "Option1 Value": second["colour"], "Option2 Value": "L",
                      "Variant SKU": f"SKU-{second['id']}", "Variant Grams": "300", "Variant Inventory Tracker": "shopify",
                      "Variant Inventory Qty": "3", "Variant Price": f"{second['price']:.2f}",
                      "Variant Image": second["image"]})
        lines.append({"Handle": handle, "Image Src": second["image"], "Image Position": "2"})
    path = folder / "products_export.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SHOPIFY_COLUMNS)
        writer.writeheader()
        writer.writerows(lines)
    return path


def ingest_and_serve(path: Path, encoder, folder: Path):
    catalog = read_catalog(path)
    assert catalog.errors == []
    settings = Settings(store=StoreSettings(path=folder / f"store-{path.stem}"), api=ApiSettings(images_root=folder))
    with open_store(settings.store, encoder.info) as store:
        summary = ingest_catalog(catalog, encoder, store, IngestSettings(), progress=False)
    assert summary.skipped_rows == [] and summary.bad_images == []
    assert summary.stored == len(catalog.rows)
    return catalog, TestClient(create_app(settings, encoder=encoder))


@pytest.mark.parametrize("write", [write_merchant_tsv, write_merchant_xml], ids=["tsv", "xml"])
def test_a_merchant_center_feed_ingests_whole_and_filters_by_its_attributes(products, encoder, write):
    folder, rows = products
    items = merchant_items(rows)
    catalog, app = ingest_and_serve(write(folder, items), encoder, folder)
    assert len(catalog.rows) == len(items)
    first = next(row for row in catalog.rows if row.product_id == items[0]["id"])
    assert first.price == pytest.approx(rows[0]["price"] * 0.8, abs=0.01)  # the sale price is paid
    assert first.fields["regular_price"] == pytest.approx(round(rows[0]["price"], 2))
    assert first.fields["currency"] == "INR" and first.category == rows[0]["category"]
    assert first.fields["product_type"].endswith(f"> {rows[0]['category']}") and len(first.images) == 2
    with app as client:
        colour = rows[1]["colour"]
        wanted = {"color": [colour], "size": ["S", "M", "L"]}
        body = client.post("/search", data={"text": rows[1]["category"], "k": "20", "out_of_stock": "show",
                                            "ungrouped": "true", "attributes": json.dumps(wanted)}).json()
        expected = {item["id"] for item in items if item["color"] == colour}
        assert {hit["id"] for hit in body["data"]} == expected
        assert all(hit["attributes"]["color"] == colour for hit in body["data"])
        facets = client.get("/facets").json()
        names = {facet["name"] for facet in facets["attributes"]}
        assert {"brand", "color", "size", "gender", "item_group_id", "availability", "currency"} <= names
        hidden = client.post("/search", data={"text": rows[5]["title"], "k": "20", "ungrouped": "true"}).json()
        assert items[5]["id"] not in {hit["id"] for hit in hidden["data"]}  # "out of stock", the old spelling


def test_a_shopify_export_ingests_one_product_per_variant(products, encoder):
    folder, rows = products
    catalog, app = ingest_and_serve(write_shopify_csv(folder, rows), encoder, folder)
    assert sorted(row.product_id for row in catalog.rows) == sorted(f"SKU-{row['id']}" for row in rows)
    second = next(row for row in catalog.rows if row.product_id == f"SKU-{rows[1]['id']}")
    assert second.title == f"{rows[0]['category']} by {rows[0]['title'].split()[0]} - {rows[1]['colour']} / L"
    assert second.images == [rows[1]["image"], rows[0]["image"]]  # its own photo, then the product's
    assert second.row == 2 and second.price == pytest.approx(round(rows[1]["price"], 2))
    assert (second.fields["color"], second.fields["size"], second.fields["stock"]) == (rows[1]["colour"], "L", 3)
    assert second.fields["item_group_id"] == second.fields["item_group_id"] and second.category == rows[0]["category"]
    with app as client:
        brand = rows[0]["title"].split()[0]
        body = client.post("/search", data={"text": "watch", "k": "20", "out_of_stock": "show", "ungrouped": "true",
                                            "attributes": json.dumps({"brand": [brand]})}).json()
        assert body["data"] and all(hit["attributes"]["brand"] == brand for hit in body["data"])
        in_stock = client.post("/search", data={"text": rows[4]["category"], "k": "20", "ungrouped": "true"}).json()
        assert f"SKU-{rows[4]['id']}" not in {hit["id"] for hit in in_stock["data"]}  # inventory 0


def test_a_merchant_price_with_a_decimal_comma_is_reported_with_its_row(products, tmp_path):
    items = merchant_items(products[1])[:3]
    items[1]["price"] = "12,50 EUR"
    catalog = read_catalog(write_merchant_tsv(tmp_path, items))
    assert [(e.row, e.field) for e in catalog.errors] == [(2, "price")]
    assert "'12,50 EUR' is not an amount with its currency" in str(catalog.errors[0])
    assert len(catalog.rows) == 2


def test_an_xml_feed_with_entities_is_refused(tmp_path):
    path = tmp_path / "bomb.xml"
    path.write_text('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
                    '<rss><channel><item><g:id xmlns:g="http://base.google.com/ns/1.0">&b;</g:id></item></channel></rss>')
    with pytest.raises(CatalogError, match="is not a readable RSS feed"):
        read_catalog(path)


def test_variants_are_one_result_per_family_with_swatches_unless_ungrouped(products, encoder):
    folder, rows = products
    _, app = ingest_and_serve(write_shopify_csv(folder, rows), encoder, folder)
    with app as client:
        data = {"text": "casual shirt", "k": "20", "out_of_stock": "show"}
        ungrouped = client.post("/search", data={**data, "ungrouped": "true"}).json()["data"]
        assert len(ungrouped) == len(rows) and all(hit["variants"] == [] for hit in ungrouped)
        grouped = client.post("/search", data=data).json()["data"]
        families = [hit["attributes"]["item_group_id"] for hit in grouped]
        assert len(families) == len(set(families)) == len(rows) // 2
        best = {}
        for hit in ungrouped:  # each family's best-ranked variant is the one shown
            best.setdefault(hit["attributes"]["item_group_id"], hit["id"])
        assert [hit["id"] for hit in grouped] == [best[family] for family in families]
        for hit in grouped:
            variants = {variant["id"]: variant for variant in hit["variants"]}
            assert len(variants) == 2 and hit["id"] in variants
            assert all(v["image"].startswith("http://testserver/images/") for v in variants.values())
            assert variants[hit["id"]]["label"] == f"{hit['attributes']['color']} / {hit['attributes']['size']}"
        paged = client.post("/search", data={**data, "offset": "0", "k": "5"}).json()
        assert paged["total"] == len(rows) // 2 and paged["next_offset"] == 5
