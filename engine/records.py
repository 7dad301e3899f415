"""One validation of product records, whichever way they come in.

A catalog file's rows (``ingest.catalog``), the API's upserts and its PATCH (``api.schemas``)
check a product's values here, so a limit is stated once: a record one door accepts, the others
accept too, and the store can hold, read back, search and delete it after a restart.

The limits, and why:

- Nesting: a field's value may hold lists and objects ``MAX_DEPTH`` (16) levels deep. Qdrant
  Edge writes a payload to its write-ahead log (CBOR) and reads it back with a recursion limit of
  128 nested values: a payload 124 containers deep was accepted, searched, then made every search
  fail ("recursion limit exceed" from 128) and the store impossible to open after a restart
  ("Can't read WAL"). ``STORE_MAX_DEPTH`` (64) is what the store itself refuses, far below that.
- Numbers: finite only (JSON has no NaN or Infinity; Qdrant refuses them), integers within
  64 bits (Qdrant turns larger ones into floats: 10^30 came back as 1e30), a price at most
  ``MAX_PRICE``, a stock at most ``MAX_STOCK``.
- Text: valid Unicode (a lone surrogate, which JSON's ``\\ud800`` escapes can make, cannot be
  stored); an id at most ``MAX_ID_CHARS`` without control characters; a title at most
  ``MAX_TITLE_CHARS`` (the encoders read 77 tokens of it; shops' own limits are 150 to 255
  characters); any other string at most ``MAX_TEXT_CHARS``.

Ids are opaque: any other character, '/', '?', '#', '%' and spaces included, is fine, and the API
reaches it percent-encoded. Only the ids '.' and '..' are refused: no URL can carry them as a
path segment (browsers and HTTP clients remove them, even percent-encoded).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from engine.errors import InvalidProduct

MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 1_000
MAX_CATEGORY_CHARS = 200
MAX_TEXT_CHARS = 100_000
MAX_KEY_CHARS = 200
MAX_FIELDS = 500  # keys of one record, or of one object inside a field
MAX_ITEMS = 10_000  # values of one list inside a field
MAX_IMAGES = 100
MAX_IMAGE_REF_CHARS = 4_096
MAX_DEPTH = 16
STORE_MAX_DEPTH = 64
MAX_PRICE = 1e12
MAX_STOCK = 10**12
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A number as people write it: no '_' (Python's float() takes '1_000'), no 'nan' / 'inf' words.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# "1,299.50" has a thousands separator; "12,50" is a decimal comma and must not become 1250.
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_NON_FINITE = ("nan", "inf", "infinity")


def shown(value: Any, limit: int = 40) -> str:
    """``value`` cut short for a message, printable whatever it holds (control characters and
    lone surrogates escaped)."""
    text = str(value)
    text = text if len(text) <= limit else text[:limit] + "..."
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def text_of(value: Any, field: str) -> str:
    """A cell as stripped text ('' for empty); numbers become their digits, lists are refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple, dict)):
        kind = "dict" if isinstance(value, dict) else "list"
        raise InvalidProduct(field, f"text or a number was expected, got a {kind}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidProduct(field, f"{value} is not a finite number")
        if value.is_integer():
            value = int(value)  # ids read as 123.0 from JSON or Parquet
    text = str(value).strip()
    _check_unicode(text, field)
    return text


def check_id(value: Any, field: str = "id") -> str:
    """The product id as text, or ``InvalidProduct`` ('' when there is none)."""
    product_id = text_of(value, field)
    if len(product_id) > MAX_ID_CHARS:
        raise InvalidProduct(field, f"id is {len(product_id)} characters, more than the limit of {MAX_ID_CHARS}")
    bad = next((c for c in product_id if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise InvalidProduct(field, f"id '{shown(product_id)}' holds the control character U+{ord(bad):04X}")
    if product_id in (".", ".."):
        raise InvalidProduct(field, f"id '{product_id}' cannot be reached in a URL; use another id")
    return product_id


def check_title(value: Any, field: str = "title") -> str:
    title = text_of(value, field)
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidProduct(field, f"title is {len(title)} characters, more than the limit of {MAX_TITLE_CHARS}")
    return title


def check_category(value: Any, field: str = "category") -> str | None:
    category = text_of(value, field)
    if len(category) > MAX_CATEGORY_CHARS:
        raise InvalidProduct(field, f"category is {len(category)} characters, more than the limit of "
                                    f"{MAX_CATEGORY_CHARS}")
    return category or None


def check_price(value: Any, field: str = "price") -> float | None:
    """A price from a number or its usual spellings ('12.5', '1,299.00'); None when empty."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # a numpy number from Parquet
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = text_of(value, field)
        if not text:
            return None
        shown_as = text
        number = _price_text(text, field)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        shown_as, number = str(value), value
    else:
        raise InvalidProduct(field, f"price {shown(value)} is not a number")
    try:
        price = float(number)
    except OverflowError:
        price = math.inf
    if not math.isfinite(price) or price < 0:
        raise InvalidProduct(field, f"price {shown(shown_as)} must be a finite number >= 0")
    if price > MAX_PRICE:
        raise InvalidProduct(field, f"price {shown(shown_as)} is more than the limit of {MAX_PRICE:g}")
    return price


def _price_text(text: str, field: str) -> str:
    if "," in text:
        if not _THOUSANDS.fullmatch(text):
            raise InvalidProduct(field, f"price '{shown(text)}' is ambiguous: write decimals with a dot (12.50)")
        return text.replace(",", "")
    if text.lower().lstrip("+-") in _NON_FINITE:
        raise InvalidProduct(field, f"price {shown(text)} must be a finite number >= 0")
    if not _NUMBER.fullmatch(text):
        raise InvalidProduct(field, f"price '{shown(text)}' is not a number")
    return text


def check_text(value: str, field: str | None = None) -> str:
    """``value`` itself, refused when it is not valid Unicode (the store cannot hold it)."""
    _check_unicode(value, field)
    return value


def check_stock(value: Any, field: str | None = "stock") -> int | None:
    """Units in stock: a whole number from 0 to ``MAX_STOCK`` (None: unknown)."""
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise InvalidProduct(field, f"stock {shown(value)} is not a whole number")
    if not 0 <= value <= MAX_STOCK:
        raise InvalidProduct(field, f"stock {shown(value)} must be from 0 to {MAX_STOCK}")
    return int(value)


def check_json_record(record: dict) -> None:
    """A record that came as JSON (an API body, a JSONL or JSON catalog): there, NaN is not an
    empty cell, as in a spreadsheet or a Parquet float column, but a number JSON does not have."""
    for key, value in record.items():
        check_json_value(value, str(key))


def check_json_value(value: Any, field: str | None) -> Any:
    if isinstance(value, float) and math.isnan(value):
        raise InvalidProduct(field, "NaN is not a number (JSON has no NaN)")
    return value


def check_images(sources: list[str], field: str = "image") -> list[str]:
    if len(sources) > MAX_IMAGES:
        raise InvalidProduct(field, f"{len(sources)} images, more than the limit of {MAX_IMAGES}")
    for source in sources:
        _check_unicode(source, field)
        if len(source) > MAX_IMAGE_REF_CHARS:
            raise InvalidProduct(field, f"an image path or URL of {len(source)} characters, more than the "
                                        f"limit of {MAX_IMAGE_REF_CHARS}")
    return sources


def check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """A record's other columns, as the store will hold them: JSON values within the limits."""
    if len(fields) > MAX_FIELDS:
        raise InvalidProduct(None, f"{len(fields)} fields, more than the limit of {MAX_FIELDS}")
    return {_key(key, key): check_value(value, key) for key, value in fields.items()}


def check_value(value: Any, field: str, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` as a JSON value the store can hold and read back, or ``InvalidProduct`` naming
    ``field`` and why; tuples become lists, numpy scalars and arrays Python values."""
    return _checked(value, field, max_depth)


def check_payload(payload: dict) -> None:
    """The store's own fence: refuse a payload it could not read back (see the module's notes)."""
    for key, value in payload.items():
        _checked(value, _key(key, "payload"), STORE_MAX_DEPTH - 1)


def _checked(value: Any, field: str, depth_left: int) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidProduct(field, f"the number {shown(value)} is outside the 64-bit integer range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidProduct(field, f"{value} is not a finite number")
        return value
    if isinstance(value, str):
        _check_unicode(value, field)
        if len(value) > MAX_TEXT_CHARS:
            raise InvalidProduct(field, f"text of {len(value)} characters, more than the limit of {MAX_TEXT_CHARS}")
        return value
    if isinstance(value, (list, tuple, dict)):
        if depth_left <= 0:
            raise InvalidProduct(field, "lists or objects nested too deeply (the limit is "
                                        f"{MAX_DEPTH} levels inside a field)")
        if isinstance(value, dict):
            if len(value) > MAX_FIELDS:
                raise InvalidProduct(field, f"an object of {len(value)} keys, more than the limit of {MAX_FIELDS}")
            return {_key(k, field): _checked(v, field, depth_left - 1) for k, v in value.items()}
        if len(value) > MAX_ITEMS:
            raise InvalidProduct(field, f"a list of {len(value)} values, more than the limit of {MAX_ITEMS}")
        return [_checked(v, field, depth_left - 1) for v in value]
    raise InvalidProduct(field, f"a {type(value).__name__} cannot be stored; use text, numbers, lists or objects")


def _key(key: Any, field: str) -> str:
    if not isinstance(key, str):
        raise InvalidProduct(field, f"a key must be text, not {type(key).__name__}")
    _check_unicode(key, field)
    if len(key) > MAX_KEY_CHARS:
        raise InvalidProduct(field, f"a key of {len(key)} characters, more than the limit of {MAX_KEY_CHARS}")
    return key


def _check_unicode(text: str, field: str | None) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidProduct(field, f"text holds an unpaired surrogate at character {e.start} "
                                    "(not valid Unicode)") from None
