"""Sort orders of a result list, and the relevance floor a sorted list keeps to.

Sorting by price re-orders the *relevant* products, not the whole catalog: a shopper who typed
"black watch" and sorted by price wants the cheapest black watches, not the cheapest product of
the shop. So a sorted list holds the ranked products whose fused score is at or above the floor
(``SearchSettings.relevance_floor``, overridable per request), re-ordered by the sort's key;
products without the key (no price, no date) come last, and ties keep their relevance order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date, datetime
from enum import Enum

from engine.errors import InvalidQuery

# Catalog fields read as a product's age and its popularity, first one present wins.
NEWEST_FIELDS = ("published_at", "created_at", "date", "year")
POPULARITY_FIELDS = ("popularity", "sales", "rating")


class Sort(str, Enum):
    """How a result list is ordered."""

    relevance = "relevance"
    price_asc = "price_asc"
    price_desc = "price_desc"
    newest = "newest"
    popularity = "popularity"

    @classmethod
    def parse(cls, value: str | Sort | None) -> Sort:
        if value is None or isinstance(value, Sort):
            return value or cls.relevance
        try:
            return cls(value)
        except ValueError:
            raise InvalidQuery(f"unknown sort '{value}'; known: {', '.join(s.value for s in cls)}") from None


def field_of(payload: dict, name: str):
    """A catalog value: a top-level payload field, or a free column kept under ``fields``."""
    if name in payload:
        return payload[name]
    return (payload.get("fields") or {}).get(name)


def price_of(payload: dict) -> float | None:
    return _number(payload.get("price"))


def newest_of(payload: dict) -> float | None:
    """A product's date as a number (later is larger): an ISO date, a timestamp or a year."""
    for name in NEWEST_FIELDS:
        value = field_of(payload, name)
        if value is None:
            continue
        number = _number(value)
        if number is not None:
            return number
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            try:
                moment = datetime.combine(date.fromisoformat(str(value).strip()[:10]), datetime.min.time())
            except ValueError:
                continue
        return moment.timestamp() / (365.25 * 86400) + 1970  # in years, comparable with a bare year
    return None


def popularity_of(payload: dict) -> float | None:
    """The shop's popularity figure in [0, 1): sales or a popularity count, or a 0..5 rating."""
    for name in POPULARITY_FIELDS:
        number = _number(field_of(payload, name))
        if number is not None and number >= 0:
            return number / (number + 10.0) if name != "rating" else min(number / 5.0, 1.0)
    return None


# Each sort's key (larger first when descending) and direction.
_KEYS: dict[Sort, tuple[Callable[[dict], float | None], bool]] = {
    Sort.price_asc: (price_of, False),
    Sort.price_desc: (price_of, True),
    Sort.newest: (newest_of, True),
    Sort.popularity: (popularity_of, True),
}

# The payload fields a sort reads, so ranking fetches them with the rest.
SORT_FIELDS = ["price", *NEWEST_FIELDS, *POPULARITY_FIELDS,
               *(f"fields.{name}" for name in (*NEWEST_FIELDS, *POPULARITY_FIELDS))]


def sorted_order(payloads: Sequence[dict], sort: Sort) -> list[int]:
    """Positions of ``payloads`` (given in relevance order) in ``sort`` order; stable, so equal
    keys keep their relevance order, and products without the key come last."""
    if sort is Sort.relevance:
        return list(range(len(payloads)))
    key_of, descending = _KEYS[sort]
    keyed, missing = [], []
    for position, payload in enumerate(payloads):
        value = key_of(payload)
        (missing if value is None else keyed).append((value, position))
    keyed.sort(key=lambda item: (-item[0] if descending else item[0], item[1]))
    return [position for _, position in keyed] + [position for _, position in missing]


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
