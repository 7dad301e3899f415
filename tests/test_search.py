"""Search by text, by photo and by both, with filters, on real products and the real model."""

import pytest

from engine.errors import InvalidQuery
from engine.images import load_image_file
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, StoreSettings
from engine.store import IMAGE_VECTOR, SearchFilters, open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import FASHION, pick_products, write_catalog


@pytest.fixture(scope="module")
def shop(tmp_path_factory, fashion_frame, encoder):
    """120 products over eight categories, ingested once for this module."""
    rows = pick_products(fashion_frame, 15, ["Shirts", "Tshirts", "Watches", "Sports Shoes", "Handbags",
                                              "Sunglasses", "Jeans", "Flip Flops"])
    folder = tmp_path_factory.mktemp("shop")
    path = write_catalog(rows, folder)
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(path), encoder, store, IngestSettings(), progress=False)
        yield Searcher(encoder, store), rows


def test_text_finds_the_kind_of_product_described(shop):
    searcher, _ = shop
    for text, category in [("analog wrist watch", "Watches"), ("sunglasses", "Sunglasses"),
                           ("running shoes", "Sports Shoes"), ("denim jeans", "Jeans")]:
        results = searcher.search(SearchQuery(text=text, k=5)).results
        hits = sum(r.category == category for r in results)
        assert hits >= 4, (text, [r.category for r in results])


def test_a_photo_finds_its_own_product_first(shop):
    searcher, rows = shop
    for _, row in rows.iloc[::10].iterrows():
        photo = load_image_file(FASHION / row["image"])
        results = searcher.search(SearchQuery(image=photo, k=3)).results
        assert results[0].product_id == str(row["id"])


def test_a_shopper_photo_of_an_unseen_product_gets_its_category_from_the_catalog_photos(shop, fashion_frame):
    """The catalog's photos are labelled examples: a shopper-like photo of a product the shop does
    not hold is given the category of the catalog photos it looks like (zero-shot from category
    names, this model got a shopper-like photo's category right 0.28 of the time)."""
    import random

    from eval.query_sets import shopper_like

    searcher, rows = shop
    unseen = fashion_frame[~fashion_frame.id.isin(rows.id) & fashion_frame.category.isin(rows.category.unique())]
    rng = random.Random(0)
    picked = unseen.groupby("category").head(2)
    right = 0
    for _, row in picked.iterrows():
        photo = shopper_like(load_image_file(FASHION / row["image"]), rng)
        response = searcher.search(SearchQuery(image=photo, k=5))
        right += response.predicted_category == row["category"]
    assert right >= 0.8 * len(picked), (right, len(picked))


def test_every_hit_satisfies_category_and_price_filters(shop):
    searcher, rows = shop
    prices = rows[rows.category.isin(["Watches", "Handbags"])].price.sort_values()
    low, high = float(prices.iloc[5]), float(prices.iloc[-5])
    filters = SearchFilters(categories=("Watches", "Handbags"), min_price=low, max_price=high)
    expected = rows[rows.category.isin(["Watches", "Handbags"]) & rows.price.between(low, high)]
    results = searcher.search(SearchQuery(text="black", filters=filters, k=50)).results
    assert len(results) == len(expected) > 0
    for result in results:
        assert result.category in ("Watches", "Handbags") and low <= result.price <= high


def test_a_filter_nothing_satisfies_gives_no_results(shop):
    searcher, _ = shop
    assert searcher.search(SearchQuery(text="shirt", filters=SearchFilters(categories=("Sarees",)))).results == []


def test_photo_plus_text_moves_results_toward_the_words(shop, fashion_frame):
    """A shirt's photo plus 'black' ranks black shirts higher than the photo alone does."""
    searcher, rows = shop
    shirt = rows[(rows.category == "Shirts") & (rows.colour != "Black")].iloc[0]
    photo = load_image_file(FASHION / shirt["image"])
    alone = searcher.search(SearchQuery(image=photo, k=8)).results
    both = searcher.search(SearchQuery(image=photo, text="black shirt", k=8)).results
    colour = dict(zip(rows.id.astype(str), rows.colour))
    black_alone = sum(colour[r.product_id] == "Black" for r in alone)
    black_both = sum(colour[r.product_id] == "Black" for r in both)
    assert black_both > black_alone
    assert sum(r.category in ("Shirts", "Tshirts") for r in both) >= 6


def test_queries_without_text_or_photo_or_with_bad_ranges_are_refused(shop):
    searcher, _ = shop
    with pytest.raises(InvalidQuery, match="text, a photo"):
        searcher.search(SearchQuery(text="   "))
    with pytest.raises(InvalidQuery, match="min_price"):
        SearchFilters(min_price=50, max_price=10)
    with pytest.raises(InvalidQuery, match="k must be"):
        searcher.search(SearchQuery(text="shirt", k=0))


def test_a_qdrant_server_ranks_like_the_embedded_store(tmp_path, fashion_frame, encoder):
    """The ranker's batched candidate searches and scoring run on either back end with one result.

    The server path runs against qdrant-client's in-memory mode (the server's API)."""
    rows = pick_products(fashion_frame, 6, ["Shirts", "Watches", "Handbags", "Jeans"])
    path = write_catalog(rows, tmp_path)
    answers = []
    for settings in (StoreSettings(path=tmp_path / "store"), StoreSettings(url=":memory:")):
        with open_store(settings, encoder.info) as store:
            ingest_catalog(read_catalog(path), encoder, store, IngestSettings(), progress=False)
            searcher = Searcher(encoder, store)
            photo = load_image_file(FASHION / rows.iloc[7]["image"])
            answers.append([searcher.search(query).results for query in (
                SearchQuery(text="black leather handbag", k=5),
                SearchQuery(image=photo, k=5),
                SearchQuery(text="in black", image=photo, k=5, filters=SearchFilters(max_price=5000)))])
    embedded, server = answers
    assert server[1][0].product_id == str(rows.iloc[7]["id"])
    for mine, theirs in zip(embedded, server):
        assert [r.product_id for r in mine] == [r.product_id for r in theirs]
        assert [r.score for r in mine] == pytest.approx([r.score for r in theirs], abs=1e-3)
        assert mine[0].explanation.keys() == theirs[0].explanation.keys()


def test_photo_searches_with_words_search_wider(shop, monkeypatch):
    """Words searched against photos are unlike every photo; the HNSW search of photos is made
    CROSS_MODAL_BREADTH times wider for them (COMPOSED_BREADTH for a photo composed with words),
    while a photo alone searches at the set breadth."""
    from engine.signals import COMPOSED_BREADTH, CROSS_MODAL_BREADTH

    searcher, rows = shop
    store, seen = searcher.store, []
    real_search_many = store.search_many

    def recording(queries, filters, limit):
        seen.extend(store.ef_for(q.using, q.limit or limit, q.breadth) for q in queries if q.using == IMAGE_VECTOR)
        return real_search_many(queries, filters, limit)

    monkeypatch.setattr(store, "search_many", recording)
    photo = load_image_file(FASHION / rows.iloc[0]["image"])
    breadths = []
    for query in (SearchQuery(text="black watch", k=5), SearchQuery(image=photo, text="in black", k=5),
                  SearchQuery(image=photo, k=5)):
        seen.clear()
        searcher.search(query)
        breadths.append(set(seen))
    # With words, every search of photos is a wider one: the words' own (alone, and within the
    # photo's category) CROSS_MODAL_BREADTH times, the photo composed with them wider still.
    (wide,), mixed, (alone,) = breadths
    assert alone == max(store.hnsw_ef, 40) and wide == store.hnsw_ef * CROSS_MODAL_BREADTH > alone
    assert mixed == {wide, store.hnsw_ef * COMPOSED_BREADTH} and store.hnsw_ef * COMPOSED_BREADTH > wide


def test_a_query_runs_each_of_its_store_searches_once(shop, monkeypatch):
    """Every search of the store is paid once per query: a photo's appearance search (its
    category vote's neighbours) is also its gathering search, and a photo with words filtered to
    the photo's own category does not search that category again for the same words. Its
    gathering searches, within the photo's category too, are one batch of the store, where its
    two searches of photos under that one filter share a breadth (so Qdrant reads the category's
    photos once for both)."""
    from engine.store.base import batched_breadths

    searcher, rows = shop
    store, seen, calls = searcher.store, [], []
    real_search_many = store.search_many

    def recording(queries, filters, limit):
        calls.append([(q.using, f, breadth) for q, (f, breadth) in zip(queries, batched_breadths(queries, filters))])
        seen.extend((q.using, q.breadth, q.limit or limit, q.filters or filters,
                     q.vector.tobytes() if q.vector is not None else repr(q.terms)) for q in queries)
        return real_search_many(queries, filters, limit)

    photo = load_image_file(FASHION / rows.iloc[0]["image"])
    category = rows.iloc[0]["category"]
    assert searcher.search(SearchQuery(image=photo, k=5)).predicted_category == category
    monkeypatch.setattr(store, "search_many", recording)
    in_category = SearchFilters(categories=(category,))
    for query in (SearchQuery(image=photo, k=5), SearchQuery(image=photo, k=5, filters=in_category),
                  SearchQuery(image=photo, text="in black", k=5, filters=in_category)):
        seen.clear()
        calls.clear()
        response = searcher.search(query)
        assert response.results
        assert len(seen) == len(set(seen)), [(using, breadth) for using, breadth, *_ in seen]
    # The last query (its filter names one category: the photo's vote needs no search) is one batch.
    assert len(calls) == 1
    photos = [(f, breadth) for using, f, breadth in calls[0] if using == IMAGE_VECTOR]
    assert len(photos) == 2 and photos[0] == photos[1] and photos[0][0].categories == (category,)
