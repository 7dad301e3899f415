"""The hybrid ranker: weights, explanations, 'nothing close', facets, more-like-this, history."""

import numpy as np
import pytest
from PIL import Image

from engine.errors import InvalidQuery, ProductNotFound
from engine.images import load_image_file
from engine.ranking import Background, bm25_share, fuse, squash
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, StoreSettings
from engine.signals import RankerWeights
from engine.store import SearchFilters, open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, pick_products, write_catalog


@pytest.fixture(scope="module")
def shop(tmp_path_factory, fashion_frame, encoder):
    rows = pick_products(fashion_frame, 12, ["Shirts", "Watches", "Sports Shoes", "Handbags", "Sunglasses",
                                             "Jeans", "Flip Flops", "Tshirts", "Heels", "Backpacks"])
    folder = tmp_path_factory.mktemp("ranker")
    path = write_catalog(rows, folder)
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(path), encoder, store, IngestSettings(), progress=False)
        yield Searcher(encoder, store), rows


def test_fusion_is_a_weighted_mean_of_evidence_and_shares_sum_to_one():
    weights = RankerWeights(image=2.0, text=1.0, bm25=0.0)
    score, shares = fuse({"image": 6.0, "text": 3.0, "bm25": 5.0}, weights)
    assert score == pytest.approx(squash((2 * 6.0 + 1 * 3.0) / 3))  # bm25 weighted 0: left out
    assert set(shares) == {"image", "text"} and sum(shares.values()) == pytest.approx(1.0)
    assert shares["image"] == pytest.approx(12 / 15)
    # Calibration: 2.5 background standard deviations above the mean is an even bet.
    background = Background.of(np.array([0.1, 0.2, 0.3]))
    assert background.calibrate(0.2 + 2.5 * background.std) == pytest.approx(0.5)
    assert background.calibrate(0.2 + 6 * background.std) > 0.95 and background.calibrate(0.2) < 0.1
    assert bm25_share(3.0, 6.0) == 0.5 and bm25_share(0.0, 0.0) == 0.0


def test_per_request_weights_change_the_ranking(shop):
    """BM25 alone ranks by the title's words; the photo signal alone by looks: they disagree."""
    searcher, _ = shop
    words = searcher.search(SearchQuery(text="puma", k=8, weights={s: 0.0 for s in RankerWeights.model_fields} | {"bm25": 1.0}))
    looks = searcher.search(SearchQuery(text="puma", k=8, weights={s: 0.0 for s in RankerWeights.model_fields} | {"image": 1.0}))
    assert all("puma" in r.title.lower() for r in words.results if r.signals.get("bm25", 0) > 0)
    assert [r.product_id for r in words.results] != [r.product_id for r in looks.results]
    with pytest.raises(InvalidQuery, match="unknown ranker weight"):
        searcher.search(SearchQuery(text="puma", weights={"colour": 1.0}))


def test_every_result_explains_its_score(shop):
    searcher, _ = shop
    response = searcher.search(SearchQuery(text="black leather handbag", k=5))
    for result in response.results:
        assert {"image", "text", "bm25"} <= set(result.explanation)
        assert sum(result.explanation.values()) == pytest.approx(1.0, abs=1e-3)
        assert all(0.0 <= v <= 1.0 for v in result.signals.values())


def test_nothing_close_for_a_photo_unlike_any_product(shop):
    searcher, rows = shop
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    assert searcher.search(SearchQuery(image=noise, k=5)).nothing_close
    photo = load_image_file(FASHION / rows.iloc[0]["image"])
    assert not searcher.search(SearchQuery(image=photo, k=5)).nothing_close


def test_facets_count_categories_and_bucket_prices_under_filters(shop):
    searcher, rows = shop
    facets = searcher.facets(SearchFilters(categories=("Watches", "Heels")))
    assert facets["total"] == 24 and facets["categories"] == {"Watches": 12, "Heels": 12}
    assert sum(bucket["count"] for bucket in facets["price_histogram"]) == 24
    prices = rows[rows.category.isin(["Watches", "Heels"])].price
    assert facets["price_histogram"][0]["min"] == pytest.approx(prices.min(), abs=0.01)
    assert facets["price_histogram"][-1]["max"] == pytest.approx(prices.max(), abs=0.01)


def test_more_like_this_and_less_like_that(shop):
    searcher, rows = shop
    watch = str(rows[rows.category == "Watches"].iloc[0]["id"])
    similar = searcher.similar(watch, k=6)
    assert watch not in [r.product_id for r in similar]
    assert sum(r.category == "Watches" for r in similar) >= 5
    nearest = similar[0].product_id
    unlike = searcher.similar(watch, k=6, negative_ids=(nearest,))
    assert nearest not in [r.product_id for r in unlike]
    with pytest.raises(ProductNotFound):
        searcher.similar("no-such-id")


def test_history_biases_results_toward_the_shoppers_taste(shop):
    """'shoes' is ambiguous (flip flops, heels, sports shoes); a history of heels pulls heels up."""
    searcher, rows = shop
    heels = tuple(str(i) for i in rows[rows.category == "Heels"].id.iloc[:4])
    plain = searcher.search(SearchQuery(text="shoes", k=10))
    personal = searcher.search(SearchQuery(text="shoes", k=10, history=heels, weights={"personal": 3.0}))
    count = lambda response: sum(r.category == "Heels" for r in response.results)
    assert count(personal) > count(plain)
    assert all("personal" in r.signals for r in personal.results)
    off = searcher.search(SearchQuery(text="shoes", k=10, history=heels, weights={"personal": 0.0}))
    assert [r.product_id for r in off.results] == [r.product_id for r in plain.results]
