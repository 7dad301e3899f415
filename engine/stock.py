"""Stock: whether a product can be bought now, from the catalog's ``availability`` or ``stock``.

A product is out of stock when its ``availability`` says so (Google Merchant Center's values,
with or without the underscore) or its ``stock`` count is 0 or less; a product that says
neither is in stock, as a shop that tracks no stock sells everything it lists. What search does
with out-of-stock products is a setting (``SearchSettings.out_of_stock``): hide them (default),
demote them after every product in stock, or show them as ranked; a request may override it.
"""

from __future__ import annotations

from enum import Enum

from engine.errors import InvalidQuery

AVAILABILITY = "availability"
STOCK = "stock"
OUT_OF_STOCK_VALUES = ("out_of_stock", "out of stock", "discontinued", "sold_out", "sold out")


class OutOfStock(str, Enum):
    """What search does with products that are out of stock."""

    hide = "hide"
    demote = "demote"
    show = "show"

    @classmethod
    def parse(cls, value: str | OutOfStock) -> OutOfStock:
        if isinstance(value, OutOfStock):
            return value
        try:
            return cls(value)
        except ValueError:
            raise InvalidQuery(f"unknown out_of_stock '{value}'; known: hide, demote, show") from None


def in_stock(payload: dict) -> bool:
    """Whether the product of ``payload`` can be bought now."""
    fields = payload.get("fields") or {}
    availability = fields.get(AVAILABILITY)
    if isinstance(availability, str) and availability.strip().lower() in OUT_OF_STOCK_VALUES:
        return False
    stock = fields.get(STOCK)
    return not (isinstance(stock, (int, float)) and not isinstance(stock, bool) and stock <= 0)
