"""The product service: the one door to stored products.

Only this module knows what is stored beside a product's vectors (``ProductPayload``) and
ingest's bookkeeping in it (``content_hash``, ``meta_hash``): the API, the CLI and ingest read,
change, delete and write products through ``Products``, never through the store's payload.

To add a product field, add it to ``ProductPayload`` (and to ``PATCHABLE`` if a merchandiser may
change it without re-embedding); every reader then gets it typed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ProductNotFound
from engine.records import check_category, check_price, check_stock, check_value
from engine.store.base import ProductPoint, VectorStore

# A payload changed by hand (PATCH): the catalog stays the source of truth, and the next ingest
# of it, seeing this mark instead of its own hash, rewrites the payload.
PATCHED = "patched"
# Payload fields a merchandiser may change without re-embedding; any other change is kept under
# ``fields`` (free catalog columns, such as stock).
PATCHABLE = ("price", "category")


class ProductPayload(BaseModel):
    """What is stored beside a product's vectors."""

    # Fields this version does not know (written by a newer one) survive a read-modify-write.
    model_config = ConfigDict(extra="allow")

    product_id: str
    title: str = ""
    price: float | None = None
    category: str | None = None
    images: list[str] = Field(default_factory=list)  # as the catalog gave them
    # Where the API finds the photos to show: absolute local paths, or the URLs as given; ''
    # marks a photo the ingest refused to read.
    image_files: list[str] = Field(default_factory=list)
    fields: dict[str, Any] = Field(default_factory=dict)  # every other catalog column
    # Ingest's bookkeeping (ingest.pipeline): a changed content hash re-embeds the product, a
    # changed meta hash only rewrites this payload.
    content_hash: str | None = None
    meta_hash: str | None = None
    model: str | None = None  # the model tag that made the vectors
    ingested_at: float | None = None

    @property
    def photo_sources(self) -> list[str]:
        """Where each photo is shown from: the located files, or the catalog's references."""
        return self.image_files or self.images


class Bookkeeping(BaseModel):
    """What ingest needs to know of a stored product to plan a re-ingest."""

    content_hash: str | None = None
    meta_hash: str | None = None


BOOKKEEPING_FIELDS = list(Bookkeeping.model_fields)
# How a patched value is checked (engine.records, the one validation of product records); any
# other field is checked as a free catalog value.
PATCH_CHECKS = {"price": check_price, "category": check_category, "stock": check_stock}


class Products:
    """Get, patch, delete and write the products of one store."""

    def __init__(self, store: VectorStore):
        self.store = store

    # --- reads ------------------------------------------------------------------------------
    def get(self, product_id: str) -> ProductPayload:
        """The stored product, or ``ProductNotFound``."""
        found = self.get_many([product_id])
        if product_id not in found:
            raise ProductNotFound(f"no product with id '{product_id}'")
        return found[product_id]

    def get_many(self, product_ids: list[str]) -> dict[str, ProductPayload]:
        """The stored products among ``product_ids``, by id; missing ones are absent."""
        return {pid: payload_of(stored.payload, pid) for pid, stored in self.store.get(product_ids).items()}

    def bookkeeping(self) -> dict[str, Bookkeeping]:
        """Every stored product's ingest bookkeeping, by id."""
        return {pid: Bookkeeping.model_validate(values) for pid, values in self.store.scroll_ids(BOOKKEEPING_FIELDS)}

    # --- writes -----------------------------------------------------------------------------
    def patch(self, product_id: str, changes: dict[str, Any]) -> ProductPayload:
        """Change payload fields of one product without re-embedding it; returns the product as
        stored after. ``PATCHABLE`` fields change in place, any other under ``fields``. The caller
        holds the store's write lock, so nothing writes between the read and the write."""
        changes = {name: PATCH_CHECKS.get(name, _free_value)(value, name) for name, value in changes.items()}
        payload = self.get(product_id)
        values: dict[str, Any] = {name: changes[name] for name in PATCHABLE if name in changes}
        extra = {name: value for name, value in changes.items() if name not in PATCHABLE}
        if extra:
            values["fields"] = {**payload.fields, **extra}
        values["meta_hash"] = PATCHED
        self.store.set_payload(product_id, values)
        return payload.model_copy(update=values)

    def delete(self, product_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Delete the products among ``product_ids`` that are stored: (deleted, not found), in
        the order given, each id once."""
        ids = list(dict.fromkeys(product_ids))
        found = self.store.get(ids)
        self.store.delete([pid for pid in ids if pid in found])
        return [pid for pid in ids if pid in found], [pid for pid in ids if pid not in found]

    def delete_one(self, product_id: str) -> None:
        """Delete one product, or ``ProductNotFound``."""
        deleted, _ = self.delete([product_id])
        if not deleted:
            raise ProductNotFound(f"no product with id '{product_id}'")

    def prune(self, product_ids: list[str]) -> None:
        """Delete products known to be stored (ingest's ``--prune``): no read first."""
        self.store.delete(product_ids)

    def upsert(self, points: list[ProductPoint]) -> None:
        """Write products with their vectors (each point's payload from ``new_payload``)."""
        self.store.upsert(points)

    def set_payload(self, product_id: str, payload: ProductPayload) -> None:
        """Rewrite a stored product's payload (its vectors unchanged)."""
        self.store.set_payload(product_id, stored_form(payload))


def _free_value(value: Any, name: str) -> Any:
    return check_value(value, name)


def new_payload(product_id: str, title: str, price: float | None, category: str | None, images: list[str],
                image_files: list[str], fields: dict, content_hash: str, meta_hash: str, model: str) -> ProductPayload:
    """A product's payload as ingest writes it."""
    return ProductPayload(product_id=product_id, title=title, price=price, category=category, images=images,
                          image_files=image_files, fields=fields, content_hash=content_hash, meta_hash=meta_hash,
                          model=model, ingested_at=time.time())


def payload_of(values: dict, product_id: str | None = None) -> ProductPayload:
    """A stored payload, typed (its product id from the store's record when it lacks one)."""
    if product_id is not None and "product_id" not in values:
        values = {**values, "product_id": product_id}
    return ProductPayload.model_validate(values)


def stored_form(payload: ProductPayload) -> dict:
    """The payload as the store keeps it."""
    return payload.model_dump()
