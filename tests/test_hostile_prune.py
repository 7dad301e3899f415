"""`--prune` with an empty or cut-short catalog must not empty the store: past a share of the store
it refuses without `--force`, before writing anything, and `--dry-run` says what would go."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from engine.errors import PruneRefused
from engine.settings import IngestSettings, StoreSettings
from engine.store import open_store
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.test_cli import snapshop


@pytest.fixture()
def store(tmp_path, encoder, small_catalog):
    with open_store(StoreSettings(path=tmp_path / "store"), encoder.info) as opened:
        ingest_catalog(read_catalog(small_catalog), encoder, opened, IngestSettings(), progress=False)
        yield opened


def run(path, encoder, store, **kwargs):
    return ingest_catalog(read_catalog(path), encoder, store, IngestSettings(), progress=False, prune=True, **kwargs)


def test_a_cut_short_catalog_is_refused_before_anything_is_written(small_catalog, encoder, store):
    frame = pd.read_csv(small_catalog)
    cut = frame.iloc[:12].copy()
    cut.loc[0, "price"] = 1.0  # a change that must not be written either
    cut.to_csv(small_catalog, index=False)
    with pytest.raises(PruneRefused) as refused:
        run(small_catalog, encoder, store)
    assert str(refused.value).startswith(
        "prune would delete 24 of the 36 stored products (67%), more than 25% of the store "
        "(SNAPSHOP_INGEST__PRUNE_MAX_SHARE)")
    assert store.count() == 36
    assert store.get([str(frame.id[0])])[str(frame.id[0])].payload["price"] == frame.price[0]


def test_a_dry_run_lists_what_would_go_and_writes_nothing(small_catalog, encoder, store):
    frame = pd.read_csv(small_catalog)
    frame.iloc[:0].to_csv(small_catalog, index=False)  # the header only: an export that failed
    summary = run(small_catalog, encoder, store, dry_run=True)
    assert summary.dry_run and summary.deleted == 36 and sorted(summary.pruned) == sorted(map(str, frame.id))
    assert "more than 25% of the store" in summary.warnings[0]
    assert store.count() == 36


def test_force_deletes_them_and_a_small_prune_needs_no_force(small_catalog, encoder, store):
    frame = pd.read_csv(small_catalog)
    frame.iloc[:-3].to_csv(small_catalog, index=False)
    assert run(small_catalog, encoder, store).deleted == 3  # 8% of the store
    frame.iloc[:0].to_csv(small_catalog, index=False)
    assert run(small_catalog, encoder, store, force=True).deleted == 33
    assert store.count() == 0


def test_the_cli_refuses_a_large_prune_with_exit_2_and_dry_run_names_the_ids(small_catalog, tmp_path):
    folder = tmp_path / "cli"
    folder.mkdir()
    assert snapshop("ingest", str(small_catalog), cwd=folder).returncode == 0
    frame = pd.read_csv(small_catalog)
    frame.iloc[:0].to_csv(small_catalog, index=False)
    refused = snapshop("ingest", str(small_catalog), "--prune", cwd=folder)
    assert refused.returncode == 2 and "prune would delete 36 of the 36 stored products" in refused.stderr
    dry = snapshop("ingest", str(small_catalog), "--prune", "--dry-run", "--report", str(tmp_path / "r.json"),
                   cwd=folder)
    assert dry.returncode == 0 and "dry run, nothing written" in dry.stdout
    assert f"  would delete {frame.id[0]}" in dry.stdout and "delete 36 of the 36 stored" in dry.stdout
    assert json.loads((tmp_path / "r.json").read_text())["dry_run"] is True
    zero = snapshop("search", "--image", "/dev/zero", cwd=folder)
    assert zero.returncode == 2 and "/dev/zero: not a regular file" in zero.stderr
