"""Google Merchant Center product data: the TSV feed and the RSS 2.0 XML feed.

Fields (https://support.google.com/merchants/answer/7052112) become catalog columns: ``id``,
``title``, ``image_link`` and every ``additional_image_link`` the photos, ``price`` "12.00 USD"
the price and ``currency`` (``sale_price``, when given, is what the shopper pays: it becomes the
price and ``price`` is kept as ``regular_price``), ``product_type`` "A > B > C" the category (its
last step; the whole path is kept), ``availability`` as Merchant Center writes it
(``in_stock``, ``out_of_stock``...; "in stock" with a space is the older spelling). Every other
field (brand, color, size, gender, item_group_id, google_product_category, link, description,
...) is kept under its own name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import defusedxml.ElementTree as SafeTree
from defusedxml import DefusedXmlException

from engine.errors import CatalogError, CatalogRowError

GOOGLE_NS = "http://base.google.com/ns/1.0"
REQUIRED = {"id", "image_link"}
# Merchant Center's fields a shopper filters by: facets whatever the feed's size (a small feed's
# colours are too few to repeat, so detection alone would miss them).
MERCHANT_ATTRIBUTES = {name: "keyword" for name in (
    "brand", "color", "size", "gender", "age_group", "material", "pattern", "condition", "availability",
    "item_group_id", "google_product_category", "product_type", "currency")}
# "1,299.00 INR" has a thousands separator; "12,50 EUR" (a decimal comma) is refused, not read as 1250.
_MONEY = re.compile(r"\s*(?P<amount>(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?)\s*(?P<currency>[A-Za-z]{3})?\s*")


def is_merchant_feed(columns: list[str]) -> bool:
    """A table with Merchant Center's field names (``id`` and ``image_link`` at least)."""
    return REQUIRED <= {str(c).strip().lower() for c in columns}


def merchant_records(records: list[tuple[int, dict]]) -> tuple[list[tuple[int, dict]], list[CatalogRowError]]:
    """Merchant Center rows (field -> text) as catalog records, each keeping its row number; a row
    whose price cannot be read is reported, not guessed."""
    out, errors = [], []
    for row, record in records:
        try:
            out.append((row, _catalog_record({str(k).strip().lower(): v for k, v in record.items()}, row)))
        except CatalogRowError as e:
            errors.append(e)
    return out, errors


def _catalog_record(item: dict, row: int) -> dict:
    product_id = str(item.get("id") or "").strip() or None
    record = {key: value for key, value in item.items() if value not in (None, "") and key not in _MAPPED}
    record["id"] = product_id
    record["title"] = item.get("title")
    record["images"] = [item.get("image_link"), *_many(item.get("additional_image_link"))]
    price, currency = _money(item.get("price"), row, product_id, "price")
    sale, sale_currency = _money(item.get("sale_price"), row, product_id, "sale_price")
    record["price"] = sale if sale is not None else price
    if sale is not None and price is not None:
        record["regular_price"] = price
    if currency or sale_currency:
        record["currency"] = (sale_currency or currency).upper()
    path = [step.strip() for step in str(item.get("product_type") or "").split(">") if step.strip()]
    if path:
        record["category"] = path[-1]
        record["product_type"] = " > ".join(path)
    if item.get("availability"):
        record["availability"] = str(item["availability"]).strip().lower().replace(" ", "_")
    return record


_MAPPED = {"id", "title", "image_link", "additional_image_link", "price", "sale_price", "product_type",
           "availability"}


def _many(value) -> list[str]:
    """additional_image_link: repeated in XML (a list here), comma-separated in a TSV."""
    if value is None:
        return []
    values = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in values if str(v).strip()]


def _money(value, row: int, product_id: str | None, field: str) -> tuple[float | None, str | None]:
    """ "12.00 USD" -> (12.0, "USD"); empty -> (None, None)."""
    text = str(value or "").strip()
    if not text:
        return None, None
    match = _MONEY.fullmatch(text)
    if match is None:
        raise CatalogRowError(row, f"{field} '{text[:40]}' is not an amount with its currency, e.g. '12.00 USD'",
                              product_id, field)
    return float(match["amount"].replace(",", "")), match["currency"]


def read_merchant_xml(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """An RSS 2.0 Merchant Center feed's items as (field names, rows); row N is the Nth ``<item>``.
    Read with defusedxml: entity expansion and external entities are refused."""
    try:
        root = SafeTree.fromstring(text)
    except (SafeTree.ParseError, DefusedXmlException) as e:
        raise CatalogError(f"catalog '{path}' is not a readable RSS feed: {str(e)[:200]}") from e
    items = root.findall("./channel/item")
    if root.tag != "rss" or not items:
        raise CatalogError(f"catalog '{path}' is not a Merchant Center RSS 2.0 feed (no <rss><channel><item>)")
    records = [(n, dict(_fields(item))) for n, item in enumerate(items, start=1)]
    columns = list(dict.fromkeys(name for _, record in records for name in record))
    return columns, records


def _fields(item) -> Iterator[tuple[str, object]]:
    repeated: dict[str, list[str]] = {}
    for child in item:
        name = child.tag.removeprefix("{" + GOOGLE_NS + "}")
        if name.startswith("{") or len(child):  # another namespace, or nested (shipping, tax): not kept
            continue
        value = (child.text or "").strip()
        if name == "additional_image_link":
            repeated.setdefault(name, []).append(value)
        else:
            yield name, value
    yield from repeated.items()
