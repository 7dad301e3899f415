"""The live index: which collection the shop's collection name (an alias) stands for, and which
model made it, so a re-index can build a new collection beside the live one and switch at once.

On a Qdrant server the alias is Qdrant's own (one atomic ``update_collection_aliases`` request
swaps it); the model that made a collection is in its metadata. For the embedded store the same
contract is kept in ``<store.path>/aliases.json``, replaced atomically (written beside it, then
renamed): every reader sees the old entry or the new one, never a mix. A store without the file,
or an alias not in it, is the collection of that name, as before re-indexing existed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import StoreError
from engine.settings import ModelSettings, Settings, StoreSettings

ALIASES_FILE = "aliases.json"


@dataclass(frozen=True)
class IndexEntry:
    """What an alias stands for: a collection, the model settings that made it, and the one before."""

    collection: str
    model: dict  # ModelSettings' name and weights
    products: int = 0
    previous: str | None = None
    switched_at: float = 0.0

    def model_settings(self, base: ModelSettings) -> ModelSettings:
        """``base`` (device, precision, threads...) with this index's model name and heads."""
        weights = self.model.get("weights")
        return base.model_copy(update={"name": self.model.get("name", base.name),
                                       "weights": Path(weights) if weights else None})


def model_of(settings: ModelSettings) -> dict:
    """The model fields an index entry records: what decides which vectors a model makes."""
    return {"name": settings.name, "weights": str(settings.weights.resolve()) if settings.weights else None}


class EdgeAliases:
    """The aliases of the embedded store at ``root`` (``aliases.json``)."""

    def __init__(self, root: Path):
        self.path = Path(root) / ALIASES_FILE

    def entries(self) -> dict[str, IndexEntry]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {alias: IndexEntry(**entry) for alias, entry in raw.items()}
        except (OSError, ValueError, TypeError) as e:
            raise StoreError(f"{self.path} cannot be read ({e}); restore it from a backup, or remove it to use "
                             "the collections by their own names") from e

    def entry(self, alias: str) -> IndexEntry | None:
        return self.entries().get(alias)

    def target(self, alias: str) -> str:
        """The collection ``alias`` stands for (itself when it is no alias)."""
        found = self.entry(alias)
        return found.collection if found else alias

    def switch(self, alias: str, entry: IndexEntry) -> None:
        """Point ``alias`` at ``entry`` in one atomic replace of the file."""
        entries = {name: asdict(value) for name, value in self.entries().items()}
        entries[alias] = asdict(entry)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(entries, indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def collections(self) -> list[str]:
        """Every collection folder under the store path."""
        root = self.path.parent
        return sorted(p.name for p in root.iterdir() if (p / "snapshop.json").is_file()) if root.is_dir() else []

    def drop(self, collection: str) -> None:
        """Delete a collection no alias points at (an old index kept after a switch)."""
        entries = self.entries()
        live = {entry.collection: alias for alias, entry in entries.items()}
        if collection in live:
            raise StoreError(f"'{collection}' is the live index of '{live[collection]}'; switch away from it first")
        if collection not in self.collections():
            raise StoreError(f"no collection '{collection}' under {self.path.parent}")
        if not entries:
            raise StoreError(f"nothing was ever switched under {self.path.parent}, so '{collection}' may be live; "
                             "remove its folder by hand if it is not")
        _remove_tree(self.path.parent / collection)


def _remove_tree(folder: Path) -> None:
    """Rename first, then delete: a crash mid-way leaves a '.dropping' folder, never half a store."""
    doomed = folder.with_name(folder.name + f".dropping-{int(time.time())}")
    folder.rename(doomed)
    shutil.rmtree(doomed)


def live_settings(settings: Settings) -> Settings:
    """``settings`` with the model that made the live index of its collection, unless the model was
    set explicitly (then opening a store of another model is refused as always)."""
    if settings.store.backend != "edge":
        return settings
    entry = EdgeAliases(settings.store.path).entry(settings.store.collection)
    if entry is None or {"name", "weights"} & settings.model.model_fields_set:
        return settings
    return settings.model_copy(update={"model": entry.model_settings(settings.model)})


def physical_collection(settings: StoreSettings) -> str:
    """The collection an embedded store's collection name stands for today."""
    return EdgeAliases(settings.path).target(settings.collection)
