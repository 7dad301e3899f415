"""Synthetic shopper photos of a catalog photo, to train the appearance head on a shop's own catalog.

A shop has no photos taken by its shoppers, only its studio shots. A shopper's photo differs
from those in ways that can be simulated: the product on a table, a wall or a shelf instead of
white paper, smaller in the frame and off-centre, tilted, cut at an edge, in warmer or dimmer
light, blurred, compressed. The appearance head learns to ignore exactly those differences.

These views are deliberately not the evaluation's shopper-like photos (``eval.query_sets``):
other backgrounds, ranges and distortions, so that the evaluation measures what generalises.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from engine.images import backdrop_mask


def shopper_view(photo: Image.Image, rng: random.Random) -> Image.Image:
    """One random shopper-style photo of the product in ``photo``."""
    photo = photo.convert("RGB")
    if rng.random() < 0.5:
        photo = ImageOps.mirror(photo)
    width, height = photo.size
    canvas = _background((int(width * rng.uniform(1.1, 1.7)), int(height * rng.uniform(1.1, 1.7))), rng)
    scale = rng.uniform(0.55, 1.0) * min(canvas.width / width, canvas.height / height)
    product = photo.resize((max(8, int(width * scale)), max(8, int(height * scale))))
    x = rng.randint(0, canvas.width - product.width)
    y = rng.randint(0, canvas.height - product.height)
    canvas.paste(product, (x, y), backdrop_mask(product))
    fill = canvas.getpixel((0, 0))
    canvas = canvas.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, fillcolor=fill)
    # Framed around the product by a hand: loose, or tight enough to cut an edge off.
    margin_x, margin_y = (int(side * rng.uniform(-0.08, 0.3)) for side in product.size)
    box = (max(0, x - margin_x), max(0, y - margin_y), min(canvas.width, x + product.width + margin_x),
           min(canvas.height, y + product.height + margin_y))
    shot = canvas.crop(box)
    shot = _light(shot, rng)
    if rng.random() < 0.3:
        shot = shot.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        shot.save(buffer, format="JPEG", quality=rng.randint(35, 90))
        shot = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return shot


def _background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A plain surface, a gradient (a wall under a lamp), or a blurred texture (wood, fabric, a shelf)."""
    kind = rng.random()
    colour = tuple(rng.randint(30, 235) for _ in range(3))
    if kind < 0.35:
        return Image.new("RGB", size, colour)
    if kind < 0.65:
        other = tuple(min(255, max(0, c + rng.randint(-70, 70))) for c in colour)
        ramp = Image.linear_gradient("L").resize(size)
        return Image.composite(Image.new("RGB", size, colour), Image.new("RGB", size, other), ramp)
    cells = (rng.randint(3, 16), rng.randint(3, 16))
    texture = Image.new("RGB", cells)
    texture.putdata([tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in colour)
                     for _ in range(cells[0] * cells[1])])
    return texture.resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))


def _light(shot: Image.Image, rng: random.Random) -> Image.Image:
    """Exposure, contrast, saturation and white balance of a phone in a shop's light."""
    shot = ImageEnhance.Brightness(shot).enhance(rng.uniform(0.6, 1.35))
    shot = ImageEnhance.Contrast(shot).enhance(rng.uniform(0.7, 1.3))
    shot = ImageEnhance.Color(shot).enhance(rng.uniform(0.6, 1.4))
    warm = rng.uniform(-0.08, 0.08)  # warm (tungsten) to cool (daylight) white balance
    red, green, blue = shot.split()
    red = red.point(lambda v: min(255, int(v * (1 + warm))))
    blue = blue.point(lambda v: min(255, int(v * (1 - warm))))
    return Image.merge("RGB", (red, green, blue))
