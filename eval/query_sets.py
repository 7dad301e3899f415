"""Query sets built from a catalog: what shoppers type and photograph, with known right answers.

- describing: words a shopper would type, made from a product's attributes ("navy blue men
  casual shirts"); graded relevance: every attribute matches = 2, the article type only = 1.
- category: a category's name; every product of that category is relevant.
- shopper photos: real ones from a CSV (query_image, product_id), or shopper-like ones made from
  catalog photos (crop, rotation, colour and light change, a background).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from engine.images import backdrop_mask
from ingest.catalog import ProductRow

DESCRIBING_FIELDS = ("colour", "gender", "usage")


@dataclass
class TextQuery:
    text: str
    gains: dict[str, float]  # product id -> graded relevance


@dataclass
class PhotoQuery:
    image: Image.Image
    product_id: str
    source: str = ""


@dataclass
class ComposedQuery:
    """A photo plus words that change it: "like this, but in black"."""

    image: Image.Image
    text: str
    gains: dict[str, float]


@dataclass(frozen=True)
class Change:
    """What the words of a photo + words query change: a catalog field, the words that ask for
    each wanted value (a phrase may ask for several values: "for kids" is Boys or Girls), and the
    field the photo keeps, which grades relevance."""

    field: str
    asks: dict[str, tuple[str, ...]]  # words -> the field values they ask for
    keeps: str


IN_COLOUR = Change("colour", {f"in {c.lower()}": (c,) for c in ("Black", "White", "Blue", "Red", "Green", "Pink",
                                                                  "Brown")}, keeps="gender")
FOR_WHOM = Change("gender", {"for men": ("Men",), "for women": ("Women",), "for kids": ("Boys", "Girls")},
                  keeps="colour")


def composed_queries(rows: list[ProductRow], base_dir: Path, count: int, seed: int = 0, loader=None,
                     change: Change = IN_COLOUR) -> list[ComposedQuery]:
    """A product's photo plus words asking for a value of ``change.field`` it does not have ("in
    brown", "for women"); relevant: the same kind of product with that value (also keeping the
    photo's ``change.keeps`` = 2, the same category only = 1)."""
    rng = random.Random(seed)
    usable = [r for r in rows if r.category and r.fields.get(change.field) and r.fields.get(change.keeps)]
    shuffled = usable[:]
    rng.shuffle(shuffled)
    queries = []
    for row in shuffled:
        have = str(row.fields[change.field])
        options = {}
        for words, values in change.asks.items():
            if have in values:
                continue
            wanted = [o for o in rows if o.category == row.category and str(o.fields.get(change.field)) in values]
            if len(wanted) >= 2:
                options[words] = wanted
        if not options:
            continue
        words = rng.choice(list(options))
        gains = {o.product_id: 2.0 if str(o.fields.get(change.keeps)) == str(row.fields[change.keeps]) else 1.0
                 for o in options[words]}
        photo = loader(row.images[0]) if loader else Image.open(base_dir / row.images[0])
        queries.append(ComposedQuery(photo, words, gains))
        if len(queries) >= count:
            break
    return queries


def describing_queries(rows: list[ProductRow], count: int, seed: int = 0) -> list[TextQuery]:
    """Attribute queries for up to ``count`` products, deduplicated; needs colour/gender/usage fields."""
    usable = [r for r in rows if r.category and all(r.fields.get(f) for f in DESCRIBING_FIELDS)]
    rng = random.Random(seed)
    rng.shuffle(usable)
    queries, seen = [], set()
    for row in usable:
        colour, gender, usage = (str(row.fields[f]) for f in DESCRIBING_FIELDS)
        text = f"{colour} {gender} {usage} {row.category}".lower()
        if text in seen:
            continue
        seen.add(text)
        gains = {}
        for other in rows:
            if other.category != row.category:
                continue
            same = all(str(other.fields.get(f)) == str(row.fields[f]) for f in DESCRIBING_FIELDS)
            gains[other.product_id] = 2.0 if same else 1.0
        queries.append(TextQuery(text, gains))
        if len(queries) >= count:
            break
    return queries


def category_queries(rows: list[ProductRow], min_products: int = 5) -> list[TextQuery]:
    by_category: dict[str, list[str]] = {}
    for row in rows:
        if row.category:
            by_category.setdefault(row.category, []).append(row.product_id)
    return [TextQuery(name.lower(), {pid: 1.0 for pid in ids})
            for name, ids in sorted(by_category.items()) if len(ids) >= min_products]


def shopper_like(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A catalog photo made to look taken by a shopper: off-centre, tilted, in other light, on a table."""
    photo = photo.convert("RGB")
    width, height = photo.size
    background = Image.new("RGB", (int(width * 1.5), int(height * 1.5)),
                           tuple(rng.randint(90, 200) for _ in range(3)))
    background = background.filter(ImageFilter.GaussianBlur(2))
    scale = rng.uniform(0.75, 1.0)
    product = photo.resize((int(width * scale), int(height * scale)))
    # The studio's white backdrop is replaced (shoppers don't shoot on white paper): the white
    # region connected to the borders becomes the table, the product itself stays whole.
    mask = backdrop_mask(product)
    x = rng.randint(0, background.width - product.width)
    y = rng.randint(0, background.height - product.height)
    background.paste(product, (x, y), mask)
    shot = background.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC,
                             fillcolor=tuple(rng.randint(90, 200) for _ in range(3)))
    # A crop around the product, as a phone frames it.
    margin = int(min(width, height) * rng.uniform(0.05, 0.25))
    box = (max(0, x - margin), max(0, y - margin), min(shot.width, x + product.width + margin),
           min(shot.height, y + product.height + margin))
    shot = shot.crop(box)
    shot = ImageEnhance.Brightness(shot).enhance(rng.uniform(0.65, 1.25))
    shot = ImageEnhance.Color(shot).enhance(rng.uniform(0.7, 1.3))
    shot = ImageEnhance.Contrast(shot).enhance(rng.uniform(0.8, 1.2))
    return shot


def augmented_photo_queries(rows: list[ProductRow], base_dir: Path, count: int, seed: int = 0,
                            loader=None) -> list[PhotoQuery]:
    rng = random.Random(seed)
    chosen = rows[:]
    rng.shuffle(chosen)
    queries = []
    for row in chosen[:count]:
        photo = loader(row.images[0]) if loader else Image.open(base_dir / row.images[0])
        queries.append(PhotoQuery(shopper_like(photo, rng), row.product_id, row.images[0]))
    return queries


def real_photo_queries(queries_csv: Path, loader) -> list[PhotoQuery]:
    frame = pd.read_csv(queries_csv, dtype=str)
    out = []
    for record in frame.itertuples():
        out.append(PhotoQuery(loader(queries_csv.parent / record.query_image), str(record.product_id),
                              record.query_image))
    return out
