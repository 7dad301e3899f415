"""The shopper-photo centre learnt from the shop's own shoppers' photos (engine.analytics.centre):
the query log keeps a photo's appearance vector and its model (only the newest ones; old logs still
read), `snapshop calibrate --from-log` learns a centre from it, and a server (by default,
SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto) learns it as shoppers search, from the log or, with analytics
off, in memory only, through the real app, model and store, on real grocery shopper photos."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.analytics.centre import CentreLearner, RecentPhotoLooks, centre_from_log
from engine.analytics.log import LoggedQuery, QueryLog
from engine.errors import CalibrationError
from engine.images import decode_image
from engine.model_info import ModelInfo
from engine.settings import AnalyticsSettings, IngestSettings, SearchSettings, Settings, StoreSettings
from engine.shopper_centre import LEARN_EVERY, LEARN_FROM, MIN_PHOTOS, ShopperCentre
from engine.store import open_store
from eval.learnt_centre import centres_as_they_come
from ingest.catalog import Catalog, read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import GROCERY, require
from tests.test_cli import snapshop

INFO = ModelInfo("some-model", "1", dim=4, look_dim=3)


def logged_photo(number: int, model: str = INFO.tag, look: np.ndarray | None = None, at: float | None = None):
    look = np.random.default_rng(number).normal(size=3).astype(np.float32) if look is None else look
    query = LoggedQuery(kind="photo", text=None, filters={}, results=["a"], evidence=[], nothing_close=False,
                        latency_ms=1.0, photo_sha256=f"{number:064x}", photo_vector=np.ones(4, np.float32),
                        photo_look=look, model=model)
    if at is not None:
        query.at = at
    return query


def test_a_log_written_before_appearance_vectors_opens_reads_its_rows_and_keeps_new_ones(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the query table as the first log wrote it
        db.execute("CREATE TABLE queries (id TEXT PRIMARY KEY, at REAL NOT NULL, session TEXT, kind TEXT NOT NULL, "
                   "text TEXT, filters TEXT NOT NULL, photo_sha256 TEXT, photo_vector BLOB, results TEXT NOT NULL, "
                   "evidence TEXT NOT NULL, nothing_close INTEGER NOT NULL, latency_ms REAL NOT NULL)")
        db.execute("INSERT INTO queries VALUES ('old', ?, NULL, 'photo', NULL, '{}', 'abc', ?, '[\"a\"]', '[]', "
                   "0, 2.0)", (time.time(), np.ones(4, np.float32).tobytes()))
    with QueryLog(path) as log:
        log.record_query(logged_photo(1))
        old, new = list(log.queries())
    assert old.id == "old" and old.photo_look is None and old.model is None and old.photo_vector.shape == (4,)
    assert new.model == INFO.tag and np.array_equal(new.photo_look, logged_photo(1).photo_look)


def test_only_the_newest_appearance_vectors_are_kept_and_a_photo_searched_again_counts_once(tmp_path):
    with QueryLog(tmp_path / "log.sqlite") as log:
        for number in range(LEARN_FROM + 3):
            log.record_query(logged_photo(number, at=1_000_000_000 + number))
        log.record_query(logged_photo(LEARN_FROM + 2, at=2_000_000_000))  # its next page: the same photo
        log.purge(now=1_000_000_000)
        kept = log.photo_looks()
        rows = list(log.queries())
    assert len(rows) == LEARN_FROM + 4  # every search stays, ...
    assert sum(row.photo_look is not None for row in rows) == LEARN_FROM  # ... the oldest without its vector
    assert len(kept) == LEARN_FROM - 1  # distinct photos: the one searched twice once
    assert np.array_equal(kept[0][1], logged_photo(LEARN_FROM + 2).photo_look)  # newest first


def test_too_few_logged_photos_or_another_models_are_a_clear_error(tmp_path):
    with QueryLog(tmp_path / "log.sqlite") as log:
        for number in range(3):
            log.record_query(logged_photo(number))
        for number in range(3, 15):
            log.record_query(logged_photo(number, model="other-model@2"))
        with pytest.raises(CalibrationError, match=rf"holds 3 photo searches .* of model some-model@1; 12 logged by "
                                                   rf"other models were left out \(other-model@2: 12\); .* at least "
                                                   rf"{MIN_PHOTOS}"):
            centre_from_log(log, INFO)
        for number in range(15, 15 + MIN_PHOTOS):
            log.record_query(logged_photo(number))
        centre, others = centre_from_log(log, INFO)
    assert centre.photos == 3 + MIN_PHOTOS and centre.model == INFO.tag and others == {"other-model@2": 12}
    mine = [logged_photo(n).photo_look for n in [*range(3), *range(15, 15 + MIN_PHOTOS)]]
    assert np.allclose(centre.vector, np.mean(mine, axis=0))


def test_a_centre_learnt_as_they_come_never_holds_the_photo_it_centres():
    looks = np.random.default_rng(0).normal(size=(45, 3)).astype(np.float32)
    centres = centres_as_they_come(looks, INFO.tag, seed=3)
    order = np.random.default_rng(3).permutation(len(looks))
    for seen, row in enumerate(order):
        centre = centres[row]
        if seen < MIN_PHOTOS:
            assert centre is None
            continue
        learnt_from = MIN_PHOTOS + (seen - MIN_PHOTOS) // LEARN_EVERY * LEARN_EVERY
        assert centre.photos == learnt_from
        assert np.allclose(centre.vector, looks[order[:learnt_from]].mean(axis=0))


def test_the_learner_learns_from_the_10th_photo_again_every_10_and_not_from_another_models(tmp_path):
    learnt: list[ShopperCentre] = []
    with QueryLog(tmp_path / "log.sqlite") as log:
        learner = CentreLearner(log, INFO, learnt.append)
        learner.start()
        for number in range(2 * LEARN_EVERY + MIN_PHOTOS):
            other = number % 3 == 0  # another model's searches are logged too, and neither counted nor read
            log.record_query(logged_photo(number, model="other-model@2" if other else INFO.tag))
            learner.logged("other-model@2" if other else INFO.tag)
            learner.settled()
        learner.close()
        learner.logged(INFO.tag)  # a search in flight at shutdown: nothing to learn, no error
    mine = 2 * LEARN_EVERY + MIN_PHOTOS - len(range(0, 2 * LEARN_EVERY + MIN_PHOTOS, 3))
    assert [centre.photos for centre in learnt] == list(range(MIN_PHOTOS, mine + 1, LEARN_EVERY))
    assert all(centre.model == INFO.tag for centre in learnt)
    # A restart learns from what the log holds at once.
    with QueryLog(tmp_path / "log.sqlite") as log:
        restarted: list[ShopperCentre] = []
        CentreLearner(log, INFO, restarted.append).start()
    assert [centre.photos for centre in restarted] == [mine]


def test_auto_is_the_default_and_needs_no_query_log():
    assert Settings().search.shopper_centre == "auto"
    assert Settings(search=SearchSettings(shopper_centre="off")).search.shopper_centre == "off"


def test_recent_photo_looks_keep_the_newest_distinct_photos_in_memory():
    kept = RecentPhotoLooks(limit=3)
    for number in range(5):
        kept.add(f"{number:064x}", INFO.tag, np.full(3, number, np.float32))
    kept.add(f"{2:064x}", INFO.tag, np.full(3, 2, np.float32))  # searched again: newest, counted once
    assert [int(look[0]) for _, look in kept.photo_looks()] == [2, 4, 3]


# --- through the real app, model and store -------------------------------------------------------

@pytest.fixture(scope="module")
def grocery_shop(tmp_path_factory, encoder):
    """30 grocery products ingested; the shopper photos of those products."""
    folder = tmp_path_factory.mktemp("centre-log")
    catalog = read_catalog(require(GROCERY) / "catalog.csv")
    rows = catalog.rows[:30]
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(Catalog(catalog.path, rows, []), encoder, store, IngestSettings(), progress=False)
    queries = pd.read_csv(GROCERY / "queries.csv", dtype=str)
    queries = queries[queries.product_id.isin({row.product_id for row in rows})].iloc[::5]
    return folder, [(GROCERY / path).read_bytes() for path in queries.query_image]


def serving(folder, centre: str | None = "auto", analytics: bool = True) -> Settings:
    return Settings(store=StoreSettings(path=folder / "store"), search=SearchSettings(shopper_centre=centre),
                    analytics=AnalyticsSettings(enabled=analytics, path=folder / "analytics.sqlite"))


def search_photo(client: TestClient, photo: bytes, **fields) -> dict:
    response = client.post("/search", files={"photo": ("shelf.jpg", photo, "image/jpeg")}, data={"k": "3", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_server_learns_its_centre_from_its_shoppers_photo_searches_and_calibrate_from_log_agrees(
        grocery_shop, encoder, tmp_path):
    folder, photos = grocery_shop
    assert len(photos) >= MIN_PHOTOS + 2
    with TestClient(create_app(serving(folder), encoder=encoder)) as client:
        runtime = client.app.state.runtime
        search_photo(client, photos[0], crop="0.1,0.1,0.8,0.8")  # a box drawn: not a photo as taken
        search_photo(client, photos[0], text="organic")  # words added: the photo counts
        for photo in photos[1:MIN_PHOTOS - 1]:
            search_photo(client, photo)
        search_photo(client, photos[1], offset="3")  # the next page of a photo already searched
        runtime.centre_learner.settled()
        assert runtime.searcher.shopper_centre is None  # 10 photo searches logged, 9 distinct photos
        assert "snapshop_shopper_centre_photos 0.0" in client.get("/metrics").text
        search_photo(client, photos[MIN_PHOTOS - 1])
        runtime.centre_learner.settled()
        learnt = runtime.searcher.shopper_centre
        assert learnt is not None and learnt.photos == MIN_PHOTOS and learnt.model == encoder.info.tag
        assert f"snapshop_shopper_centre_photos {MIN_PHOTOS}.0" in client.get("/metrics").text
        query_id = search_photo(client, photos[MIN_PHOTOS])["query_id"]
        # The photo's appearance vector as searched is the logged one less the centre.
        with QueryLog(folder / "analytics.sqlite") as log:
            logged = next(q for q in log.queries() if q.id == query_id)
        from engine.search import SearchQuery

        prepared = runtime.searcher.prepare(SearchQuery(image=decode_image(photos[MIN_PHOTOS]), k=3))
        assert np.allclose(prepared.look, learnt.centred(logged.photo_look), atol=1e-5)
        assert float(prepared.look @ logged.photo_look) < 0.99  # the centre moved it
    result = snapshop("calibrate", "--from-log", "--log", str(folder / "analytics.sqlite"),
                      "--out", str(tmp_path / "centre.npz"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"centre of {MIN_PHOTOS + 1} shopper photos" in result.stdout
    written = ShopperCentre.load(tmp_path / "centre.npz", encoder.info)
    assert written.photos == MIN_PHOTOS + 1
    # A restart learns it again from the log, before any new search.
    with TestClient(create_app(serving(folder), encoder=encoder)) as client:
        assert np.allclose(client.app.state.runtime.searcher.shopper_centre.vector, written.vector, atol=1e-6)


def test_with_analytics_off_a_server_learns_its_centre_in_memory_and_writes_nothing(grocery_shop, encoder):
    folder, photos = grocery_shop
    settings = Settings(store=StoreSettings(path=folder / "store"),
                        analytics=AnalyticsSettings(enabled=False, path=folder / "memory-only" / "analytics.sqlite"))
    looks = []
    with TestClient(create_app(settings, encoder=encoder)) as client:
        runtime = client.app.state.runtime
        assert runtime.query_log is None and isinstance(runtime.centre_learner.source, RecentPhotoLooks)
        search_photo(client, photos[0], crop="0.1,0.1,0.8,0.8")  # a box drawn: not a photo as taken
        for photo in photos[:MIN_PHOTOS - 1]:
            looks.append(runtime.searcher.encode_photo(decode_image(photo)).look)
            search_photo(client, photo)
        search_photo(client, photos[1], offset="3")  # the next page of a photo already searched
        runtime.centre_learner.settled()
        assert runtime.searcher.shopper_centre is None  # 9 distinct photos so far
        before = search_photo(client, photos[MIN_PHOTOS])["data"]
        looks.append(runtime.searcher.encode_photo(decode_image(photos[MIN_PHOTOS])).look)
        runtime.centre_learner.settled()
        learnt = runtime.searcher.shopper_centre
        assert learnt is not None and learnt.photos == MIN_PHOTOS
        assert np.allclose(learnt.vector, np.mean(looks, axis=0), atol=1e-5)
        assert f"snapshop_shopper_centre_photos {MIN_PHOTOS}.0" in client.get("/metrics").text
        # The same photo searched again is now centred: its scores move.
        after = search_photo(client, photos[MIN_PHOTOS])["data"]
        assert [hit["score"] for hit in after] != [hit["score"] for hit in before]
    assert not (folder / "memory-only").exists()  # nothing of the shoppers' photos was written
    # A restart starts over.
    with TestClient(create_app(settings, encoder=encoder)) as client:
        assert client.app.state.runtime.searcher.shopper_centre is None
    # Off: no learner, no centre.
    with TestClient(create_app(serving(folder, centre="off", analytics=False), encoder=encoder)) as client:
        assert client.app.state.runtime.centre_learner is None


def test_calibrate_from_a_log_with_too_few_photo_searches_says_how_many(tmp_path):
    with QueryLog(tmp_path / "analytics.sqlite") as log:
        for number in range(MIN_PHOTOS):
            log.record_query(logged_photo(number, model="old-model@1"))
    result = snapshop("calibrate", "--from-log", "--log", str(tmp_path / "analytics.sqlite"), cwd=tmp_path)
    assert result.returncode == 2
    assert "holds 0 photo searches" in result.stderr and f"at least {MIN_PHOTOS}" in result.stderr
    assert f"{MIN_PHOTOS} logged by other models were left out (old-model@1: {MIN_PHOTOS})" in result.stderr
    missing = snapshop("calibrate", "--from-log", "--log", str(tmp_path / "none.sqlite"), cwd=tmp_path)
    assert missing.returncode == 2 and "no query log at" in missing.stderr
    neither = snapshop("calibrate", cwd=tmp_path)
    assert neither.returncode == 2 and "--from-log" in neither.stderr
