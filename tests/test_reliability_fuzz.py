"""Fuzz: random and mutated catalogs and images are answered, never crashed on.

The catalog reader gets random bytes, and valid CSV / JSONL catalogs with bytes changed,
removed or inserted: the answer is a ``Catalog`` (rows and row errors that make sense) or a
``CatalogError``, never another exception. The image loader gets random bytes and mutated
JPEG, PNG, GIF, WEBP and TIFF files: the answer is a bounded RGB image or ``InvalidImage``.
Bounded so that both run in well under 30 s (``SNAPSHOP_FUZZ_EXAMPLES`` raises the count).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.errors import CatalogError, InvalidImage
from engine.images import WORKING_SIZE, decode_image
from ingest.catalog import read_catalog

EXAMPLES = int(os.environ.get("SNAPSHOP_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- mutations ---------------------------------------------------------------------------------------
# Bytes that break readers most often: quotes, separators, line ends, brackets, stray encodings.
SPECIAL = [b'"', b'""', b",", b";", b"\t", b"\n", b"\r", b"\r\n", b"[", b"{", b"\\", b"\x00", b"\xe9", b"\xef\xbb\xbf",
           b"\xff\xd8", b"\xff\xd9", b"\xff\xff\xff\xff"]
EDIT = st.tuples(st.sampled_from(["set", "delete", "insert"]), st.floats(0, 1, exclude_max=True),
                 st.one_of(st.binary(min_size=1, max_size=12), st.sampled_from(SPECIAL)))


def mutate(data: bytes, edits) -> bytes:
    """Apply byte edits at relative positions, so one strategy fits files of any size."""
    out = bytearray(data)
    for kind, where, chunk in edits:
        at = int(where * len(out)) if out else 0
        if kind == "set":
            out[at : at + len(chunk)] = chunk
        elif kind == "delete":
            del out[at : at + len(chunk) * 8]
        else:
            out[at:at] = chunk
    return bytes(out)


# --- catalogs -----------------------------------------------------------------------------------
SEED_CSV = (
    'id,title,image,price,category,colour\n'
    '1,Blue "Oxford" shirt,images/1.jpg,12.50,Shirts,blue\n'
    '2,"Jeans, slim",images/2.jpg|images/2b.jpg,"1,299.00",Jeans,\n'
    '3,"Socks ""3 pack""",["images/3.jpg"],,Socks,white\n'
    '4,Café crème tee,images/4.jpg,7,Tshirts,beige\n'
).encode()
SEED_JSONL = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in [
    {"id": 1, "title": "Blue shirt", "image": "images/1.jpg", "price": 12.5, "category": "Shirts"},
    {"id": "2", "title": "Jeans", "images": ["images/2.jpg"], "price": "19.90", "extra": {"a": [1, 2]}},
    {"id": 3.0, "title": "Café tee", "image": "images/3.jpg", "price": None, "tags": ["x"]},
]).encode()
# A catalog large enough that a quote left open runs past csv's field size limit (128 KiB).
LONG_CSV = SEED_CSV + "".join(f"{i},Product {i},images/{i}.jpg,{i}.5,Misc,grey\n"
                              for i in range(5, 4005)).encode()
SEED_CATALOGS = [(SEED_CSV, ".csv"), (SEED_JSONL, ".jsonl"), (LONG_CSV, ".csv"),
                 (gzip.compress(SEED_CSV), ".csv.gz"), (SEED_CSV.decode().encode("utf-16"), ".csv")]
# Bytes that matter to a CSV or JSON reader, so random text hits quotes and separators often.
CATALOG_ALPHABET = st.sampled_from(list(b'",;\t|\n\r{}[]:\\ 0123456789.-eEaid') + [0, 0xE9, 0xC3, 0xFF, 0xEF, 0xBB])


def check_catalog(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"catalog{suffix}"
        path.write_bytes(data)
        try:
            catalog = read_catalog(path)
        except CatalogError as e:
            assert str(path) in str(e) or "<records>" in str(e)
            return
    seen_ids = set()
    for row in catalog.rows:
        assert row.product_id and row.title and row.images and row.row >= 1
        assert row.product_id not in seen_ids
        seen_ids.add(row.product_id)
        assert row.price is None or (math.isfinite(row.price) and row.price >= 0)
        json.dumps(row.fields)  # payload-safe
    for error in catalog.errors:
        assert error.row >= 1 and error.reason
    assert not {row.row for row in catalog.rows} & {error.row for error in catalog.errors}


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".csv.gz"]))
def test_random_bytes_as_a_catalog_are_read_or_refused(data, suffix):
    check_catalog(data, suffix)


@FUZZ
@given(data=st.lists(CATALOG_ALPHABET, max_size=600).map(bytes), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_catalog_like_noise_is_read_or_refused(data, suffix):
    check_catalog(b"id,title,image,price\n" + data if suffix == ".csv" else data, suffix)


@FUZZ
@given(seed=st.sampled_from(SEED_CATALOGS), edits=st.lists(EDIT, max_size=6), cut=st.floats(0.5, 1))
def test_mutated_catalogs_are_read_or_refused(seed, edits, cut):
    data, suffix = seed
    data = mutate(data, edits)
    check_catalog(data[: max(1, int(len(data) * cut))], suffix)


@FUZZ
@given(lines=st.lists(st.one_of(
    st.sampled_from(SEED_JSONL.splitlines()),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * (depth // 2)),  # nested beyond any limit
    st.integers(1, 3000).map(lambda depth: b'{"id": 1, "title": "t", "image": "i.jpg", "x": ' + b"[" * depth),
    st.binary(max_size=40)), max_size=8))
def test_jsonl_with_deep_nesting_and_garbage_lines_is_read_or_refused(lines):
    check_catalog(b"\n".join(lines), ".jsonl")


# --- images ----------------------------------------------------------------------------------------
def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((48, 40, 3)) * 255).astype("uint8"))
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = []
    for image, fmt, options in [
        (photo, "JPEG", {"exif": exif.tobytes()}),
        (photo.convert("CMYK"), "JPEG", {}),
        (photo, "PNG", {}),
        (photo.convert("P"), "PNG", {"transparency": 0}),
        (Image.fromarray((rng.random((24, 24)) * 65535).astype(np.uint16)), "PNG", {}),
        (photo.convert("P"), "GIF", {"save_all": True, "append_images": [photo.convert("P").rotate(90)]}),
        (photo, "WEBP", {}),
        (photo, "TIFF", {"compression": "tiff_deflate"}),
        (photo, "BMP", {}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        seeds.append(buffer.getvalue())
    return seeds


SEED_IMAGES = _seed_images()


def check_image(data: bytes) -> None:
    try:
        image = decode_image(data, source="fuzz", max_pixels=4_000_000)
    except InvalidImage as e:
        assert str(e).startswith("fuzz: ")
        return
    image.load()
    assert image.mode == "RGB"
    assert 1 <= min(image.size) <= WORKING_SIZE and max(image.size) <= 4 * WORKING_SIZE


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_an_image_decode_or_are_refused(data):
    check_image(data)


@FUZZ
@given(seed=st.sampled_from(SEED_IMAGES), edits=st.lists(EDIT, min_size=1, max_size=8))
def test_mutated_images_decode_or_are_refused(seed, edits):
    check_image(mutate(seed, edits))


@FUZZ
@given(seed=st.sampled_from(SEED_IMAGES), cut=st.floats(0, 1))
def test_cut_short_images_decode_or_are_refused(seed, cut):
    check_image(seed[: int(len(seed) * cut)])
