"""Hostile and careless product records: refused with a reason naming the row and field, the rest
of the catalog kept, and nothing accepted can break the store (engine.records, engine.store).

The store test writes every edge case the checks accept, restarts (reopens the store), and
reads, searches and deletes each one: what the store takes, it must give back.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from engine.errors import SnapshopError
from engine.model_info import ModelInfo
from engine.records import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_FIELDS,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    STORE_MAX_DEPTH,
)
from engine.settings import IngestSettings, StoreSettings
from engine.store import CAPTION_VECTOR, ProductPoint, SearchFilters, open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, require

INFO = ModelInfo("snapshop-lit-fashion", "1-test", 8)


def nested(depth: int, leaf=1, kind=list):
    value = leaf
    for _ in range(depth):
        value = [value] if kind is list else {"a": value}
    return value


def photo(tmp_path) -> str:
    source = next(iter(sorted((require(FASHION) / "images").glob("*.jpg"))))
    (tmp_path / "images").mkdir(exist_ok=True)
    shutil.copy(source, tmp_path / "images" / "p.jpg")
    return "images/p.jpg"


def jsonl(tmp_path, records: list[dict], name: str = "catalog.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")
    return path


def reasons(catalog) -> dict[int, str]:
    return {error.row: str(error) for error in catalog.errors}


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


# --- nesting ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [list, dict])
def test_a_field_nested_past_the_limit_is_a_row_error_and_the_rest_is_read(tmp_path, kind):
    image = photo(tmp_path)
    path = jsonl(tmp_path, [
        {"id": "deep", "title": "Shirt", "image": image, "specs": nested(130, kind=kind)},
        {"id": "at-limit", "title": "Shirt", "image": image, "specs": nested(MAX_DEPTH, kind=kind)},
        {"id": "one-more", "title": "Shirt", "image": image, "specs": nested(MAX_DEPTH + 1, kind=kind)},
    ])
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["at-limit"]
    found = reasons(catalog)
    assert found[1] == ("row 1 (id deep), field 'specs': lists or objects nested too deeply "
                        f"(the limit is {MAX_DEPTH} levels inside a field)")
    assert found[3].startswith("row 3 (id one-more), field 'specs': lists or objects nested too deeply")


def test_a_deeply_nested_payload_is_refused_by_the_store_itself_which_stays_whole(tmp_path):
    """Whoever calls it: the store refuses a payload it could not read back after a restart
    (Qdrant Edge's log reader gives up at 124 levels) and keeps what it held."""
    settings = StoreSettings(path=tmp_path / "store")
    good = ProductPoint("good", unit(1)[None], unit(2), {"title": "Good"})
    with open_store(settings, INFO) as store:
        store.upsert([good])
        poisoned = ProductPoint("poisoned", unit(3)[None], unit(4), {"fields": {"x": nested(130)}})
        with pytest.raises(SnapshopError, match="nested too deeply"):
            store.upsert([poisoned])
        with pytest.raises(SnapshopError, match="nested too deeply"):
            store.set_payload("good", {"fields": {"x": nested(130, kind=dict)}})
        at_limit = ProductPoint("deep-ok", unit(5)[None], unit(6), {"x": nested(STORE_MAX_DEPTH - 1)})
        store.upsert([at_limit])
    with open_store(settings, INFO) as store:
        assert store.count() == 2
        assert store.get(["good"])["good"].payload["title"] == "Good"
        hits = store.query(unit(6), CAPTION_VECTOR, SearchFilters(), 5)
        assert hits[0].product_id == "deep-ok"
        store.delete(["deep-ok", "good"])
    with open_store(settings, INFO) as store:
        assert store.count() == 0


@pytest.mark.parametrize("value, reason", [
    (float("nan"), "nan is not a finite number"),
    (float("inf"), "inf is not a finite number"),
    (2**64, "outside the 64-bit integer range"),
    ("a\ud800b", "unpaired surrogate"),
])
def test_values_the_store_cannot_hold_exactly_are_refused_by_it(tmp_path, value, reason):
    with open_store(StoreSettings(path=tmp_path / "store"), INFO) as store:
        with pytest.raises(SnapshopError, match=reason):
            store.upsert([ProductPoint("p", unit(1)[None], unit(2), {"fields": {"x": [value]}})])
        assert store.count() == 0


# --- numbers ----------------------------------------------------------------------------------------
def test_non_finite_numbers_in_a_jsonl_catalog_lose_only_their_row(tmp_path):
    image = photo(tmp_path)
    (tmp_path / "catalog.jsonl").write_text(
        f'{{"id": "1", "title": "A", "image": "{image}", "weight": Infinity}}\n'
        f'{{"id": "2", "title": "B", "image": "{image}", "weight": 1e999}}\n'
        f'{{"id": "3", "title": "C", "image": "{image}", "weight": NaN}}\n'
        f'{{"id": "4", "title": "D", "image": "{image}", "sizes": [1, -Infinity]}}\n'
        f'{{"id": "5", "title": "E", "image": "{image}", "weight": 1.5e308}}\n', encoding="utf-8")
    catalog = read_catalog(tmp_path / "catalog.jsonl")
    assert [row.product_id for row in catalog.rows] == ["5"]
    found = reasons(catalog)
    assert found[1] == "row 1 (id 1), field 'weight': inf is not a finite number"
    assert found[2] == "row 2 (id 2), field 'weight': inf is not a finite number"
    assert found[3] == "row 3, field 'weight': NaN is not a number (JSON has no NaN)"
    assert found[4] == "row 4 (id 4), field 'sizes': -inf is not a finite number"


def test_non_finite_numbers_in_a_parquet_catalog_lose_only_their_row_and_nan_is_an_empty_cell(tmp_path):
    image = photo(tmp_path)
    frame = pd.DataFrame({"id": ["1", "2", "3"], "title": ["A", "B", "C"], "image": [image] * 3,
                          "weight": [float("inf"), float("nan"), 2.5]})
    frame.to_parquet(tmp_path / "catalog.parquet")
    catalog = read_catalog(tmp_path / "catalog.parquet")
    assert [(row.product_id, row.fields) for row in catalog.rows] == [("2", {}), ("3", {"weight": 2.5})]
    assert reasons(catalog) == {1: "row 1 (id 1), field 'weight': inf is not a finite number"}


@pytest.mark.parametrize("price, reason", [
    ("1e308", "price 1e308 is more than the limit of 1e+12"),
    ("1_000", "price '1_000' is not a number"),
    ("0x10", "price '0x10' is not a number"),
])
def test_prices_python_would_take_but_no_shop_means_are_refused(tmp_path, price, reason):
    path = tmp_path / "catalog.csv"
    path.write_text(f"id,title,image,price\n1,Shirt,a.jpg,{price}\n2,Jeans,b.jpg,20\n", encoding="utf-8")
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["2"]
    assert reasons(catalog)[1] == f"row 1 (id 1), field 'price': {reason}"


def test_integers_past_64_bits_are_refused_not_stored_as_floats(tmp_path):
    image = photo(tmp_path)
    catalog = read_catalog(jsonl(tmp_path, [
        {"id": "1", "title": "A", "image": image, "stock": 10**30},
        {"id": "2", "title": "B", "image": image, "stock": INT64_MAX},
    ]))
    assert [(row.product_id, row.fields) for row in catalog.rows] == [("2", {"stock": INT64_MAX})]
    assert "outside the 64-bit integer range" in reasons(catalog)[1]


# --- text -------------------------------------------------------------------------------------------
def test_a_long_csv_title_is_refused_for_its_length_as_the_api_refuses_it(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(f"id,title,image\n1,{'x' * 200_000},a.jpg\n2,Jeans,b.jpg\n", encoding="utf-8")
    catalog = read_catalog(path)
    assert [row.product_id for row in catalog.rows] == ["2"]
    assert reasons(catalog)[1] == (f"row 1 (id 1), field 'title': title is 200000 characters, more than the "
                                   f"limit of {MAX_TITLE_CHARS}")


@pytest.mark.parametrize("product_id, reason", [
    ("a\x00b", "holds the control character U+0000"),
    ("line\nbreak", "holds the control character U+000A"),
    ("..", "cannot be reached in a URL"),
    ("x" * (MAX_ID_CHARS + 1), f"more than the limit of {MAX_ID_CHARS}"),
])
def test_ids_no_url_or_store_can_carry_are_refused(tmp_path, product_id, reason):
    image = photo(tmp_path)
    catalog = read_catalog(jsonl(tmp_path, [{"id": product_id, "title": "A", "image": image},
                                            {"id": "ok", "title": "B", "image": image}]))
    assert [row.product_id for row in catalog.rows] == ["ok"]
    assert reason in reasons(catalog)[1] and "field 'id'" in reasons(catalog)[1]


# --- everything accepted survives a restart -----------------------------------------------------------
EDGE_IDS = ["a/b", "what?", "#1", "../etc/passwd", "50%", "%2F", "with space", "ünï/cödé ✓", "x" * MAX_ID_CHARS,
            "a\\b", "+&=;,"]


def edge_records(image: str) -> list[dict]:
    """One product per edge case the checks accept, each with a title of its own to search by."""
    fields = [
        {"specs": nested(MAX_DEPTH, kind=dict)}, {"sizes": nested(MAX_DEPTH)},
        {"low": INT64_MIN, "high": INT64_MAX, "big": 1.5e308, "tiny": 5e-324},
        {"notes": "y" * MAX_TEXT_CHARS}, {f"k{n}": n for n in range(MAX_FIELDS - 3)},
        {"": "empty key", "a.b": 1, "c[]": 2, "$x": 3, "tab\tkey": "nul \x00 inside", "emoji": "👗\u200d"},
        {"flag": True, "none_inside": [None, False, 0, -0.0, ""]},
    ]
    records = [{"id": pid, "title": f"edge product {n}", "image": image} for n, pid in enumerate(EDGE_IDS)]
    for n, extra in enumerate(fields):
        records.append({"id": f"fields-{n}", "title": f"edge fields {n}", "image": image, **extra})
    records.append({"id": "limits", "title": "t" * MAX_TITLE_CHARS, "image": image, "price": 1e12,
                    "category": "c" * 200})
    return records


def test_every_accepted_edge_case_is_read_searched_and_deleted_after_a_restart(tmp_path, encoder):
    records = edge_records(photo(tmp_path))
    catalog = read_catalog(jsonl(tmp_path, records))
    assert catalog.errors == []
    settings = StoreSettings(path=tmp_path / "store")
    with open_store(settings, encoder.info) as store:
        summary = ingest_catalog(catalog, encoder, store, IngestSettings(), progress=False)
        assert summary.added == len(records)
    ids = [str(record["id"]) for record in records]
    with open_store(settings, encoder.info) as store:  # a restart: the write-ahead log is read back
        assert store.count() == len(records)
        found = store.get(ids)
        assert sorted(found) == sorted(ids)
        for record in records:
            payload = found[str(record["id"])].payload
            assert payload["title"] == record["title"]
            extra = {k: v for k, v in record.items() if k not in ("id", "title", "image", "price", "category")}
            assert payload["fields"] == extra
        vector = encoder.encode_texts(["edge product 3"])[0]
        assert len(store.query(vector, CAPTION_VECTOR, SearchFilters(), len(records))) == len(records)
        assert store.count(SearchFilters(min_price=0)) == 1
        store.delete(ids)
    with open_store(settings, encoder.info) as store:
        assert store.count() == 0


# --- encodings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_named_and_the_message_has_no_nul_bytes(tmp_path, codec):
    path = tmp_path / "catalog.csv"
    path.write_bytes("id,title,image\n1,Shirt,a.jpg\n".encode(codec))
    with pytest.raises(SnapshopError) as refused:
        read_catalog(path)
    assert "looks like UTF-16 without a byte order mark" in str(refused.value)
    assert "\x00" not in str(refused.value)


def test_control_characters_in_column_names_are_shown_escaped(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"i\x01d,title,image\n1,Shirt,a.jpg\n")
    with pytest.raises(SnapshopError, match=r"its columns are: i\\x01d, title, image"):
        read_catalog(path)
