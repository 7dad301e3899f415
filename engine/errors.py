"""Typed errors of the engine.

Only the API turns them into HTTP answers and only the CLI into exit codes; the engine raises
them with a message a shop's engineer can act on.
"""

from __future__ import annotations


class SnapshopError(Exception):
    """Base of every error snapshop raises on purpose."""


class UnknownModel(SnapshopError):
    """A model name that is neither in the registry nor a valid open_clip / hf-hub name."""


class ModelWeightsMissing(SnapshopError):
    """Weights that cannot be found locally and may not (or cannot) be downloaded."""


class InvalidImage(SnapshopError):
    """An image that cannot be read, decoded or fetched; the message says why."""


class DecodeBusy(SnapshopError):
    """Photos being decoded hold the whole decode budget for longer than a request may wait."""


class InvalidQuery(SnapshopError):
    """A search request that cannot be answered as asked (no text and no photo, bad range...)."""


class CatalogError(SnapshopError):
    """A catalog file that cannot be read at all (missing, unknown format, no id column)."""


class CatalogRowError(SnapshopError):
    """One catalog row that cannot be ingested; carries its row number and field."""

    def __init__(self, row: int, reason: str, product_id: str | None = None, field: str | None = None):
        self.row = row
        self.reason = reason
        self.product_id = product_id
        self.field = field
        where = f"row {row}" + (f" (id {product_id})" if product_id else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {reason}")


class PruneRefused(SnapshopError):
    """A prune that would delete more of the store than its settings allow (an empty or cut-short catalog?)."""


class StoreError(SnapshopError):
    """A vector store that cannot be opened or written."""


class StoreUnavailable(StoreError):
    """A Qdrant server that does not answer, or an embedded store held by another process."""


class StoreModelMismatch(StoreError):
    """A store whose vectors were made by another model than the one loaded."""


class CalibrationError(SnapshopError):
    """A shopper-photo centre (engine.shopper_centre) that cannot be made, read or used with the loaded model."""


class ProductNotFound(SnapshopError):
    """A product id that is not in the store."""


class AnalyticsOff(SnapshopError):
    """Search analytics asked for while they are switched off (``SNAPSHOP_ANALYTICS__ENABLED``)."""


class UnknownQuery(SnapshopError):
    """An event or report that names a search the query log does not hold (never, or no longer)."""


class InvalidProduct(SnapshopError, ValueError):
    """A product value that may not be stored (engine.records says which limits); names its field.

    A ``ValueError`` too, so that pydantic validators that call the checks report it as a 422.
    """

    def __init__(self, field: str | None, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"field '{field}': {reason}" if field else reason)


class RuleNotFound(SnapshopError):
    """A merchandising rule id that is not among the stored rules."""
