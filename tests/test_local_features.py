"""Local features (SIFT, RANSAC inliers) and search regions, on real grocery catalog photos."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InvalidQuery
from engine.images import load_image_file
from engine.local_features import EMPTY, extract_local_features, pack, unpack, verify
from engine.regions import Region, search_regions
from tests.conftest import GROCERY, require

# A juice carton with a printed label, another juice of the same brand and shape, and a milk carton.
PACKET, LOOK_ALIKE, OTHER = "37", "36", "38"


def catalog_photo(product_id: str):
    return load_image_file(require(GROCERY) / "images" / f"{product_id}.jpg")


def test_local_features_agree_on_the_same_label_more_than_on_a_look_alike():
    seen = catalog_photo(PACKET).rotate(12, expand=True, fillcolor=(90, 90, 90)).resize((300, 300))
    query = extract_local_features(seen)
    assert len(query) > 50
    inliers = {pid: verify(query, extract_local_features(catalog_photo(pid))) for pid in (PACKET, LOOK_ALIKE, OTHER)}
    # The brand's logo is shared with the look-alike: it agrees, on fewer points.
    assert inliers[PACKET] >= 20 and inliers[LOOK_ALIKE] < inliers[PACKET] * 0.7 and inliers[OTHER] < 10, inliers


def test_packed_features_come_back_byte_for_byte():
    photos = [extract_local_features(catalog_photo(PACKET)), EMPTY, extract_local_features(catalog_photo(OTHER))]
    rows = pack(photos)
    assert rows.dtype == np.uint8 and len(rows) == len(photos[0]) + len(photos[2]) <= 2 * 256
    back = unpack(rows)
    assert len(back) == 2
    assert np.array_equal(back[0].points, photos[0].points) and np.array_equal(back[1].descriptors, photos[2].descriptors)
    assert pack([EMPTY]) is None


@pytest.mark.parametrize("values", ["0.5,0.5,0.6,0.2", "0,0,0,1", "nan,0,1,1", "0,0,1", "a,b,c,d", "-0.1,0,0.5,0.5"])
def test_a_box_outside_the_photo_is_refused_with_the_reason(values):
    with pytest.raises(InvalidQuery, match="crop"):
        Region.parse(values)


def test_a_box_too_small_to_search_is_refused():
    with pytest.raises(InvalidQuery, match="at least 16 px"):
        Region.parse("0,0,0.01,0.01").cut(catalog_photo(PACKET))


def test_the_whole_photo_and_centred_crops_are_the_regions_without_a_box():
    regions = search_regions(None)
    assert regions[0] == Region(0, 0, 1, 1)
    assert all(np.isclose(r.x + r.w / 2, 0.5) and np.isclose(r.y + r.h / 2, 0.5) for r in regions)
    assert search_regions(Region(0.1, 0.1, 0.3, 0.3)) == [Region(0.1, 0.1, 0.3, 0.3)]
