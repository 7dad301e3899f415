"""`snapshop eval` on a small catalog: every query set, every signal, a JSON report and a plot."""

import json

from eval.harness import format_table, run_eval, write_outputs
from eval.query_sets import FOR_WHOM, composed_queries, describing_queries, shopper_like
from ingest.catalog import read_catalog
from tests.conftest import GROCERY, pick_products, require, write_catalog


def test_eval_reports_each_query_set_per_signal(tmp_path, fashion_frame, encoder):
    rows = pick_products(fashion_frame, 6, ["Shirts", "Tshirts", "Watches", "Sports Shoes", "Handbags", "Jeans"])
    path = write_catalog(rows, tmp_path / "shop")
    report = run_eval(encoder, path, limit_queries=12, progress=False)
    sets = report["query_sets"]
    assert set(sets) == {"title_to_photo", "describing", "category", "photo_plus_text", "photo_for_whom",
                         "shopper_like_photos"}
    assert set(sets["photo_plus_text"]) == set(sets["photo_for_whom"]) == {"photo only", "text only", "photo+text"}
    # Each shopper-like photo's category, predicted from the catalog's photos: right for most.
    assert report["category_accuracy"]["shopper_like_photos"] >= 0.75
    assert set(sets["describing"]) == {"image", "text", "bm25", "fused"}
    assert set(sets["shopper_like_photos"]) == {"image", "look", "caption", "category", "fused"}
    for signals in sets.values():
        for metrics in signals.values():
            assert {"recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"} <= set(metrics)
            assert 0.0 <= metrics["recall@1"] <= metrics["recall@10"] <= 1.0
    # A shopper-like photo of a product in a 36-product shop: the product is found near the top.
    assert sets["shopper_like_photos"]["fused"]["recall@5"] >= 0.75
    paths = write_outputs(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["products"] == 36
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "describing" in format_table(report) and "predicted category correct" in format_table(report)


def test_describing_queries_grade_relevance_by_attributes(small_catalog):
    rows = read_catalog(small_catalog).rows
    query = describing_queries(rows, 1)[0]
    source = next(r for r in rows if query.text.endswith(r.category.lower()) and all(
        str(r.fields[f]).lower() in query.text for f in ("colour", "gender", "usage")))
    assert query.gains[source.product_id] == 2.0
    same_type = [r for r in rows if r.category == source.category]
    assert all(query.gains[r.product_id] in (1.0, 2.0) for r in same_type)
    assert all(r.product_id not in query.gains for r in rows if r.category != source.category)


def test_photo_for_whom_queries_ask_for_another_gender_and_grade_by_the_photos_colour(small_catalog):
    rows = read_catalog(small_catalog).rows
    queries = composed_queries(rows, small_catalog.parent, 20, change=FOR_WHOM)
    assert queries and all(q.text in FOR_WHOM.asks for q in queries)
    by_id = {r.product_id: r for r in rows}
    for query in queries:
        wanted = FOR_WHOM.asks[query.text]
        relevant = [by_id[pid] for pid in query.gains]
        assert len(relevant) >= 2 and len({r.category for r in relevant}) == 1
        assert all(r.fields["gender"] in wanted for r in relevant)
        # The photo's own colour in the asked gender is the best grade; another colour counts less.
        assert set(query.gains.values()) <= {1.0, 2.0}


def test_real_shopper_photos_are_used_when_given(tmp_path, encoder):
    import pandas as pd

    require(GROCERY)
    queries = pd.read_csv(GROCERY / "queries.csv").head(10)
    queries["query_image"] = [str(GROCERY / q) for q in queries.query_image]
    csv = tmp_path / "queries.csv"
    queries.to_csv(csv, index=False)
    report = run_eval(encoder, GROCERY / "catalog.csv", queries_csv=csv, limit_queries=10, progress=False)
    assert report["query_sets"]["shopper_photos"]["fused"]["queries"] == 10


def test_shopper_like_photos_differ_from_the_catalog_shot(small_catalog):
    import random

    from PIL import Image

    row = read_catalog(small_catalog).rows[0]
    original = Image.open(small_catalog.parent / row.images[0]).convert("RGB")
    shot = shopper_like(original, random.Random(0))
    assert shot.size != original.size or list(shot.getdata())[:50] != list(original.getdata())[:50]
