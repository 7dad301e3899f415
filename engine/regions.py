"""Where in a shopper's photo the product is: the regions a photo search looks at.

A phone photo shows the product among shelves, hands and other products. Searching with the
whole photo and two centred crops and averaging them finds the product better than the whole
photo alone: measured on the 800 grocery shopper photos (half picked, half reported, see
docs/quality.md). A shopper can also draw a box (``crop``), as in Lens; then only that box is
searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from engine.errors import InvalidQuery

# Centred crops searched besides the whole photo, as fractions of its sides (eval/photo_study.py).
AUTO_CROPS = (0.8, 0.6)
# Which of those regions (by position) each trunk sees; a shopper's box is the one region both see.
# Measured fused on the 800 grocery shopper photos, version 4 (tune half / all 800, R@1 / R@5):
# appearance from all three 0.508 / 0.749, 0.512 / 0.766; from the two crops only 0.501 / 0.757,
# 0.515 / 0.769, one Lite1 pass (~30 ms of the longer trunk's core) less; the joint space (the
# `image` signal and the category vote) from the whole photo alone as well 0.499 / 0.752, 0.512 /
# 0.767, two Lite0 passes less, beside the Lite1 passes they cost little time.
JOINT_REGIONS = (0, 1, 2)
LOOK_REGIONS = (1, 2)
# A box smaller than this many pixels on a side has too little of the product to search with.
MIN_CROP_PX = 16
# Rounding in the shopper's page may put a box's edge a hair past the photo's.
_EDGE_SLACK = 1e-6


@dataclass(frozen=True)
class Region:
    """A box in a photo, as fractions of its width and height: left, top, width, height."""

    x: float
    y: float
    w: float
    h: float

    @classmethod
    def parse(cls, values) -> Region:
        """A shopper's ``crop`` (4 numbers, or "x,y,w,h") checked against the photo's bounds."""
        if isinstance(values, str):
            parts = [part.strip() for part in values.split(",")]
            try:
                values = [float(part) for part in parts]
            except ValueError as e:
                raise InvalidQuery(f"crop must be 4 numbers x,y,w,h (fractions of the photo), got '{values}'") from e
        values = list(values)
        if len(values) != 4:
            raise InvalidQuery(f"crop must be 4 numbers x,y,w,h (fractions of the photo), got {len(values)}")
        x, y, w, h = (float(v) for v in values)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise InvalidQuery("crop values must be finite numbers")
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise InvalidQuery(f"crop ({x}, {y}, {w}, {h}) is outside the photo: x and y must be >= 0, "
                               "w and h > 0 (fractions of the photo's width and height)")
        if x + w > 1 + _EDGE_SLACK or y + h > 1 + _EDGE_SLACK:
            raise InvalidQuery(f"crop ({x}, {y}, {w}, {h}) is outside the photo: x + w and y + h must be "
                               "at most 1 (fractions of the photo's width and height)")
        return cls(x, y, min(w, 1 - x), min(h, 1 - y))

    @classmethod
    def centred(cls, fraction: float) -> Region:
        margin = (1 - fraction) / 2
        return cls(margin, margin, fraction, fraction)

    def cut(self, image: Image.Image) -> Image.Image:
        """This region of ``image``; refused when it is too few pixels to search with."""
        left, top = round(self.x * image.width), round(self.y * image.height)
        right, bottom = round((self.x + self.w) * image.width), round((self.y + self.h) * image.height)
        if right - left < MIN_CROP_PX or bottom - top < MIN_CROP_PX:
            raise InvalidQuery(f"crop is {right - left}x{bottom - top} px of a {image.width}x{image.height} photo: "
                               f"at least {MIN_CROP_PX} px a side are needed")
        if (left, top, right, bottom) == (0, 0, image.width, image.height):
            return image
        return image.crop((left, top, right, bottom))

    def as_list(self) -> list[float]:
        return [round(v, 4) for v in (self.x, self.y, self.w, self.h)]


WHOLE = Region(0.0, 0.0, 1.0, 1.0)


def pick(cuts: list, positions: tuple[int, ...]) -> list:
    """The cuts of a photo at ``positions`` of its search regions; the one cut of a shopper's box."""
    return [cuts[i] for i in positions if i < len(cuts)] or cuts[:1]


def search_regions(crop: Region | None) -> list[Region]:
    """The regions of a photo searched together: the shopper's box alone, or the whole photo and
    the centred crops around where a shopper points the camera."""
    if crop is not None:
        return [crop]
    return [WHOLE, *(Region.centred(f) for f in AUTO_CROPS)]
