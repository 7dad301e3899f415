"""Views of a catalog photo as a shopper meets the product: many copies heaped in a crate or
lined up on a shelf.

A shop photographs one apple on white; a shopper photographs a crate of them. The appearance
trunk sees a heap of apples as a texture of apples, which the single studio apple is not, so at
ingest each catalog photo also gets a few such views, made from the photo itself, and their
appearance vectors count towards the product's (``ingest.pipeline``). Nothing at query time
changes. Made from the catalog photo alone, deterministically (seeded by the photo's pixels), so
that ingesting a catalog twice stores the same vectors.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
from PIL import Image, ImageEnhance

from engine.images import backdrop_mask

# Side of a view, px: the appearance trunk looks at 240 px.
VIEW_SIZE = 320


def catalog_views(photo: Image.Image, count: int) -> list[Image.Image]:
    """``count`` views of ``photo``, in turn: a heap of copies (fruit in a crate), copies upright
    side by side (packets on a shelf), a heap of smaller copies, ..."""
    rng = random.Random(hashlib.sha256(photo.convert("RGB").resize((32, 32)).tobytes()).hexdigest())
    product, mask = _cut_out(photo)
    kinds = (lambda: heap_view(product, mask, rng, per_row=3), lambda: shelf_view(product, mask, rng),
             lambda: heap_view(product, mask, rng, per_row=5))
    return [kinds[i % len(kinds)]() for i in range(count)]


def heap_view(product: Image.Image, mask: Image.Image, rng: random.Random, per_row: int) -> Image.Image:
    """Copies of the product, ``per_row`` across, rows overlapping from the back to the front, each
    turned and sized a little differently, on a dark crate-like ground, in a shop's light."""
    canvas = Image.new("RGB", (VIEW_SIZE, VIEW_SIZE), tuple(rng.randint(20, 90) for _ in range(3)))
    cell = VIEW_SIZE / per_row
    rows = per_row + 1
    for row in range(rows):
        for column in range(per_row + 1):
            size = cell * rng.uniform(1.0, 1.3)
            scale = size / max(product.size)
            angle = rng.uniform(-180, 180)
            copy = product.resize((max(4, round(product.width * scale)), max(4, round(product.height * scale))))
            shape = mask.resize(copy.size)
            copy, shape = copy.rotate(angle, expand=True), shape.rotate(angle, expand=True)
            x = (column - 0.5 + rng.uniform(-0.2, 0.2)) * cell
            y = (row - 0.5) * cell * 0.8 + rng.uniform(-0.1, 0.1) * cell
            canvas.paste(copy, (round(x), round(y)), shape)
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.75, 1.15))
    return ImageEnhance.Color(canvas).enhance(rng.uniform(0.8, 1.2))


def shelf_view(product: Image.Image, mask: Image.Image, rng: random.Random) -> Image.Image:
    """Upright copies side by side in rows, as packets stand on a shop's shelves."""
    canvas = Image.new("RGB", (VIEW_SIZE, VIEW_SIZE), tuple(rng.randint(150, 230) for _ in range(3)))
    # Two or three rows, and at least two copies a row.
    scale = min(VIEW_SIZE / rng.uniform(1.6, 2.6) / product.height, VIEW_SIZE / 2.2 / product.width)
    copy = product.resize((max(4, round(product.width * scale)), max(4, round(product.height * scale))))
    height = copy.height
    shape = mask.resize(copy.size)
    step = copy.width * rng.uniform(1.0, 1.08)
    y = rng.uniform(-0.4, 0.0) * height
    while y < VIEW_SIZE:
        x = rng.uniform(-0.5, 0.0) * copy.width
        while x < VIEW_SIZE:
            canvas.paste(copy, (round(x), round(y)), shape)
            x += step
        y += height * 1.08
    canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.75, 1.15))
    return ImageEnhance.Color(canvas).enhance(rng.uniform(0.8, 1.2))


def _cut_out(photo: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The product without its studio backdrop, and its mask; the whole photo where no backdrop
    is found (a photo filled to its edges)."""
    photo = photo.convert("RGB")
    mask = backdrop_mask(photo)
    box = mask.getbbox()
    if box is None or np.asarray(mask).mean() > 0.97 * 255:
        return photo, Image.new("L", photo.size, 255)
    return photo.crop(box), mask.crop(box)
