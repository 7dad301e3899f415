"""Product attributes a shop filters and facets by: brand, colour, size, season, rating, year...

An attribute is a free catalog column (kept in the payload under ``fields``) with a Qdrant
payload index: a *keyword* attribute is filtered any-of and counted value by value (facets), a
*number* attribute is filtered by range. Which columns are attributes is declared
(``IngestSettings.attributes``) or detected from the catalog's values at ingest; the store's own
payload indexes are the durable record of them, so a restarted server knows them without the
catalog.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from engine.errors import InvalidQuery

Kind = Literal["keyword", "number"]
KINDS: tuple[Kind, ...] = ("keyword", "number")
PAYLOAD_PREFIX = "fields."
# A text column is a facet when its values repeat: at most this many distinct values, each seen on
# average at least twice, and short. In the fashion catalog that keeps gender (5 values), colour
# (46), season (4), usage (8), master/sub category; titles, links and descriptions, nearly all
# distinct, stay out.
MAX_KEYWORD_VALUES = 200
MAX_KEYWORD_LENGTH = 60
# Columns the engine reads for its own meaning and indexes itself, not detected as attributes.
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ -]{0,63}")  # a dot would read as nesting in a payload key
MIN_COVERAGE = 0.1
MAX_DETECTED = 32
NOT_ATTRIBUTES = frozenset({"image_files", "images", "image", "title", "id"})


def payload_key(name: str) -> str:
    """Where an attribute's values sit in the payload (Qdrant's dotted key)."""
    return PAYLOAD_PREFIX + name


def detect_attributes(records: Iterable[Mapping[str, Any]], declared: Mapping[str, Kind] | None = None,
                      max_values: int = MAX_KEYWORD_VALUES) -> dict[str, Kind]:
    """Attributes of a catalog from its free columns' values (``records``: each product's
    ``fields``): numbers become ranges, short repeating texts become facets; ``declared`` ones
    are kept as declared and win over detection. A column is detected only with a plain name,
    on at least ``MIN_COVERAGE`` of the products (and two of them), and at most
    ``MAX_DETECTED`` columns are, the most widely filled first: every attribute is a payload
    index the store keeps up to date on every write."""
    values: dict[str, list] = {}
    total = 0
    for fields in records:
        total += 1
        for name, value in fields.items():
            if value is not None and name not in NOT_ATTRIBUTES and _NAME.fullmatch(name):
                values.setdefault(name, []).append(value)
    found: dict[str, Kind] = {}
    for name, seen in sorted(values.items(), key=lambda item: -len(item[1])):
        if len(found) == MAX_DETECTED or len(seen) < max(2, MIN_COVERAGE * total):
            break
        kind = _kind_of(seen, max_values)
        if kind is not None:
            found[name] = kind
    found.update(declared or {})
    return found


def _kind_of(values: list, max_values: int) -> Kind | None:
    if all(_is_number(v) or _number_text(v) for v in values):
        return "number"
    if not all(isinstance(v, str) for v in values):
        return None  # lists, objects, mixed: not one attribute
    distinct = Counter(values)
    if len(distinct) > max_values or len(distinct) * 2 > len(values):
        return None
    if max(len(v) for v in distinct) > MAX_KEYWORD_LENGTH:
        return None
    return "keyword"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_text(value) -> bool:
    """A CSV cell that is a plain number ("2012", "4.5"); not a code such as "007" or "1e5"."""
    return isinstance(value, str) and _NUMBER.fullmatch(value.strip()) is not None


def typed_fields(fields: dict[str, Any], kinds: Mapping[str, Kind]) -> dict[str, Any]:
    """``fields`` with the values of number attributes as numbers (a CSV reads them as text), so
    that Qdrant's range filters and indexes see them; other values as they are."""
    out = dict(fields)
    for name, kind in kinds.items():
        value = out.get(name)
        if kind == "number" and _number_text(value):
            number = float(value)
            out[name] = int(number) if number.is_integer() and "." not in value else number
    return out


def attribute_filters(given: Mapping[str, Any] | None, known: Mapping[str, Kind]) -> tuple[tuple, tuple]:
    """(any-of keyword filters, number ranges) from a request's ``{"brand": ["A", "B"], "rating":
    {"min": 4}}``; raises InvalidQuery naming the attribute for anything else."""
    keywords, ranges = [], []
    for name, wanted in (given or {}).items():
        kind = known.get(name)
        if kind is None:
            names = ", ".join(sorted(known)) or "none (declare them, or ingest a catalog with such columns)"
            raise InvalidQuery(f"unknown attribute '{name}'; filterable attributes: {names}")
        if kind == "keyword":
            wanted = [wanted] if isinstance(wanted, (str, int, float)) and not isinstance(wanted, bool) else wanted
            if not isinstance(wanted, list) or not wanted or not all(isinstance(v, (str, int, float)) for v in wanted):
                raise InvalidQuery(f"attribute '{name}' wants a value or a list of values, got {wanted!r}"[:200])
            keywords.append((name, tuple(str(v) for v in wanted)))
        else:
            ranges.append((name, *_range(name, wanted)))
    return tuple(keywords), tuple(ranges)


def _range(name: str, wanted) -> tuple[float | None, float | None]:
    if not isinstance(wanted, Mapping) or not wanted or set(wanted) - {"min", "max"}:
        raise InvalidQuery(f"attribute '{name}' is a number: give {{\"min\": ..., \"max\": ...}}, got {wanted!r}"[:200])
    low, high = wanted.get("min"), wanted.get("max")
    for bound in (low, high):
        if bound is not None and not _is_number(bound):
            raise InvalidQuery(f"attribute '{name}': min and max must be numbers, got {bound!r}"[:200])
    if low is not None and high is not None and low > high:
        raise InvalidQuery(f"attribute '{name}': min {low} is above max {high}")
    return low, high


def facet_counts(payloads: Iterable[Mapping[str, Any]], names: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per keyword attribute, how many of ``payloads`` hold each value (a list counts each value once)."""
    names = list(names)
    counts: dict[str, Counter] = {name: Counter() for name in names}
    for payload in payloads:
        fields = payload.get("fields") or {}
        for name in names:
            value = fields.get(name)
            for item in set(value) if isinstance(value, list) else ([value] if value is not None else []):
                counts[name][str(item)] += 1
    return {name: dict(counter) for name, counter in counts.items()}
