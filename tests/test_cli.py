"""End to end: the real `snapshop` command on real sample data, rankings checked against expectations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def snapshop(*args, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SNAPSHOP_STORE__PATH": str(cwd / "store"), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "snapshop", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """The shipped demo catalog, ingested once through the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    result = snapshop("ingest", str(REPO / "demo" / "catalog.csv"), "--report", str(folder / "report.json"), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, json.loads((folder / "report.json").read_text())


def test_ingest_reports_what_it_did_and_a_rerun_changes_nothing(demo_store):
    folder, report = demo_store
    assert report["added"] == report["rows"] > 100 and report["skipped"] == 0
    again = snapshop("ingest", str(REPO / "demo" / "catalog.csv"), cwd=folder)
    assert again.returncode == 0 and "0 added" in again.stdout and f"{report['rows']} unchanged" in again.stdout


def test_search_by_text_prints_a_ranked_table(demo_store):
    folder, _ = demo_store
    result = snapshop("search", "--text", "analog wrist watch", "--k", "5", "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["data"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert sum(h["category"] == "Watches" for h in hits) >= 4


def test_search_by_photo_with_a_price_filter(demo_store):
    folder, _ = demo_store
    import csv

    rows = list(csv.DictReader(open(REPO / "demo" / "catalog.csv")))
    target = next(r for r in rows if r["category"] == "Handbags")
    price = float(target["price"])
    result = snapshop("search", "--image", str(REPO / "demo" / target["image"]), "--min-price", str(price - 1),
                      "--max-price", str(price + 500), "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["data"]
    assert hits[0]["product_id"] == target["id"]
    assert all(price - 1 <= h["price"] <= price + 500 for h in hits)


def test_search_sorted_by_price_with_attribute_filters(demo_store):
    folder, _ = demo_store
    result = snapshop("search", "--text", "casual shoes", "--sort", "price_asc", "--k", "20", "--attributes",
                      '{"gender": ["Men"], "year": {"min": 2010}}', "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    prices = [h["price"] for h in body["data"]]
    assert prices and prices == sorted(prices) and body["total"] >= len(prices)
    import csv

    rows = {r["id"]: r for r in csv.DictReader(open(REPO / "demo" / "catalog.csv"))}
    assert all(rows[h["product_id"]]["gender"] == "Men" and int(rows[h["product_id"]]["year"]) >= 2010
               for h in body["data"])
    bad = snapshop("search", "--text", "shoes", "--attributes", '{"brand": ["X"]}', cwd=folder)
    assert bad.returncode == 2 and "unknown attribute 'brand'" in bad.stderr


def test_the_readme_demo_photo_in_brown_keeps_the_handbag(demo_store):
    """The README's own demo: a handbag's photo plus "in brown" finds handbags, the brown one first
    (the photo says what kind of product, the words what to change)."""
    folder, _ = demo_store
    result = snapshop("search", "--image", str(REPO / "demo" / "queries" / "handbag.jpg"), "--text", "in brown",
                      "--k", "3", "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["data"]
    assert sum(h["category"] == "Handbags" for h in hits) >= 2, [h["title"] for h in hits]
    assert "Brown" in hits[0]["title"], [h["title"] for h in hits]


def test_errors_are_one_clear_line_and_a_nonzero_exit(demo_store, tmp_path):
    folder, _ = demo_store
    result = snapshop("search", "--text", "shirt", "--min-price", "50", "--max-price", "10", cwd=folder)
    assert result.returncode == 2 and "min_price 50.0 is above max_price 10.0" in result.stderr
    result = snapshop("search", "--image", str(tmp_path / "nope.jpg"), cwd=folder)
    assert result.returncode == 2 and "file not found" in result.stderr
    result = snapshop("ingest", str(tmp_path / "missing.csv"), cwd=folder)
    assert result.returncode == 2 and "not found" in result.stderr


def test_models_lists_the_registry(tmp_path):
    result = snapshop("models", cwd=tmp_path)
    assert result.returncode == 0 and "snapshop-lit-fashion" in result.stdout and "offline" in result.stdout
