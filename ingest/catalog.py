"""Read a shop's catalog (CSV, JSONL or Parquet) into validated product rows.

A row that cannot become a product is reported with its row number, field and reason and left
out; the rest go on. Row numbers count data rows from 1 (in a CSV, row N is on line N + 1).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from engine.errors import CatalogError, CatalogRowError

ID_COLUMNS = ("id", "product_id", "sku")
TITLE_COLUMNS = ("title", "name", "product_name")
IMAGE_COLUMNS = ("images", "image", "image_url", "image_urls", "image_path", "image_paths", "photo")
PRICE_COLUMNS = ("price",)
CATEGORY_COLUMNS = ("category", "article_type", "product_type")
IMAGE_SEPARATORS = ("|", ";")


@dataclass
class ProductRow:
    row: int
    product_id: str
    title: str
    images: list[str]
    price: float | None = None
    category: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Catalog:
    path: Path
    rows: list[ProductRow]
    errors: list[CatalogRowError]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def read_catalog(path: Path | str) -> Catalog:
    """Read and validate every row of the catalog at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog '{path}' not found")
    frame, errors = _read_frame(path)
    columns = _columns(frame, path)
    rows: list[ProductRow] = []
    seen: dict[str, int] = {}
    for position, record in enumerate(frame.to_dict("records")):
        row_number = int(record.pop("__row__", position + 1))
        try:
            product = _product(record, row_number, columns)
        except CatalogRowError as e:
            errors.append(e)
            continue
        if product.product_id in seen:
            errors.append(CatalogRowError(row_number, f"duplicate id, first seen in row {seen[product.product_id]}",
                                          product.product_id, "id"))
            continue
        seen[product.product_id] = row_number
        rows.append(product)
    errors.sort(key=lambda e: e.row)
    return Catalog(path, rows, errors)


def catalog_from_records(records: list[dict], base_dir: Path) -> Catalog:
    """Validate products given as records (the HTTP API's upserts) like catalog rows.

    Row N is ``records[N - 1]``; relative image paths are read from ``base_dir``. Each record
    picks its own columns (one may give ``image``, the next ``images``), and records are not put
    through a DataFrame, so ids and prices keep the types they were sent with.
    """
    path = Path(base_dir) / "<records>"
    rows: list[ProductRow] = []
    errors: list[CatalogRowError] = []
    seen: dict[str, int] = {}
    for row_number, record in enumerate(records, start=1):
        try:
            columns = _columns(pd.DataFrame(columns=list(record)), path)
            product = _product(dict(record), row_number, columns)
        except CatalogError:
            errors.append(CatalogRowError(row_number, f"missing id (one of {', '.join(ID_COLUMNS)})", field="id"))
            continue
        except CatalogRowError as e:
            errors.append(e)
            continue
        if product.product_id in seen:
            errors.append(CatalogRowError(row_number, f"duplicate id, first seen in row {seen[product.product_id]}",
                                          product.product_id, "id"))
            continue
        seen[product.product_id] = row_number
        rows.append(product)
    return Catalog(path, rows, errors)


def _read_frame(path: Path) -> tuple[pd.DataFrame, list[CatalogRowError]]:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".csv.gz", ".tsv.gz"):
            return _read_csv(path, sep="\t" if suffix.startswith(".tsv") else ",")
        if suffix in (".jsonl", ".ndjson", ".jsonl.gz"):
            return _read_jsonl(path)
        if suffix == ".json":
            return pd.DataFrame(json.loads(path.read_text(encoding="utf-8"))), []
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), []
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as e:
        raise CatalogError(f"catalog '{path}' cannot be read: {str(e)[:300]}") from e
    raise CatalogError(f"catalog '{path}': unknown format '{path.suffix}'; use .csv, .tsv, .jsonl or .parquet")


def _read_csv(path: Path, sep: str) -> tuple[pd.DataFrame, list[CatalogRowError]]:
    """CSV by the csv module, so that a row with a broken quote or the wrong number of fields is
    reported with its row number instead of failing the whole file."""
    import csv
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle, delimiter=sep))
    except UnicodeDecodeError as e:
        raise CatalogError(f"catalog '{path}' is not UTF-8 (byte {e.start}: {e.reason}); "
                           "save it as UTF-8 and ingest again") from e
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if not lines:
        raise CatalogError(f"catalog '{path}' is empty")
    header, records, errors = [h.strip() for h in lines[0]], [], []
    for number, line in enumerate(lines[1:], start=1):
        if len(line) != len(header):
            errors.append(CatalogRowError(number, f"{len(line)} fields where the header has {len(header)} "
                                                  "(a stray comma or an unclosed quote?)"))
            continue
        records.append({**dict(zip(header, line)), "__row__": number})
    return pd.DataFrame(records, columns=[*header, "__row__"]), errors


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[CatalogRowError]]:
    records, errors = [], []
    opener = __import__("gzip").open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(CatalogRowError(number, f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(record, dict):
                errors.append(CatalogRowError(number, f"a JSON object was expected, got {type(record).__name__}"))
                continue
            records.append({**record, "__row__": number})
    if not records and not errors:
        raise CatalogError(f"catalog '{path}' is empty")
    return pd.DataFrame(records), errors


@dataclass(frozen=True)
class _Columns:
    id: str
    title: str | None
    images: str | None
    price: str | None
    category: str | None


def _columns(frame: pd.DataFrame, path: Path) -> _Columns:
    names = {str(c).strip().lower(): c for c in frame.columns if c != "__row__"}
    if not names:
        raise CatalogError(f"catalog '{path}' has no columns")

    def pick(candidates):
        return next((names[c] for c in candidates if c in names), None)

    id_column = pick(ID_COLUMNS)
    if id_column is None:
        raise CatalogError(f"catalog '{path}' has no id column (one of {', '.join(ID_COLUMNS)}); "
                           f"its columns are: {', '.join(map(str, frame.columns[:20]))}")
    return _Columns(id_column, pick(TITLE_COLUMNS), pick(IMAGE_COLUMNS), pick(PRICE_COLUMNS), pick(CATEGORY_COLUMNS))


def _product(record: dict, row: int, columns: _Columns) -> ProductRow:
    product_id = _text(record.get(columns.id))
    if not product_id:
        raise CatalogRowError(row, "missing id", field=str(columns.id))
    title = _text(record.get(columns.title)) if columns.title else ""
    if not title:
        raise CatalogRowError(row, "missing or empty title", product_id, str(columns.title or "title"))
    images = _images(record.get(columns.images)) if columns.images else []
    if not images:
        raise CatalogRowError(row, "no image path or URL", product_id, str(columns.images or "image"))
    price = _price(record.get(columns.price), row, product_id, str(columns.price)) if columns.price else None
    category = _text(record.get(columns.category)) or None if columns.category else None
    used = {columns.id, columns.title, columns.images, columns.price, columns.category}
    fields = {str(k): _plain(v) for k, v in record.items() if k not in used and _plain(v) is not None}
    return ProductRow(row, product_id, title, images, price, category, fields)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # ids read as 123.0 from JSON or Parquet
    return str(value).strip()


def _images(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = [text]
        else:
            for separator in IMAGE_SEPARATORS:
                if separator in text:
                    value = text.split(separator)
                    break
            else:
                value = [text]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [str(v).strip() for v in value if v is not None and str(v).strip()]


def _price(value: Any, row: int, product_id: str, column: str) -> float | None:
    text = _text(value)
    if not text:
        return None
    try:
        price = float(text.replace(",", "")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise CatalogRowError(row, f"price '{text[:40]}' is not a number", product_id, column) from None
    if not math.isfinite(price) or price < 0:
        raise CatalogRowError(row, f"price {text[:40]} must be a finite number >= 0", product_id, column)
    return price


def _plain(value: Any) -> Any:
    """A JSON-safe payload value, or None for an empty cell."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, bool, list, dict)):
        return value
    return str(value)
