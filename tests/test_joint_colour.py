"""The photo's colours in the joint photo vector (engine.joint_colour)."""

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from engine.images import load_image_file
from engine.joint_colour import (
    COLOUR_BINS,
    COLOUR_PROJ,
    WHOLE,
    attach_colour_projection,
    colour_histogram,
    colour_projection,
)
from tests.conftest import FASHION, pick_products


def product_on_white(colour: tuple[int, int, int], side: int, size: int = 224) -> Image.Image:
    """A studio shot: a square of one colour, ``side`` pixels wide, on a white backdrop."""
    photo = Image.new("RGB", (size, size), (255, 255, 255))
    start = (size - side) // 2
    ImageDraw.Draw(photo).rectangle((start, start, start + side - 1, start + side - 1), fill=colour)
    return photo


GREYS, WHOLE_BINS = WHOLE[0], WHOLE[0] + WHOLE[1] * WHOLE[2] * WHOLE[3] + 1  # the whole photo's histogram first


def test_the_histogram_counts_the_products_colours_not_the_backdrop():
    small, large = product_on_white((200, 30, 30), 64), product_on_white((200, 30, 30), 192)
    small_bins, large_bins = colour_histogram(small), colour_histogram(large)
    assert small_bins.shape == (COLOUR_BINS,) and small_bins.dtype == np.float32
    for start, stop in [(0, WHOLE_BINS - 1), (WHOLE_BINS, COLOUR_BINS - 1)]:  # the whole photo, its centre
        # A small red thing and a large one read as one colour (the small one's edges, blended with
        # the backdrop, add a little pink); only the backdrop's share differs much.
        small_shares, large_shares = small_bins[start:stop] ** 2, large_bins[start:stop] ** 2
        assert small_shares.argmax() == large_shares.argmax()
        assert small_shares.max() > 0.8 and large_shares.max() > 0.9
        np.testing.assert_allclose(small_shares, large_shares, atol=0.2)
        # Square-rooted shares of the product's pixels: their squares sum to one.
        assert abs(float(small_shares.sum()) - 1.0) < 1e-5
    assert small_bins[WHOLE_BINS - 1] ** 2 > 0.85 and large_bins[WHOLE_BINS - 1] ** 2 < 0.3  # the backdrop's share
    assert large_bins[-1] == 0  # the centre of the large one is all product


def test_red_blue_and_black_products_fill_different_bins():
    red, blue, black = (colour_histogram(product_on_white(c, 160)) for c in [(200, 30, 30), (30, 40, 200), (15, 15, 15)])
    product = np.r_[0 : WHOLE_BINS - 1, WHOLE_BINS : COLOUR_BINS - 1]  # all bins but the backdrop's shares
    assert float(red[product] @ blue[product]) < 0.1 and float(red[product] @ black[product]) < 0.1
    assert float(red[product] @ red[product]) > 1.9  # each histogram's shares: squares summing to one
    assert black[0] > 0.9  # the darkest grey level
    assert red[:GREYS].sum() == 0 and blue[:GREYS].sum() == 0


def test_a_mirror_image_and_a_real_photo_read_alike(fashion_frame):
    """Training sees a photo and its mirror image: both have the same colours."""
    row = next(pick_products(fashion_frame, 1, ["Handbags"]).itertuples())
    photo = load_image_file(FASHION / row.image)
    np.testing.assert_allclose(colour_histogram(photo), colour_histogram(ImageOps.mirror(photo)), atol=1e-6)
    grey = colour_histogram(photo.convert("L"))  # any mode: read as RGB
    assert grey[GREYS : WHOLE_BINS - 1].sum() == 0


def test_a_model_with_a_colour_projection_adds_the_photos_colours_to_its_joint_vector(encoder):
    """Recolouring a photo moves its joint vector only through the colour part: with the projection
    zeroed, a red and a blue square on white get one joint vector's worth of difference less."""
    red, blue = product_on_white((200, 30, 30), 160), product_on_white((30, 40, 200), 160)
    shipped = colour_projection(encoder.model)  # the session's model: put back as it was
    projection = attach_colour_projection(encoder.model)
    torch.nn.init.normal_(projection.weight, std=0.5)
    try:
        coloured = encoder.encode_photos([red, blue])[0]
        query = encoder.encode_query_photo([red], [red])[0]
        projection.weight.data.zero_()
        plain = encoder.encode_photos([red, blue])[0]
    finally:
        if shipped is None:
            delattr(encoder.model, COLOUR_PROJ)
        else:
            setattr(encoder.model, COLOUR_PROJ, shipped)
    np.testing.assert_allclose(query[0], coloured[0], atol=1e-4)  # a query photo reads its colours too
    assert float(coloured[0] @ coloured[1]) < float(plain[0] @ plain[1]) - 0.05
