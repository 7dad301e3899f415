"""The store: both back ends keep products, filter, and refuse vectors of another model."""

import json

import numpy as np
import pytest

from engine.errors import StoreModelMismatch, StoreUnavailable
from engine.local_features import pack, unpack, verify
from engine.model_info import ModelInfo
from engine.settings import StoreSettings
from engine.store import CAPTION_VECTOR, IMAGE_VECTOR, ProductPoint, SearchFilters, open_store
from engine.store.base import LOCAL_VECTOR, VectorQuery
from tests.conftest import checkerboard_features

INFO = ModelInfo("snapshop-lit-fashion", "1-test", 8)


def unit(*values):
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def products():
    return [
        ProductPoint("shirt-1", np.stack([unit(1, 0, 0, 0, 0, 0, 0, 0), unit(1, 1, 0, 0, 0, 0, 0, 0)]),
                     unit(0, 0, 1, 0, 0, 0, 0, 0), {"title": "Blue shirt", "price": 20.0, "category": "Shirts"},
                     local_features=pack(checkerboard_features())),
        ProductPoint("shirt-2", np.stack([unit(0.9, 0.1, 0, 0, 0, 0, 0, 0)]), unit(0, 0, 1, 0.2, 0, 0, 0, 0),
                     {"title": "Black shirt", "price": 45.0, "category": "Shirts"}),
        ProductPoint("watch-1", np.stack([unit(0, 0, 0, 0, 1, 0, 0, 0)]), unit(0, 0, 0, 0, 0, 1, 0, 0),
                     {"title": "Steel watch", "price": 120.0, "category": "Watches"}),
    ]


@pytest.fixture(params=["edge", "server"])
def settings(request, tmp_path):
    # The server back end runs against qdrant-client's in-memory mode: the same API as a server.
    return StoreSettings(path=tmp_path / "store") if request.param == "edge" else StoreSettings(url=":memory:")


def test_products_are_stored_once_and_found_by_photo_and_title(settings):
    with open_store(settings, INFO) as store:
        store.upsert(products())
        store.upsert(products()[:1])  # again: overwritten, not duplicated
        assert store.count() == 3
        hits = store.query(unit(1, 0.5, 0, 0, 0, 0, 0, 0), IMAGE_VECTOR, SearchFilters(), 10, with_vectors=True)
        assert [h.product_id for h in hits][:2] == ["shirt-1", "shirt-2"]
        assert hits[0].image_vectors.shape == (2, 8)
        assert store.query(unit(0, 0, 0, 0, 0, 1, 0, 0), CAPTION_VECTOR, SearchFilters(), 1)[0].product_id == "watch-1"


def test_filters_apply_to_every_hit(settings):
    with open_store(settings, INFO) as store:
        store.upsert(products())
        query = unit(1, 0, 0, 0, 0, 0, 0, 0)
        hits = store.query(query, IMAGE_VECTOR, SearchFilters(min_price=30, max_price=200), 10)
        assert {h.product_id for h in hits} == {"shirt-2", "watch-1"}
        hits = store.query(query, IMAGE_VECTOR, SearchFilters(categories=("Watches",)), 10)
        assert [h.product_id for h in hits] == ["watch-1"]
        assert store.facet("category") == {"Shirts": 2, "Watches": 1}
        assert store.count(SearchFilters(categories=("Shirts",), max_price=30)) == 1


def test_payload_updates_and_deletes(settings):
    with open_store(settings, INFO) as store:
        store.upsert(products())
        store.set_payload("shirt-1", {"price": 99.0})
        stored = store.get(["shirt-1"], with_vectors=True)["shirt-1"]
        assert stored.payload["price"] == 99.0 and stored.payload["title"] == "Blue shirt"
        assert stored.image_vectors.shape == (2, 8)  # vectors untouched
        store.delete(["shirt-1", "not-there"])
        assert store.count() == 2 and store.get(["shirt-1"]) == {}


def test_a_store_made_by_another_model_is_refused(tmp_path):
    settings = StoreSettings(path=tmp_path / "store")
    with open_store(settings, INFO) as store:
        store.upsert(products())
    other = ModelInfo("ViT-B-32/laion2b_s34b_b79k", "laion2b_s34b_b79k", 8)
    with pytest.raises(StoreModelMismatch, match="re-index"):
        open_store(settings, other)
    retrained = ModelInfo(INFO.name, "1-otherheads", 8)
    with pytest.raises(StoreModelMismatch):
        open_store(settings, retrained)
    with open_store(settings, INFO) as store:  # and the data is still there for the right model
        assert store.count() == 3


def test_a_server_collection_made_by_another_model_is_refused():
    from engine.store.server import ServerStore

    store = ServerStore(":memory:", "products", INFO)
    store.upsert(products())
    with pytest.raises(StoreModelMismatch, match="re-index"):
        ServerStore(":memory:", "products", ModelInfo("other", "x", 8), client=store.client)
    assert ServerStore(":memory:", "products", INFO, client=store.client).count() == 3


def test_an_embedded_store_in_use_is_refused_clearly(tmp_path):
    settings = StoreSettings(path=tmp_path / "store")
    with open_store(settings, INFO), pytest.raises(StoreUnavailable, match="in use"):
        open_store(settings, INFO)


def test_a_qdrant_url_that_does_not_answer_is_a_clear_error():
    with pytest.raises(StoreUnavailable, match="does not answer"):
        open_store(StoreSettings(url="http://127.0.0.1:9", timeout_s=1), INFO)


def test_bm25_terms_sampling_recommend_and_price_extremes(settings):
    """The calls the hybrid ranker makes, on both back ends."""
    from engine.lexical import query_terms, title_terms
    from engine.store.base import BM25_VECTOR, VectorQuery

    points = products()
    for point in points:
        point.terms = title_terms(point.payload["title"])
        point.sentence_vector = np.zeros(384, dtype=np.float32)
        point.sentence_vector[0] = 1.0
    with open_store(settings, INFO) as store:
        store.upsert(points)
        words, steel = store.search_many([VectorQuery(BM25_VECTOR, terms=query_terms("black shirts"))], SearchFilters(),
                                         10)[0], store.search_many([VectorQuery(BM25_VECTOR, terms=query_terms("steel"))],
                                                                   SearchFilters(categories=("Shirts",)), 10)[0]
        names = {key: r.product_id for key, r in store.records([key for key, _ in words]).items()}
        assert names[words[0][0]] == "shirt-2" and set(names.values()) == {"shirt-1", "shirt-2"}
        assert steel == []
        sample = store.sample(10)
        assert {p.product_id for p in sample} == {"shirt-1", "shirt-2", "watch-1"}
        assert all(p.image_vectors is not None and p.sentence_vector.shape == (384,) for p in sample)
        liked = store.recommend([unit(1, 0, 0, 0, 0, 0, 0, 0)], [unit(0, 0, 0, 0, 1, 0, 0, 0)],
                                SearchFilters(exclude_ids=("shirt-1",)), 2)
        assert [h.product_id for h in liked][0] == "shirt-2"
        assert store.extreme_price(SearchFilters(), lowest=True) == 20.0
        assert store.extreme_price(SearchFilters(categories=("Shirts",)), lowest=False) == 45.0


def test_batched_searches_scores_and_records_of_given_points(settings):
    """The ranker's calls: every signal's candidates in one batch, every signal's score for each
    candidate computed by Qdrant, and only the payload fields ranking reads; on both back ends."""
    from engine.lexical import query_terms, title_terms
    from engine.store.base import BM25_VECTOR, VectorQuery

    points = products()
    for point in points:
        point.terms = title_terms(point.payload["title"])
    with open_store(settings, INFO) as store:
        store.upsert(points)
        photo = unit(1, 0.5, 0, 0, 0, 0, 0, 0)
        queries = [VectorQuery(IMAGE_VECTOR, photo), VectorQuery(CAPTION_VECTOR, unit(0, 0, 1, 0.5, 0, 0, 0, 0), limit=1),
                   VectorQuery(BM25_VECTOR, terms=query_terms("black shirt"))]
        by_photo, by_title, by_words = store.search_many(queries, SearchFilters(max_price=100), 10)
        every = store.search_many([VectorQuery(IMAGE_VECTOR, photo)], SearchFilters(), 10)[0]
        names = {key: record.product_id for key, record in store.records([key for key, _ in every]).items()}
        assert [names[key] for key, _ in by_photo] == ["shirt-1", "shirt-2"]  # the watch is over the price
        assert [names[key] for key, _ in by_title] == ["shirt-2"]  # the query's own limit, under the filter
        assert names[by_words[0][0]] == "shirt-2"
        keys = {name: key for key, name in names.items()}
        image, words = store.score([keys["shirt-2"], keys["watch-1"]], [queries[0], queries[2]])
        # MaxSim over the product's photos: exactly the cosine of its best photo.
        assert set(image) == {keys["shirt-2"], keys["watch-1"]}
        assert image[keys["shirt-2"]] == pytest.approx(float(points[1].image_vectors[0] @ photo), abs=1e-4)
        assert image[keys["watch-1"]] == pytest.approx(0.0, abs=1e-4)
        assert set(words) == {keys["shirt-2"]}  # the watch has no term in common: absent, not zero
        assert store.score([], queries) == [{}, {}, {}]
        partial = store.records([keys["shirt-1"]], ["product_id", "price"], [IMAGE_VECTOR])[keys["shirt-1"]]
        assert partial.payload == {"product_id": "shirt-1", "price": 20.0}
        assert partial.image_vectors.shape == (2, 8) and partial.caption_vector is None


def test_graphs_are_built_only_where_search_walks_them(settings):
    """A million products index in a fraction of the time when the title's joint-space vector (it
    only scores candidates) gets no HNSW graph and the price index no graph per price block."""
    import json

    with open_store(settings, INFO) as store:
        store.upsert(products())
        if settings.url is None:
            shard = settings.path / settings.collection / "shard"
            vectors = json.loads((shard / "edge_config.json").read_text())["vectors"]
            fields = json.loads(next(shard.glob("segments/*/payload_index/config.json")).read_text())["indexed_fields"]
            assert {name: field["enable_hnsw"] for name, field in fields.items()} == \
                {"category": True, "price": False, "product_id": False, "fields.availability": False,
                 "fields.stock": False}
            graphs = {name: (params.get("hnsw_config") or {}).get("m", 16) for name, params in vectors.items()}
        else:
            params = store.client.get_collection(store.collection).config.params.vectors
            graphs = {name: (p.hnsw_config.m if p.hnsw_config and p.hnsw_config.m is not None else 16)
                      for name, p in params.items()}
        assert graphs[CAPTION_VECTOR] == 0 and graphs[IMAGE_VECTOR] == 16
        # Searches on it stay exact: the title vector still finds its product.
        assert store.query(unit(0, 0, 0, 0, 0, 1, 0, 0), CAPTION_VECTOR, SearchFilters(), 1)[0].product_id == "watch-1"


def test_warming_reads_the_embedded_store_into_memory(settings):
    """The API warms its store at start: the embedded one reads every segment file once (the
    first shoppers' searches then find vectors and graphs in memory), except the photos' local
    features, which stay on disk (only a few candidates' are read a query); a server warms itself."""
    with open_store(settings, INFO) as store:
        store.upsert(products())
        read = store.warm()
        if settings.url is None:
            segments = settings.path / settings.collection / "shard" / "segments"
            files = [p for p in segments.rglob("*") if p.is_file()]
            local = sum(p.stat().st_size for p in files if f"vector_storage-{LOCAL_VECTOR}" in p.parts)
            assert local > 0
            assert read == sum(p.stat().st_size for p in files) - local > 0
        else:
            assert read == 0
        assert store.query(unit(1, 0, 0, 0, 0, 0, 0, 0), IMAGE_VECTOR, SearchFilters(), 1)[0].product_id == "shirt-1"


def test_a_store_made_before_the_vectors_were_renamed_keeps_opening(tmp_path, monkeypatch):
    """Stores of schema 3 named the joint-space title "text" and its sentence embedding "title"; such
    a store (made here with the old names in Qdrant) opens, searches, reads and takes writes."""
    import json

    from engine.store import edge
    from engine.store.base import SENTENCE_VECTOR, model_record

    settings = StoreSettings(path=tmp_path / "store")
    shard = settings.path / settings.collection / "shard"

    def with_sentences(points):
        for n, p in enumerate(points):
            p.sentence_vector = np.eye(384, dtype=np.float32)[n]
        return points

    monkeypatch.setattr(edge, "model_record", lambda info: {**model_record(info), "schema": 3})
    with open_store(settings, INFO) as store:
        store.upsert(with_sentences(products()[:2]))
    monkeypatch.undo()
    assert set(json.loads((shard / "edge_config.json").read_text())["vectors"]) == {"image", "text", "title", "local"}

    with open_store(settings, INFO) as store:
        assert store.layout.name(CAPTION_VECTOR) == "text" and store.layout.name(SENTENCE_VECTOR) == "title"
        store.upsert(with_sentences(products())[2:])  # written in the store's own names
        assert store.query(unit(0, 0, 0, 0, 0, 1, 0, 0), CAPTION_VECTOR, SearchFilters(), 1)[0].product_id == "watch-1"
        assert store.query(np.eye(384, dtype=np.float32)[1], SENTENCE_VECTOR, SearchFilters(), 1)[0].product_id \
            == "shirt-2"
        stored = store.get(["shirt-1", "watch-1"], with_vectors=[CAPTION_VECTOR, SENTENCE_VECTOR])
        assert stored["watch-1"].caption_vector[5] > 0.99 and stored["shirt-1"].sentence_vector[0] == 1.0
        assert all(p.caption_vector is not None for p in store.sample(10))
    assert set(json.loads((shard / "edge_config.json").read_text())["vectors"]) == {"image", "text", "title", "local"}

    fresh = StoreSettings(path=tmp_path / "new")
    with open_store(fresh, INFO) as store:
        assert store.layout.name(CAPTION_VECTOR) == "caption"
    vectors = json.loads((fresh.path / fresh.collection / "shard" / "edge_config.json").read_text())["vectors"]
    assert set(vectors) == {"image", "caption", "text", "local"}


def test_local_features_are_kept_and_read_back_after_a_restart(settings):
    """A product's photos' local features come back byte for byte (after a restart for the embedded
    store), and only when asked for: samples for the ranker's backgrounds never carry them."""
    with open_store(settings, INFO) as store:
        store.upsert(products())
        assert all(p.local_features is None for p in store.sample(10))
        if settings.url is None:
            store.close()
            store = open_store(settings, INFO)
        with store:
            [key] = [key for key, _ in store.search_many([VectorQuery(IMAGE_VECTOR, unit(1, 0, 0, 0, 0, 0, 0, 0))],
                                                           SearchFilters(), 1)[0]]
            stored = store.records([key], ["product_id"], [LOCAL_VECTOR])[key]
    assert stored.product_id == "shirt-1"
    assert stored.local_features.dtype == np.uint8
    assert np.array_equal(stored.local_features, pack(checkerboard_features()))
    [photo] = unpack(stored.local_features)
    assert verify(photo, photo) == len(photo) > 20


def test_a_store_made_before_local_features_takes_products_without_them(tmp_path):
    """A store whose model record predates local features is still written and read (the match
    signal just does not apply to it until it is re-indexed)."""
    settings = StoreSettings(path=tmp_path / "store")
    with open_store(settings, INFO):
        pass
    record_path = settings.path / settings.collection / "snapshop.json"
    record = json.loads(record_path.read_text())
    del record["local_features"]
    record_path.write_text(json.dumps(record))
    with open_store(settings, INFO) as store:
        assert store.local_features is False
        store.upsert(products())
        found = store.get(["shirt-1"], with_vectors=True)["shirt-1"]
    assert found.local_features is None and found.image_vectors.shape == (2, 8)
