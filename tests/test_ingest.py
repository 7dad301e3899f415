"""Ingest: idempotent, resumable, updates and deletes, bad rows and photos reported not fatal."""

import shutil

import pandas as pd
import pytest

from engine.settings import IngestSettings, StoreSettings
from engine.store import SearchFilters, open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog


@pytest.fixture()
def store(tmp_path, encoder):
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as opened:
        yield opened


def run(catalog_path, encoder, store, **kwargs):
    return ingest_catalog(read_catalog(catalog_path), encoder, store, IngestSettings(), progress=False, **kwargs)


def test_first_run_adds_every_product_and_a_rerun_embeds_nothing(small_catalog, small_rows, encoder, store, monkeypatch):
    first = run(small_catalog, encoder, store)
    assert first.added == len(small_rows) and store.count() == len(small_rows)

    calls = []
    monkeypatch.setattr(encoder, "encode_images", lambda images: calls.append(len(images)))
    second = run(small_catalog, encoder, store)
    assert second.unchanged == len(small_rows) and second.added == second.updated == 0
    assert calls == []  # nothing re-embedded
    assert store.count() == len(small_rows)


def test_a_price_change_updates_the_payload_and_a_new_title_re_embeds(small_catalog, encoder, store):
    run(small_catalog, encoder, store)
    frame = pd.read_csv(small_catalog)
    frame.loc[0, "price"] = 1234.5
    frame.loc[1, "title"] = frame.loc[1, "title"] + " Limited Edition"
    frame.to_csv(small_catalog, index=False)
    summary = run(small_catalog, encoder, store)
    assert (summary.payload_only, summary.updated, summary.added) == (1, 1, 0)
    stored = store.get([str(frame.loc[0, "id"]), str(frame.loc[1, "id"])])
    assert stored[str(frame.loc[0, "id"])].payload["price"] == 1234.5
    assert stored[str(frame.loc[1, "id"])].payload["title"].endswith("Limited Edition")
    assert store.count(SearchFilters(min_price=1234.0)) == 1


def test_prune_deletes_products_gone_from_the_catalog(small_catalog, encoder, store):
    run(small_catalog, encoder, store)
    frame = pd.read_csv(small_catalog)
    frame.iloc[:-3].to_csv(small_catalog, index=False)
    kept = run(small_catalog, encoder, store)
    assert kept.deleted == 0 and store.count() == len(frame)
    pruned = run(small_catalog, encoder, store, prune=True)
    assert pruned.deleted == 3 and store.count() == len(frame) - 3
    assert not store.get([str(i) for i in frame.id.iloc[-3:]])


def test_an_interrupted_run_resumes_without_redoing_stored_batches(small_catalog, small_rows, encoder, store):
    class Interrupted(Exception):
        pass

    def stop_after_first_batch(count):
        raise Interrupted

    settings = IngestSettings(upsert_batch=8)
    with pytest.raises(Interrupted):
        ingest_catalog(read_catalog(small_catalog), encoder, store, settings, progress=False,
                       on_batch=stop_after_first_batch)
    assert store.count() == 8
    resumed = ingest_catalog(read_catalog(small_catalog), encoder, store, settings, progress=False)
    assert resumed.unchanged == 8 and resumed.added == len(small_rows) - 8


def test_bad_rows_and_bad_photos_are_reported_and_the_rest_ingested(tmp_path, small_rows, encoder, store):
    from tests.conftest import write_catalog

    path = write_catalog(small_rows.head(6), tmp_path / "shop")
    images = tmp_path / "shop" / "images"
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("this is not a photo")
    frame = pd.read_csv(path)
    bad = pd.DataFrame([
        {**frame.iloc[0].to_dict(), "id": 900001, "title": ""},                       # empty title
        {**frame.iloc[0].to_dict(), "id": 900002, "price": "cheap"},                  # non-numeric price
        {**frame.iloc[0].to_dict(), "id": 900003, "price": -5},                       # negative price
        {**frame.iloc[0].to_dict(), "id": 900004, "image": "images/empty.jpg"},       # zero bytes
        {**frame.iloc[0].to_dict(), "id": 900005, "image": "images/text.jpg"},        # not an image
        {**frame.iloc[0].to_dict(), "id": 900006, "image": "images/missing.jpg"},     # missing file
        {**frame.iloc[0].to_dict(), "id": 900007, "image": "../../etc/passwd"},       # outside the catalog
        {**frame.iloc[1].to_dict()},                                                  # duplicate id
    ])
    pd.concat([frame, bad]).to_csv(path, index=False)
    summary = run(path, encoder, store)
    assert summary.added == 6 and store.count() == 6
    problems = {p.product_id: p.reason for p in summary.skipped_rows + summary.bad_images}
    assert "title" in problems["900001"]
    assert "not a number" in problems["900002"] and ">= 0" in problems["900003"]
    assert "0 bytes" in " ".join(p.reason for p in summary.bad_images if p.product_id == "900004")
    assert "not a readable image" in " ".join(p.reason for p in summary.bad_images if p.product_id == "900005")
    assert "not found" in " ".join(p.reason for p in summary.bad_images if p.product_id == "900006")
    assert "outside the catalog" in " ".join(p.reason for p in summary.bad_images if p.product_id == "900007")
    assert "duplicate id" in problems[str(frame.iloc[1].id)]
    # Row numbers point at the catalog's rows (data rows from 1).
    assert {p.row for p in summary.skipped_rows if p.product_id == "900001"} == {7}


def test_several_photos_of_one_product_are_one_result(tmp_path, small_rows, encoder, store):
    """A product with three photos is stored once and found once, by any of its photos."""
    from engine.images import load_image_file
    from engine.search import Searcher, SearchQuery
    from tests.conftest import write_catalog

    rows = small_rows[small_rows.category.isin(["Watches", "Handbags"])].reset_index(drop=True)
    path = write_catalog(rows, tmp_path / "shop")
    frame = pd.read_csv(path)
    images = tmp_path / "shop" / "images"
    extra = [f"images/{name}" for name in ("w2.jpg", "w3.jpg")]
    shutil.copy(tmp_path / "shop" / frame.loc[1, "image"], images / "w2.jpg")
    shutil.copy(tmp_path / "shop" / frame.loc[2, "image"], images / "w3.jpg")
    frame.loc[0, "image"] = "|".join([frame.loc[0, "image"], *extra])
    frame = frame.drop(index=[1, 2])
    frame.to_csv(path, index=False)
    run(path, encoder, store)
    stored = store.get([str(frame.iloc[0].id)], with_vectors=True)[str(frame.iloc[0].id)]
    assert stored.image_vectors.shape[0] == 3
    searcher = Searcher(encoder, store)
    photo = load_image_file(images / "w3.jpg")
    results = searcher.search(SearchQuery(image=photo, k=10)).results
    ids = [r.product_id for r in results]
    assert ids[0] == str(frame.iloc[0].id)
    assert len(ids) == len(set(ids))


def test_jsonl_and_parquet_catalogs_read_like_csv(small_catalog, tmp_path):
    frame = pd.read_csv(small_catalog)
    jsonl = small_catalog.with_suffix(".jsonl")
    frame.to_json(jsonl, orient="records", lines=True)
    with open(jsonl, "a") as handle:
        handle.write("{not json\n")
    parquet = small_catalog.with_suffix(".parquet")
    frame.to_parquet(parquet)
    from_csv, from_jsonl, from_parquet = (read_catalog(p) for p in (small_catalog, jsonl, parquet))
    assert [r.product_id for r in from_jsonl.rows] == [r.product_id for r in from_csv.rows]
    assert [r.price for r in from_parquet.rows] == [r.price for r in from_csv.rows]
    assert len(from_jsonl.errors) == 1 and "not valid JSON" in from_jsonl.errors[0].reason
    assert from_jsonl.errors[0].row == len(frame) + 1


def test_a_catalog_that_cannot_be_read_at_all_is_one_clear_error(tmp_path):
    from engine.errors import CatalogError

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CatalogError, match="empty"):
        read_catalog(empty)
    no_id = tmp_path / "noid.csv"
    no_id.write_text("name,image\nshirt,a.jpg\n")
    with pytest.raises(CatalogError, match="no id column"):
        read_catalog(no_id)
    spreadsheet = tmp_path / "catalog.xlsx"
    spreadsheet.write_text("x")
    with pytest.raises(CatalogError, match="unknown format"):
        read_catalog(spreadsheet)
