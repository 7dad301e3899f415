"""Read a shop's catalog (CSV, TSV, JSONL, JSON or Parquet) into validated product rows.

A row that cannot become a product is reported with its row number, field and reason and left
out; the rest go on. Row numbers count data records from 1: in a CSV, the header is not counted
(nor are blank lines), so row N is on line N + 1 unless blank lines or quoted line breaks come
before it, and a row's line is named where it matters (a broken quote). In a JSONL file, row N
is line N.

What cannot be read at all is one ``CatalogError`` naming the file: missing, empty, an unknown
format, no id / title / image column, a header naming a column twice, or text that is not
UTF-8. A catalog in another encoding is refused, not guessed at: a wrong guess (Latin-1 for
Windows-1252, say) silently changes titles, and titles are embedded and shown to shoppers. The
error names the byte and line so the file can be fixed and saved as UTF-8 (UTF-16 with a byte
order mark, as spreadsheets export "Unicode text", is read).

A CSV row with a broken quote is reported on its own: parsing restarts on the next line, so the
rows after it are still read instead of being swallowed into one endless quoted field.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from engine.errors import CatalogError, CatalogRowError, InvalidProduct
from engine.records import (
    MAX_TEXT_CHARS,
    check_category,
    check_fields,
    check_id,
    check_images,
    check_json_record,
    check_price,
    check_title,
    shown,
)
from ingest.feeds import (
    MERCHANT_ATTRIBUTES,
    SHOPIFY_ATTRIBUTES,
    is_merchant_feed,
    is_shopify_export,
    merchant_records,
    option_names,
    read_merchant_xml,
    shopify_records,
)

ID_COLUMNS = ("id", "product_id", "sku")
TITLE_COLUMNS = ("title", "name", "product_name")
IMAGE_COLUMNS = ("images", "image", "image_url", "image_urls", "image_path", "image_paths", "photo")
PRICE_COLUMNS = ("price",)
CATEGORY_COLUMNS = ("category", "article_type", "product_type")
IMAGE_SEPARATORS = ("|", ";")
# The csv module refuses a field over 128 KB as an error of the whole record, which reads as a
# broken quote. A longer cell is read, and then refused by engine.records with its own reason (a
# title over its limit, say), as the API would; only beyond this is the record unreadable.
CSV_FIELD_CHARS = 16 * MAX_TEXT_CHARS
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_CHARS))


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
    # Attributes the file's format declares (a feed's brand, color, size...), name -> kind.
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent


@dataclass
class _Table:
    """A catalog file's column names and its records, each with its row number."""

    columns: list[str]
    records: list[tuple[int, dict]]
    errors: list[CatalogRowError]
    attributes: dict[str, str] = field(default_factory=dict)  # declared by the file's format


def read_catalog(path: Path | str) -> Catalog:
    """Read and validate every row of the catalog at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog '{path}' not found")
    table = _as_catalog(_read_table(path))
    columns = _columns(pd.DataFrame(columns=table.columns), path)
    _require_product_columns(columns, table.columns, path)
    rows: list[ProductRow] = []
    errors = list(table.errors)
    seen: dict[str, int] = {}
    for row_number, record in table.records:
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
    present = {name for row in rows for name in row.fields}
    return Catalog(path, rows, errors, {n: kind for n, kind in table.attributes.items() if n in present})


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
            check_json_record(record)
            columns = _columns(pd.DataFrame(columns=list(record)), path)
            product = _product(dict(record), row_number, columns)
        except CatalogError:
            errors.append(CatalogRowError(row_number, f"missing id (one of {', '.join(ID_COLUMNS)})", field="id"))
            continue
        except CatalogRowError as e:
            errors.append(e)
            continue
        except InvalidProduct as e:
            errors.append(CatalogRowError(row_number, e.reason, field=e.field))
            continue
        if product.product_id in seen:
            errors.append(CatalogRowError(row_number, f"duplicate id, first seen in row {seen[product.product_id]}",
                                          product.product_id, "id"))
            continue
        seen[product.product_id] = row_number
        rows.append(product)
    return Catalog(path, rows, errors)


def _read_table(path: Path) -> _Table:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix in (".csv", ".tsv", ".csv.gz", ".tsv.gz"):
        return _read_csv(path, sep="\t" if suffix.startswith(".tsv") else ",")
    if suffix in (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    if suffix in (".xml", ".rss", ".xml.gz"):
        return _Table(*read_merchant_xml(path, _read_text(path)), [])
    raise CatalogError(f"catalog '{path}': unknown format '{path.suffix}'; use .csv, .tsv, .jsonl, .parquet "
                       "or a Merchant Center .xml feed")


def _as_catalog(table: _Table) -> _Table:
    """A shop's feed (Merchant Center, Shopify export) as catalog records; other tables as they are."""
    if is_merchant_feed(table.columns):
        records, errors = merchant_records(table.records)
        attributes = MERCHANT_ATTRIBUTES
    elif is_shopify_export(table.columns):
        records, errors = shopify_records(table.records)
        attributes = {**SHOPIFY_ATTRIBUTES, **{name: "keyword" for name in option_names(table.records)}}
    else:
        return table
    columns = list(dict.fromkeys(name for _, record in records for name in record)) or ["id", "title", "images"]
    return _Table(columns, records, table.errors + errors, attributes)


def _read_text(path: Path) -> str:
    """The whole file as text: UTF-8 (a BOM is dropped), or UTF-16 with its BOM; else refused."""
    try:
        raw = path.read_bytes()
        if path.suffix.lower() == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a broken / truncated gzip
        raise CatalogError(f"catalog '{path}' cannot be read: {str(e)[:200]}") from e
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise CatalogError(
                f"catalog '{path}' starts like UTF-16 but is not ({e.reason} at byte {e.start})"
            ) from e
    if _utf16_without_bom(raw):
        raise CatalogError(f"catalog '{path}' looks like UTF-16 without a byte order mark (every other byte "
                           "is 0): save it as UTF-8, or as UTF-16 with a byte order mark, and ingest again")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        where = "of the uncompressed text " if path.suffix.lower() == ".gz" else ""
        raise CatalogError(
            f"catalog '{path}' is not UTF-8: byte {e.start} {where}(line {line}) is 0x{raw[e.start]:02x} "
            f"({e.reason}). It may be Latin-1 or Windows-1252: save it as UTF-8 and ingest again"
        ) from e


def _utf16_without_bom(raw: bytes) -> bool:
    """Text whose even or odd bytes are nearly all NUL: UTF-16 (of mostly Latin text), not UTF-8,
    where NUL bytes would be read as characters of the header and every cell."""
    head = raw[:4096]
    if len(head) < 4 or b"\x00" not in head:
        return False
    return max(head[0::2].count(0), head[1::2].count(0)) > 0.8 * (len(head) // 2)


def _read_csv(path: Path, sep: str) -> _Table:
    """CSV by the csv module, one record at a time, so that a row with a broken quote or the
    wrong number of fields is reported with its row number instead of failing the whole file."""
    text = _read_text(path)
    lines = _Lines(text)
    records = _csv_records(lines, _separator(lines.first(), sep))
    header_record = next(records, None)
    if header_record is None:
        raise CatalogError(f"catalog '{path}' is empty")
    header = _header(header_record[1] or [], path)
    table = _Table(header, [], [])
    for row_number, (line, cells) in enumerate(records, start=1):
        if isinstance(cells, str):
            hint = (f"a cell over {CSV_FIELD_CHARS} characters, or an unclosed quote?" if "field limit" in cells
                    else "an unclosed or stray quote?")
            table.errors.append(CatalogRowError(row_number, f"line {line}: broken CSV ({cells}); {hint}"))
            continue
        reason = _field_count_problem(cells, len(header), lines.span)
        if reason and lines.span > 1:
            # An unclosed quote ran on over the following lines: report this row only and read
            # the lines after its first one again.
            table.errors.append(CatalogRowError(row_number, f"line {line}: {reason}; an unclosed quote?"))
            lines.restart(line)
            continue
        if reason:
            table.errors.append(CatalogRowError(row_number, f"line {line}: {reason} (a stray comma?)"))
            continue
        cells = cells[: len(header)] + [""] * (len(header) - len(cells))
        table.records.append((row_number, dict(zip(header, cells))))
    return table


class _Lines:
    """The physical lines of a text, handed to ``csv.reader`` one at a time, with the position
    kept so that parsing can start again after a broken record."""

    def __init__(self, text: str):
        self.lines = re.findall(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$", text)
        self.position = 0
        self.span = 0  # physical lines the last record took
        self.reset = False

    def first(self) -> str:
        return self.lines[0] if self.lines else ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.position >= len(self.lines):
            raise StopIteration
        self.position += 1
        return self.lines[self.position - 1]

    def restart(self, line: int) -> None:
        """Go on from the line after ``line`` (1-based) with a fresh reader."""
        self.position = line
        self.reset = True


def _csv_records(lines: _Lines, sep: str) -> Iterator[tuple[int, list[str] | str]]:
    """(first line number, cells) per non-blank record, or (line, csv's complaint) where it gave up.

    Strict parsing: a quote must close right before a separator or the line's end. That is what
    catches an unclosed quote early, when it would otherwise pair with the opening quote of a
    later row's field and quietly swallow the rows between into one title.
    """
    reader = csv.reader(lines, delimiter=sep, strict=True)
    while True:
        start = lines.position
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            lines.span = lines.position - start
            yield start + 1, str(e)
            lines.position, reader = start + 1, csv.reader(lines, delimiter=sep, strict=True)
            continue
        lines.span = lines.position - start
        if any(cell.strip() for cell in cells):
            yield start + 1, cells
        if lines.reset:
            lines.reset, reader = False, csv.reader(lines, delimiter=sep, strict=True)


def _separator(first_line: str, default: str) -> str:
    """The default, unless the header plainly uses another (a ';' CSV from a European Excel)."""
    if default in first_line:
        return default
    for other in (";", "\t", ","):
        if other in first_line:
            return other
    return default


def _header(cells: list[str], path: Path) -> list[str]:
    header = [cell.strip() or f"column_{index}" for index, cell in enumerate(cells, start=1)]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        names = ", ".join(repr(name[:40]) for name in twice)
        raise CatalogError(f"catalog '{path}': the header names {names} more than once; "
                           "rename or remove the extra columns")
    return header


def _field_count_problem(cells: list[str], expected: int, span: int) -> str | None:
    if len(cells) == expected:
        return None
    if len(cells) > expected and not any(cell.strip() for cell in cells[expected:]) and span == 1:
        return None  # trailing empty cells, as spreadsheets write them
    if len(cells) < expected and span == 1:
        return None  # missing trailing cells are empty
    return f"{len(cells)} fields where the header has {expected}"


def _read_jsonl(path: Path) -> _Table:
    # JSON strings may hold U+2028 and friends, so only "\n" ends a line (not str.splitlines).
    records, errors, columns = [], [], {}
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(CatalogRowError(number, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        except RecursionError:
            errors.append(CatalogRowError(number, "not valid JSON (nested too deeply)"))
            continue
        if not isinstance(record, dict):
            errors.append(CatalogRowError(number, f"a JSON object was expected, got {type(record).__name__}"))
            continue
        if problem := _json_problem(record, number):
            errors.append(problem)
            continue
        columns.update(dict.fromkeys(record))
        records.append((number, record))
    if not records and not errors:
        raise CatalogError(f"catalog '{path}' is empty")
    return _Table(list(columns), records, errors)


def _read_json(path: Path) -> _Table:
    try:
        data = json.loads(_read_text(path))
    except (json.JSONDecodeError, RecursionError) as e:
        raise CatalogError(f"catalog '{path}' is not valid JSON: {str(e)[:200]}") from e
    if not isinstance(data, list):
        raise CatalogError(f"catalog '{path}': a JSON array of products was expected, "
                           f"got {type(data).__name__}")
    if not data:
        raise CatalogError(f"catalog '{path}' is empty")
    records, errors, columns = [], [], {}
    for number, record in enumerate(data, start=1):
        if isinstance(record, dict) and (problem := _json_problem(record, number)):
            errors.append(problem)
        elif isinstance(record, dict):
            columns.update(dict.fromkeys(record))
            records.append((number, record))
        else:
            errors.append(CatalogRowError(number, f"a JSON object was expected, got {type(record).__name__}"))
    return _Table(list(columns), records, errors)


def _json_problem(record: dict, row: int) -> CatalogRowError | None:
    try:
        check_json_record(record)
    except InvalidProduct as e:
        return CatalogRowError(row, e.reason, field=e.field)
    return None


def _read_parquet(path: Path) -> _Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow's errors on a foreign file are many; all mean "cannot read"
        raise CatalogError(f"catalog '{path}' cannot be read as Parquet: {str(e)[:300]}") from e
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    return _Table(columns, list(enumerate(frame.to_dict("records"), start=1)), [])


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
                           f"its columns are: {', '.join(shown(c) for c in frame.columns[:20])}")
    return _Columns(id_column, pick(TITLE_COLUMNS), pick(IMAGE_COLUMNS), pick(PRICE_COLUMNS), pick(CATEGORY_COLUMNS))


def _require_product_columns(columns: _Columns, names: list[str], path: Path) -> None:
    """A file without a title or image column cannot give one product: one error, not one per row."""
    needed = ((columns.title, TITLE_COLUMNS, "title"), (columns.images, IMAGE_COLUMNS, "image"))
    for found, candidates, what in needed:
        if found is None:
            raise CatalogError(f"catalog '{path}' has no {what} column (one of {', '.join(candidates)}); "
                               f"its columns are: {', '.join(shown(c) for c in names[:20])}")


def _product(record: dict, row: int, columns: _Columns) -> ProductRow:
    """One record as a product, checked by ``engine.records`` (the API's checks too)."""
    try:
        product_id = check_id(record.get(columns.id), str(columns.id))
    except InvalidProduct as e:
        raise CatalogRowError(row, e.reason, field=e.field) from None
    if not product_id:
        raise CatalogRowError(row, "missing id", field=str(columns.id))
    try:
        return _checked_product(record, row, columns, product_id)
    except InvalidProduct as e:
        raise CatalogRowError(row, e.reason, product_id, e.field) from None


def _checked_product(record: dict, row: int, columns: _Columns, product_id: str) -> ProductRow:
    title = check_title(record.get(columns.title), str(columns.title)) if columns.title else ""
    if not title:
        raise CatalogRowError(row, "missing or empty title", product_id, str(columns.title or "title"))
    images = check_images(_images(record.get(columns.images)), str(columns.images)) if columns.images else []
    if not images:
        raise CatalogRowError(row, "no image path or URL", product_id, str(columns.images or "image"))
    price = check_price(record.get(columns.price), str(columns.price)) if columns.price else None
    category = check_category(record.get(columns.category), str(columns.category)) if columns.category else None
    used = {columns.id, columns.title, columns.images, columns.price, columns.category}
    fields = check_fields({str(k): _plain(v) for k, v in record.items() if k not in used and _plain(v) is not None})
    return ProductRow(row, product_id, title, images, price, category, fields)


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
            except (json.JSONDecodeError, RecursionError):
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
    sources = (v for v in value if v is not None and not isinstance(v, (list, dict)))
    return [str(v).strip() for v in sources if str(v).strip()]


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
