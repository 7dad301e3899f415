"""Backups of the embedded store: a consistent copy in a folder, and its restore into a store path.

A backup folder holds the collection's folder as the store keeps it (the Edge shard and
``snapshop.json``) and ``backup.json`` (what it holds: collection, products, model, time). Both
directions write beside their target and rename at the end, so a backup or restore cut short
leaves no half-copy where a store or a backup is expected. A Qdrant server keeps its own
snapshots (Qdrant's snapshot API); this is for the embedded store.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import StoreError
from engine.store.base import VectorStore
from engine.store.sparse_copy import copy_tree

MANIFEST = "backup.json"


@dataclass
class BackupManifest:
    collection: str
    products: int
    model: dict
    created_at: float


def backup_store(store: VectorStore, dest: Path) -> BackupManifest:
    """Copy the open embedded ``store`` into the new folder ``dest``."""
    from engine.store.edge import EdgeStore

    if not isinstance(store, EdgeStore):
        raise StoreError("backups of a Qdrant server are its own snapshots: POST "
                         "/collections/<collection>/snapshots on the server (see Qdrant's snapshot docs)")
    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest} already exists; back up into a new folder")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    collection = store.dir.name
    products = store.copy_to(partial / collection)
    model = json.loads((partial / collection / "snapshop.json").read_text(encoding="utf-8"))
    manifest = BackupManifest(collection, products, model, time.time())
    (partial / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2), encoding="utf-8")
    partial.rename(dest)
    return manifest


def read_manifest(backup: Path) -> BackupManifest:
    """What a backup folder holds; a clear error when it is not one."""
    path = Path(backup) / MANIFEST
    try:
        return BackupManifest(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as e:
        raise StoreError(f"{backup} is not a snapshop backup ({path} cannot be read: {e})") from e


def restore_store(backup: Path, store_path: Path, collection: str | None = None) -> BackupManifest:
    """Restore ``backup`` as the collection ``collection`` (the backed-up one's name if None) of the
    embedded store at ``store_path``; refused when that collection already exists there."""
    manifest = read_manifest(backup)
    source = Path(backup) / manifest.collection
    if not (source / "snapshop.json").is_file() or not (source / "shard").is_dir():
        raise StoreError(f"{backup} is incomplete: {source} lacks snapshop.json or shard/")
    target = Path(store_path) / (collection or manifest.collection)
    if target.exists():
        raise StoreError(f"{target} already exists; restore into another store path or collection, or move it "
                         "away first (nothing was changed)")
    partial = target.with_name(target.name + ".restoring")
    shutil.rmtree(partial, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_tree(source, partial)
    partial.rename(target)
    return manifest
