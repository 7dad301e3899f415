"""Shopify's product CSV export (Products > Export), read as it is.

Shopify writes one row per variant: the product's first row carries its Title, Body (HTML),
Vendor, Type, Tags and first photo; the following rows with the same ``Handle`` carry only the
variant's columns (``Option1 Value``, ``Variant SKU``, ``Variant Price``, ``Variant Image``...)
or only a further photo (``Image Src``). Each variant becomes one product:

- ``id``: ``Variant SKU``, or ``<Handle>-<n>`` for a variant without a SKU;
- ``title``: the product's Title, with the variant's option values ("Shirt - Blue / M");
- photos: the ``Variant Image``, then the product's photos (``Image Src``, in ``Image Position``
  order);
- ``price``: ``Variant Price``; ``compare_at_price``: ``Variant Compare At Price``;
- ``category``: ``Type`` (else the last step of ``Product Category``);
- ``brand``: ``Vendor``; ``item_group_id``: the Handle (one family per product);
- each option by its name (``Option1 Name`` "Color" -> ``color``: "Blue");
- ``stock``: ``Variant Inventory Qty`` when Shopify tracks the variant's inventory;
- ``tags``, ``status``, ``published``, ``description`` (``Body (HTML)``), ``barcode``, ``grams``.

The export has no currency column (a shop's one currency is set in its admin), so none is stored
unless the caller names it (``shopify_records(..., currency="EUR")``).
"""

from __future__ import annotations

from engine.errors import CatalogRowError

REQUIRED = {"handle", "title", "variant price", "image src"}
_PRODUCT_COLUMNS = {"Title": "title", "Body (HTML)": "description", "Vendor": "brand",
                    "Product Category": "product_category", "Tags": "tags", "Published": "published",
                    "Status": "status"}
SHOPIFY_ATTRIBUTES = {name: "keyword" for name in ("brand", "item_group_id", "status", "product_category")}
SHOPIFY_ATTRIBUTES["stock"] = "number"
_VARIANT_COLUMNS = {"Variant Compare At Price": "compare_at_price", "Variant Barcode": "barcode",
                    "Variant Grams": "grams"}


def is_shopify_export(columns: list[str]) -> bool:
    """A table with Shopify's product export columns."""
    return REQUIRED <= {str(c).strip().lower() for c in columns}


def shopify_records(records: list[tuple[int, dict]], currency: str | None = None,
                    ) -> tuple[list[tuple[int, dict]], list[CatalogRowError]]:
    """Shopify export rows as catalog records, one per variant, each with its own row number."""
    families: dict[str, dict] = {}
    for row, record in records:
        cells = {str(k).strip(): (str(v).strip() if v is not None else "") for k, v in record.items()}
        handle = cells.get("Handle", "")
        if not handle:
            continue  # reported below: a variant needs its product
        family = families.setdefault(handle, {"product": None, "photos": [], "variants": []})
        if cells.get("Title") and family["product"] is None:
            family["product"] = cells
        if cells.get("Image Src"):
            position = _number(cells.get("Image Position")) or len(family["photos"]) + 1
            family["photos"].append((position, cells["Image Src"]))
        if cells.get("Variant Price") or cells.get("Variant SKU") or cells.get("Option1 Value"):
            family["variants"].append((row, cells))
    out, errors = [], []
    for row, record in records:
        if not str(record.get("Handle") or "").strip():
            errors.append(CatalogRowError(row, "no Handle: a Shopify row belongs to a product", field="Handle"))
    for handle, family in families.items():
        if family["product"] is None:
            row = (family["variants"] or [(0, None)])[0][0]
            errors.append(CatalogRowError(row, f"product '{handle}' has no row with its Title", field="Title"))
            continue
        photos = [source for _, source in sorted(family["photos"], key=lambda p: p[0])]
        for n, (row, variant) in enumerate(family["variants"], start=1):
            out.append((row, _variant_record(handle, n, family["product"], variant, photos, currency)))
    out.sort(key=lambda item: item[0])
    return out, errors


def _variant_record(handle: str, n: int, product: dict, variant: dict, photos: list[str],
                    currency: str | None) -> dict:
    record = {name: product[column] for column, name in _PRODUCT_COLUMNS.items() if product.get(column)}
    record.update({name: variant[column] for column, name in _VARIANT_COLUMNS.items() if variant.get(column)})
    options = []
    for i in (1, 2, 3):
        name = product.get(f"Option{i} Name") or variant.get(f"Option{i} Name")
        value = variant.get(f"Option{i} Value")
        if name and value and not (name == "Title" and value == "Default Title"):  # Shopify's "no options"
            record[name.strip().lower()] = value
            options.append(value)
    record["id"] = variant.get("Variant SKU") or f"{handle}-{n}"
    record["title"] = product["Title"] + (f" - {' / '.join(options)}" if options else "")
    own = [variant["Variant Image"]] if variant.get("Variant Image") else []
    record["images"] = list(dict.fromkeys(own + photos))
    record["price"] = variant.get("Variant Price") or None
    record["category"] = product.get("Type") or (product.get("Product Category") or "").split(">")[-1].strip() or None
    record["item_group_id"] = handle
    if variant.get("Variant Inventory Tracker") and variant.get("Variant Inventory Qty"):
        record["stock"] = _number(variant["Variant Inventory Qty"])
    if currency:
        record["currency"] = currency
    return record


def option_names(records: list[tuple[int, dict]]) -> set[str]:
    """The export's option names (Color, Size...) as the attribute names they become."""
    return {str(record.get(f"Option{i} Name")).strip().lower() for _, record in records for i in (1, 2, 3)
            if record.get(f"Option{i} Name") and record.get(f"Option{i} Name") != "Title"}


def _number(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None
