"""How the stores index: int8 copies of the searched vectors with rescoring, graphs built a segment
at a time while products are written; both stores, the server through qdrant-client's in-memory mode."""

import json

import numpy as np
import pytest

from engine.model_info import ModelInfo
from engine.settings import StoreSettings
from engine.store import IMAGE_VECTOR, ProductPoint, SearchFilters, open_store
from engine.store.base import CAPTION_VECTOR, LOCAL_VECTOR, SENTENCE_VECTOR, VectorQuery
from engine.store.edge import EdgeStore
from engine.store.indexing import Indexing

INFO = ModelInfo("snapshop-lit-fashion", "1-test", 32)
CATEGORIES = ("Shirts", "Watches", "Shoes")


def catalog(count: int, seed: int = 0) -> list[ProductPoint]:
    """``count`` products with random unit vectors, three categories, prices 1..count."""
    rng = np.random.default_rng(seed)

    def unit(*shape):
        vectors = rng.standard_normal(shape).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)

    return [ProductPoint(f"p{i}", unit(1, INFO.dim), unit(INFO.dim),
                         {"title": f"product {i}", "price": float(i + 1), "category": CATEGORIES[i % 3]},
                         sentence_vector=unit(384))
            for i in range(count)]


def segments(settings: StoreSettings) -> list[dict]:
    """The embedded store's segments as Qdrant wrote them: each one's per-vector config."""
    folder = settings.path / settings.collection / "shard" / "segments"
    return [json.loads((path / "segment.json").read_text())["config"]["vector_data"]
            for path in sorted(folder.iterdir()) if (path / "segment.json").exists()]


@pytest.fixture(params=["edge", "server"])
def settings(request, tmp_path):
    return (StoreSettings(path=tmp_path / "store") if request.param == "edge"
            else StoreSettings(url=":memory:"))


def test_searched_vectors_get_int8_copies_and_scores_stay_exact(settings):
    """The vectors searched through a graph are kept as int8 copies too; the ones that only score
    candidates are not, and every score the ranker reads is the exact cosine."""
    products = catalog(60)
    with open_store(settings, INFO) as store:
        store.upsert(products)
        store.optimize()
        if settings.url is None:
            config = json.loads((settings.path / settings.collection / "shard" / "edge_config.json").read_text())
            quantized = {name: params.get("quantization_config") for name, params in config["vectors"].items()}
        else:
            params = store.client.get_collection(store.collection).config.params.vectors
            quantized = {name: p.quantization_config and p.quantization_config.model_dump(exclude_none=True)
                         for name, p in params.items()}
        int8 = {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
        assert quantized[IMAGE_VECTOR] == int8 and quantized[SENTENCE_VECTOR] == int8
        assert not quantized[CAPTION_VECTOR] and not quantized[LOCAL_VECTOR]
        query = products[7].sentence_vector
        keys = [key for key, _ in store.search_many([VectorQuery(IMAGE_VECTOR, products[7].image_vectors[0])],
                                                    SearchFilters(), 20)[0]]
        scores = store.score(keys, [VectorQuery(SENTENCE_VECTOR, query)])[0]
        stored = store.records(keys, ["product_id"], [SENTENCE_VECTOR])
        for key, score in scores.items():
            assert score == pytest.approx(float(stored[key].sentence_vector @ query), abs=1e-5)


def test_quantization_none_keeps_only_the_original_vectors(tmp_path):
    settings = StoreSettings(path=tmp_path / "store", quantization="none")
    with open_store(settings, INFO) as store:
        store.upsert(catalog(10))
    config = json.loads((settings.path / settings.collection / "shard" / "edge_config.json").read_text())
    assert all(not params.get("quantization_config") for params in config["vectors"].values())


def test_graphs_are_built_a_segment_at_a_time_while_writing(tmp_path):
    """Every ``segment_products`` products written are indexed at once (graph and int8 copies) as
    a segment of their own, not merged back into one big one; searches find products in every
    segment, with filters, and all of it reads back after a restart."""
    settings = StoreSettings(path=tmp_path / "store")
    # 3,000 products' 384-d sentences are 4.5 MB: the threshold is lowered under that (the default
    # 10 MB leaves a store this small without graphs: its searches are exact).
    indexing = Indexing(segment_products=3000, indexing_threshold_kb=1000)
    products = catalog(7000)

    def store_of():
        return EdgeStore(settings.path, settings.collection, INFO, indexing=indexing)

    with store_of() as store:
        for start in range(0, len(products), 500):
            store.upsert(products[start : start + 500])
        indexed = [s for s in segments(settings) if s[IMAGE_VECTOR]["index"]["type"] == "hnsw"]
        assert len(indexed) == 2
        assert all(s[IMAGE_VECTOR]["quantization_config"] for s in indexed)
        store.optimize()
    with store_of() as store:
        assert store.count() == 7000
        for i in (10, 3500, 6990):  # one product in each segment's range
            hits = store.query(products[i].image_vectors[0], IMAGE_VECTOR, SearchFilters(), 5)
            assert hits[0].product_id == f"p{i}" and hits[0].score == pytest.approx(1.0, abs=1e-5)
            narrowed = store.query(products[i].image_vectors[0], IMAGE_VECTOR,
                                   SearchFilters(categories=(CATEGORIES[i % 3],), max_price=i + 1.0), 5)
            assert narrowed[0].product_id == f"p{i}"
            assert all(h.payload["category"] == CATEGORIES[i % 3] and h.payload["price"] <= i + 1 for h in narrowed)
        assert store.get(["p6999"], with_vectors=True)["p6999"].image_vectors.shape == (1, INFO.dim)
