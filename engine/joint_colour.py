"""A photo's colours as a third input of the joint-space photo vector.

Titles name a colour in 95 % of the fashion catalog ("Puma Men Navy Blue Shirts"), and colour was
the commonest miss of titles against photos: where the top photo was the wrong one, it had the
title's colour only half the time. Average-pooled ImageNet features keep little colour (they
were trained to name objects whatever their colour), so the joint photo vector also reads a
histogram of the photo's colours, projected like the two trunks' features:
``normalise(head(lite0) + look_proj(lite1) + colour_proj(colour_histogram(photo)))``. The
histogram costs no trunk pass (0.6 ms a 224 px photo on one thread). Measured in
docs/quality.md ("Colour for the joint space").

This module is what serving loads; ``engine.training`` trains the projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

# The name of the projection on the model and in a heads checkpoint (``colour_proj.weight``).
COLOUR_PROJ = "colour_proj"

# Each histogram: grey levels (too little saturation to have a hue), then hue x saturation x value
# of the coloured pixels, then the share of the region that is studio backdrop (near-white). The
# coloured and grey bins count only the product's pixels, so a small ring on white and a
# full-frame shirt of one colour read alike. Two regions: the whole photo, finely, and its centre
# (half the side), coarsely, where the product is (tune MRR over 3 seeds 0.714, against 0.709 for
# the whole photo alone at 12 x 3 x 3 bins; docs/quality.md).
WHOLE = (10, 18, 4, 4)  # grey levels, hues, saturations, values
CENTRE = (8, 12, 3, 3)
GREY_BELOW = 0.2  # saturation under which a pixel is grey
BACKDROP = (0.92, 0.08)  # value above and saturation below which a pixel is the white backdrop
SIDE = 64  # the photo is shrunk to SIDE x SIDE pixels first: colours, not detail


def _bins(grey_levels: int, hues: int, saturations: int, values: int) -> int:
    return grey_levels + hues * saturations * values + 1


COLOUR_BINS = _bins(*WHOLE) + _bins(*CENTRE)


def colour_histogram(image: Image.Image) -> np.ndarray:
    """The photo's colour histograms (whole photo, then its centre), square-rooted so a dot product
    compares shares fairly: ``COLOUR_BINS`` float32 numbers."""
    pixels = cv2.resize(np.asarray(image.convert("RGB")), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV).astype(np.float32) / np.array([180.0, 255.0, 255.0], np.float32)
    quarter = SIDE // 4
    centre = hsv[quarter : SIDE - quarter, quarter : SIDE - quarter]
    return np.sqrt(np.concatenate([_histogram(hsv.reshape(-1, 3), *WHOLE),
                                   _histogram(centre.reshape(-1, 3), *CENTRE)]))


def _histogram(hsv: np.ndarray, grey_levels: int, hues: int, saturations: int, values: int) -> np.ndarray:
    """Shares of the product's pixels (rows of hue, saturation, value in [0, 1]) in each bin, and
    the backdrop's share of all pixels, last."""
    hue, saturation, value = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    backdrop = (value > BACKDROP[0]) & (saturation < BACKDROP[1])
    grey = ~backdrop & (saturation < GREY_BELOW)
    coloured = ~backdrop & ~grey
    bins = np.zeros(_bins(grey_levels, hues, saturations, values), dtype=np.float32)
    np.add.at(bins, np.minimum((value[grey] * grey_levels).astype(int), grey_levels - 1), 1)
    h = np.minimum((hue[coloured] * hues).astype(int), hues - 1)
    s = np.minimum(((saturation[coloured] - GREY_BELOW) / (1 - GREY_BELOW) * saturations).astype(int), saturations - 1)
    v = np.minimum((value[coloured] * values).astype(int), values - 1)
    np.add.at(bins, grey_levels + (h * saturations + s) * values + v, 1)
    product = int((~backdrop).sum())
    if product:
        bins[:-1] /= product
    bins[-1] = backdrop.mean()
    return bins


def colour_histograms(images: Sequence[Image.Image]) -> torch.Tensor:
    """``colour_histogram`` of each image, shape (n, COLOUR_BINS)."""
    return torch.from_numpy(np.stack([colour_histogram(image) for image in images])) if len(images) else (
        torch.zeros((0, COLOUR_BINS)))


def attach_colour_projection(model: torch.nn.Module) -> torch.nn.Linear:
    """Give ``model`` a projection of colour histograms into its joint space (linear, no bias, as
    the image head's projection is); returns it."""
    projection = torch.nn.Linear(COLOUR_BINS, int(model.text.proj.out_features), bias=False)
    setattr(model, COLOUR_PROJ, projection)
    return projection


def colour_projection(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's projection of colour histograms into the joint space, when it has one."""
    return getattr(model, COLOUR_PROJ, None)
