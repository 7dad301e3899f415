"""Concurrency: searches keep answering while an ingest writes; two ingests never corrupt a store.

In one process, threads share one ``EdgeStore`` (as the API does: searches and product upserts
on one store). Across processes, the embedded store is held by one process at a time: a second
``snapshop ingest`` either fails at once with a one-line "in use" error or, if the first has
already finished, runs after it. Either way the store ends whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from engine.errors import StoreUnavailable
from engine.images import load_image_file
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, StoreSettings
from engine.store import IMAGE_VECTOR, SearchFilters, open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import SMALL_CATEGORIES, pick_products, write_catalog

OTHER_CATEGORIES = ["Tshirts", "Casual Shoes", "Kurtas", "Tops", "Wallets", "Belts", "Flip Flops", "Socks"]


@pytest.fixture()
def shop(tmp_path, fashion_frame):
    """Two catalogs in one folder: 36 products already stored, and 96 others arriving."""
    first = pick_products(fashion_frame, 6, SMALL_CATEGORIES)
    second = pick_products(fashion_frame, 12, OTHER_CATEGORIES)
    assert not set(first.id) & set(second.id)
    folder = tmp_path / "shop"
    return {"first": write_catalog(first, folder, "first.csv"), "second": write_catalog(second, folder, "second.csv"),
            "folder": folder, "store": tmp_path / "store"}


def catalog_ids(path) -> set[str]:
    return set(pd.read_csv(path).id.astype(str))


def assert_every_product_whole(store, expected_ids: set[str]) -> None:
    ids = [product_id for product_id, _ in store.scroll_ids()]
    assert sorted(ids) == sorted(expected_ids) and store.count() == len(expected_ids)
    stored = store.get(ids, with_vectors=True)
    for product_id, product in stored.items():
        assert product.image_vectors is not None and product.image_vectors.shape[0] >= 1, product_id
        assert product.caption_vector is not None and product.sentence_vector is not None, product_id
        assert product.payload.get("title") and product.payload.get("content_hash"), product_id


def test_searches_answer_correctly_while_an_ingest_writes_to_the_same_store(shop, encoder):
    first, second = shop["first"], shop["second"]
    settings = IngestSettings(upsert_batch=8, decode_workers=2)
    with open_store(StoreSettings(path=shop["store"]), encoder.info) as store:
        ingest_catalog(read_catalog(first), encoder, store, settings, progress=False)
        searcher = Searcher(encoder, store)
        frame = pd.read_csv(first)
        queries = [(str(row.id), row.category, load_image_file(shop["folder"] / row.image))
                   for row in frame.iloc[::6].itertuples()]
        known = catalog_ids(first) | catalog_ids(second)

        failures: list[BaseException] = []

        def ingest_second():
            try:
                ingest_catalog(read_catalog(second), encoder, store, settings, progress=False)
            except BaseException as e:  # noqa: BLE001 - the assertion below reports it
                failures.append(e)

        writer = threading.Thread(target=ingest_second)
        writer.start()
        answered, counts = 0, []
        while writer.is_alive() or answered < len(queries):
            product_id, category, photo = queries[answered % len(queries)]
            counts.append(store.count())
            results = searcher.search(SearchQuery(image=photo, k=5)).results
            assert results and results[0].product_id == product_id, "the product's own photo must find it first"
            assert all(r.product_id in known and r.title for r in results)
            filtered = searcher.search(SearchQuery(text="black", k=5, filters=SearchFilters((category,)))).results
            assert filtered and all(r.category == category for r in filtered)
            hits = store.query(encoder.encode_images([photo])[0], IMAGE_VECTOR, SearchFilters(), 20,
                               with_vectors=True)
            assert all(h.image_vectors is not None and h.caption_vector is not None for h in hits)
            answered += 1
        writer.join()
        assert not failures, failures
        assert answered >= 3, "the ingest ended before searches could overlap it"
        assert counts == sorted(counts), "the product count went down during an ingest"
        assert counts[0] < len(known) and counts[-1] <= len(known)
        assert_every_product_whole(store, known)


def test_two_ingests_on_one_store_object_in_two_threads_both_land_whole(shop, encoder):
    first, second = shop["first"], shop["second"]
    settings = IngestSettings(upsert_batch=4, decode_workers=1)
    with open_store(StoreSettings(path=shop["store"]), encoder.info) as store:
        summaries, failures = {}, []

        def run(name, path):
            try:
                summaries[name] = ingest_catalog(read_catalog(path), encoder, store, settings, progress=False)
            except BaseException as e:  # noqa: BLE001 - the assertion below reports it
                failures.append(e)

        threads = [threading.Thread(target=run, args=(name, path)) for name, path in (("a", first), ("b", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        assert summaries["a"].added == len(catalog_ids(first)) and summaries["b"].added == len(catalog_ids(second))
        assert_every_product_whole(store, catalog_ids(first) | catalog_ids(second))


def test_a_second_open_of_an_embedded_store_in_use_is_refused_and_the_first_goes_on(shop, encoder):
    settings = StoreSettings(path=shop["store"])
    with open_store(settings, encoder.info) as store:
        ingest_catalog(read_catalog(shop["first"]), encoder, store, IngestSettings(), progress=False)
        with pytest.raises(StoreUnavailable, match="in use by another snapshop process"):
            open_store(settings, encoder.info)
        store.set_payload(str(pd.read_csv(shop["first"]).id[0]), {"price": 1.0})  # the holder still writes
        assert_every_product_whole(store, catalog_ids(shop["first"]))


def _cli_ingest(catalog, store_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOP_")}
    env["SNAPSHOP_STORE__PATH"] = str(store_path)
    return subprocess.Popen([sys.executable, "-m", "snapshop", "ingest", str(catalog)], cwd=store_path.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_cli_ingests_at_once_one_waits_its_turn_or_fails_clearly_and_the_store_is_whole(shop, encoder):
    """Both processes load the model, then open the store: whichever comes second while the other
    holds it exits at once with a one-line error; if the other is done by then, it simply runs."""
    processes = [_cli_ingest(shop["first"], shop["store"]), _cli_ingest(shop["second"], shop["store"])]
    outcomes = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("an ingest hung")
        outcomes.append((process.returncode, out, err))
    assert any(code == 0 for code, _, _ in outcomes), outcomes
    expected = set()
    for (code, out, err), catalog in zip(outcomes, (shop["first"], shop["second"])):
        if code == 0:
            expected |= catalog_ids(catalog)
            assert "added" in out
        else:
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: ") and "in use" in lines[0], err
            assert "Traceback" not in err
    with open_store(StoreSettings(path=shop["store"]), encoder.info) as store:
        assert_every_product_whole(store, expected)


def test_a_cli_ingest_against_a_store_held_by_a_running_process_fails_fast_and_harms_nothing(shop, encoder):
    with open_store(StoreSettings(path=shop["store"]), encoder.info) as store:
        ingest_catalog(read_catalog(shop["first"]), encoder, store, IngestSettings(), progress=False)
        before = {pid: payload["content_hash"] for pid, payload in store.scroll_ids()}
        process = _cli_ingest(shop["second"], shop["store"])
        try:  # model loading, then the refusal at once; waiting on the held store would hang here
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("an ingest against a held store waited instead of failing fast")
        assert process.returncode != 0 and "in use by another snapshop process" in err
        assert len([line for line in err.splitlines() if line.strip()]) == 1
        assert {pid: payload["content_hash"] for pid, payload in store.scroll_ids()} == before
    with open_store(StoreSettings(path=shop["store"]), encoder.info) as store:  # and it opens again
        assert_every_product_whole(store, catalog_ids(shop["first"]))
        assert np.isfinite(store.get([next(iter(before))], with_vectors=True)[next(iter(before))].caption_vector).all()


def _race_to_open(settings, info) -> tuple[list, list[str], list[str]]:
    """Two threads open the same store at the same moment: (stores opened, refusals, other errors)."""
    barrier, opened, refused, other = threading.Barrier(2), [], [], []

    def open_it():
        barrier.wait()
        try:
            opened.append(open_store(settings, info))
        except StoreUnavailable as e:
            refused.append(str(e))
        except Exception as e:  # noqa: BLE001 - any other error is a failure the caller reports
            other.append(repr(e))

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return opened, refused, other


def test_two_openers_racing_to_create_a_new_store_get_one_store_and_one_clear_refusal(tmp_path):
    """Both see no store yet and both set out to create it: exactly one does, the other is told the
    store is in use (never a half-deleted or doubly created shard)."""
    from engine.model_info import ModelInfo
    from engine.store import ProductPoint

    info = ModelInfo("race-model", "1", 8)
    for attempt in range(8):
        settings = StoreSettings(path=tmp_path / f"store-{attempt}")
        opened, refused, other = _race_to_open(settings, info)
        assert not other, other
        assert len(opened) == 1 and len(refused) == 1 and "in use" in refused[0]
        with opened[0] as store:
            store.upsert([ProductPoint("p1", np.ones((1, 8), np.float32), np.ones(8, np.float32), {"title": "x"})])
            store.optimize()
            assert store.count() == 1
        with open_store(settings, info) as store:
            assert store.count() == 1
