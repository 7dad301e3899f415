"""Variants: the colours and sizes of one product, each a product of its own in the catalog.

Products that share an ``item_group_id`` (Google Merchant Center, and the Shopify Handle) or a
``parent_id`` are one family. A search shows one result per family by default, the variant that
ranked best (a search for "red dress" shows the red one), with the family's variants listed as
swatches; a request may ask for variants ungrouped.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.attributes import payload_key

FAMILY_FIELDS = ("item_group_id", "parent_id")
FAMILY_PAYLOAD_FIELDS = [payload_key(name) for name in FAMILY_FIELDS]
# What tells a family's variants apart on a swatch, first ones present.
VARIANT_LABEL_FIELDS = ("colour", "color", "size", "pattern", "material")
MAX_VARIANTS = 24  # swatches per result


def family_of(payload: dict) -> tuple[str, str] | None:
    """The family a product belongs to, as (field, value), or None for a product on its own."""
    fields = payload.get("fields") or {}
    for name in FAMILY_FIELDS:
        value = fields.get(name)
        if value not in (None, ""):
            return name, str(value)
    return None


def one_per_family(positions: Sequence[int], payloads: Sequence[dict]) -> list[int]:
    """``positions`` (best first) with each family's best variant only; products on their own stay."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for position, payload in zip(positions, payloads):
        family = family_of(payload)
        if family is not None:
            if family in seen:
                continue
            seen.add(family)
        kept.append(position)
    return kept


def variant_label(payload: dict) -> str:
    """"Blue / M": the values that tell this variant from its family's others."""
    fields = payload.get("fields") or {}
    return " / ".join(str(fields[name]) for name in VARIANT_LABEL_FIELDS if fields.get(name) not in (None, ""))
