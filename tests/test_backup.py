"""Backup and restore of the embedded store: a restore into a fresh store answers a fixed set of
searches with the same top 10 as the store that was backed up."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from api.app import create_app
from engine.errors import StoreError
from engine.search import Searcher, SearchQuery
from engine.settings import ApiSettings, Settings, StoreSettings
from engine.store import open_store
from engine.store.backup import backup_store, read_manifest, restore_store
from engine.store.sparse_copy import disk_bytes
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from snapshop.cli import app

TEXTS = ["analog wrist watch", "blue denim jeans", "black leather handbag", "running shoes", "aviator sunglasses",
         "checked casual shirt"]


def top_tens(store, encoder, photos) -> list[list[tuple[str, float]]]:
    searcher = Searcher(encoder, store)
    queries = [SearchQuery(text=text, k=10) for text in TEXTS]
    queries += [SearchQuery(image=Image.open(photo).convert("RGB"), k=10) for photo in photos]
    return [[(r.product_id, r.score) for r in searcher.search(q).results] for q in queries]


@pytest.fixture()
def stored(tmp_path, small_catalog, encoder):
    settings = StoreSettings(path=tmp_path / "live")
    with open_store(settings, encoder.info) as store:
        ingest_catalog(read_catalog(small_catalog), encoder, store, progress=False)
    photos = sorted((small_catalog.parent / "images").iterdir())[::6]
    return settings, photos


def test_a_restored_store_gives_identical_top_tens(tmp_path, stored, encoder):
    settings, photos = stored
    with open_store(settings, encoder.info) as store:
        before = top_tens(store, encoder, photos)
        manifest = backup_store(store, tmp_path / "backup")  # while the store is open and searchable
        assert manifest.products == 36 and manifest.model["model"] == encoder.info.name
    fresh = StoreSettings(path=tmp_path / "restored")
    restore_store(tmp_path / "backup", fresh.path)
    with open_store(fresh, encoder.info) as restored:
        assert restored.count() == 36
        after = top_tens(restored, encoder, photos)
    assert [[pid for pid, _ in ranked] for ranked in after] == [[pid for pid, _ in ranked] for ranked in before]
    # The scores too, up to float summation order (the ranker's background sample comes back in
    # another order from another copy of the shard).
    for ranked_after, ranked_before in zip(after, before, strict=True):
        assert [score for _, score in ranked_after] == pytest.approx([score for _, score in ranked_before], abs=1e-5)
    assert all(len(ranked) == 10 for ranked in before)
    # A backup and a restore take the disk the store takes, not its files' nominal sizes: the Edge
    # shard's 32 MiB files are mostly holes (4 MB on disk for 470 MB of file sizes), and copying
    # the holes as zeros filled a disk with the backups of a fuzzed API.
    live = disk_bytes(settings.path)
    nominal = sum(p.stat().st_size for p in (tmp_path / "backup").rglob("*") if p.is_file())
    assert disk_bytes(tmp_path / "backup") < 2 * live + (1 << 20) < nominal / 10
    assert disk_bytes(fresh.path) < 2 * live + (1 << 20)


def test_backup_and_restore_refuse_to_overwrite(tmp_path, stored, encoder):
    settings, _ = stored
    (tmp_path / "taken").mkdir()
    with open_store(settings, encoder.info) as store:
        with pytest.raises(StoreError, match="already exists; back up into a new folder"):
            backup_store(store, tmp_path / "taken")
        backup_store(store, tmp_path / "backup")
    with pytest.raises(StoreError, match="already exists; restore into another store path"):
        restore_store(tmp_path / "backup", settings.path)
    with pytest.raises(StoreError, match="is not a snapshop backup"):
        read_manifest(tmp_path / "taken")


def test_the_backup_and_restore_commands(tmp_path, stored, monkeypatch):
    settings, _ = stored
    runner = CliRunner()
    made = runner.invoke(app, ["backup", str(tmp_path / "nightly"), "--store", str(settings.path)])
    assert made.exit_code == 0, made.output
    assert "36 products" in made.output
    restored = runner.invoke(app, ["restore", str(tmp_path / "nightly"), "--store", str(tmp_path / "fresh")])
    assert restored.exit_code == 0, restored.output
    assert "36 products" in restored.output
    again = runner.invoke(app, ["restore", str(tmp_path / "nightly"), "--store", str(tmp_path / "fresh")])
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_serving_api_backs_up_without_stopping(tmp_path, stored, encoder):
    settings, photos = stored
    key = "backup-test-key-77e1"
    app_settings = Settings(store=settings.model_copy(update={"backup_dir": tmp_path / "backups"}),
                            api=ApiSettings(api_key=key))
    with TestClient(create_app(app_settings, encoder=encoder)) as client:
        assert client.post("/admin/backup").status_code == 401
        made = client.post("/admin/backup", headers={"X-API-Key": key})
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["products"] == 36 and body["collection"] == "products"
        assert client.post("/search", data={"text": "running shoes"}).status_code == 200  # still serving
        before = top_tens(client.app.state.runtime.store, encoder, photos)
    restore_store(Path(body["path"]), tmp_path / "restored")
    with open_store(StoreSettings(path=tmp_path / "restored"), encoder.info) as restored:
        assert [[pid for pid, _ in ranked] for ranked in top_tens(restored, encoder, photos)] == \
            [[pid for pid, _ in ranked] for ranked in before]


def test_a_sparse_copy_keeps_every_byte_and_every_hole(tmp_path):
    from engine.store.sparse_copy import copy_sparse

    source = tmp_path / "chunk.mmap"
    with open(source, "wb") as f:  # data, a hole, data across a block boundary, a hole at the end
        f.write(b"head" * 1000)
        f.seek(5 << 20)
        f.write(bytes(range(256)) * 700)
        f.truncate(32 << 20)
    copy_sparse(source, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == source.read_bytes()
    assert (tmp_path / "copy").stat().st_blocks <= source.stat().st_blocks
