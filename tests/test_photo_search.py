"""Search by the photos shoppers really send, on the grocery catalog and the real model.

The grocery catalog (81 products, MIT) is ingested once, local features included; queries are
its real shopper photos and the kinds of photo phones make: rotated by EXIF, portrait, a
screenshot with bars, tiny, huge.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.images import decode_image, load_image_file
from engine.local_features import extract_local_features, verify
from engine.photo_kind import photo_kind
from engine.regions import Region
from engine.search import Searcher, SearchQuery
from engine.settings import IngestSettings, SearchSettings, StoreSettings
from engine.store import open_store
from engine.store.base import LOCAL_VECTOR
from ingest.catalog import read_catalog
from ingest.pipeline import ingest_catalog
from tests.conftest import GROCERY, require

# A juice carton with a printed label, another juice of the same brand and shape, and a milk carton.
PACKET, LOOK_ALIKE, OTHER = "37", "36", "38"


@pytest.fixture(scope="module")
def grocery(tmp_path_factory, encoder):
    folder = tmp_path_factory.mktemp("grocery")
    with open_store(StoreSettings(path=folder / "store"), encoder.info) as store:
        ingest_catalog(read_catalog(require(GROCERY) / "catalog.csv"), encoder, store, IngestSettings(), progress=False)
        yield Searcher(encoder, store)


def catalog_photo(product_id: str) -> Image.Image:
    return load_image_file(require(GROCERY) / "images" / f"{product_id}.jpg")


def as_jpeg(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def shelf_shot(product: Image.Image, size: tuple[int, int], box: tuple[int, int, int]) -> Image.Image:
    """The product at ``box`` (left, top, side) on a cluttered shelf of the catalog's other photos."""
    shelf = Image.new("RGB", size)
    others = [catalog_photo(str(i)) for i in range(0, 81, 9)]
    for n, other in enumerate(others * 4):
        shelf.paste(other.resize((size[0] // 4, size[0] // 4)), ((n % 4) * size[0] // 4, (n // 4) * size[0] // 4))
    shelf.paste(product.resize((box[2], box[2])), box[:2])
    return shelf


def test_local_features_agree_on_the_same_label_more_than_on_a_look_alike():
    packet = catalog_photo(PACKET)
    seen = packet.rotate(12, expand=True, fillcolor=(90, 90, 90)).resize((300, 300))
    query = extract_local_features(seen)
    assert len(query) > 50
    inliers = {pid: verify(query, extract_local_features(catalog_photo(pid))) for pid in (PACKET, LOOK_ALIKE, OTHER)}
    # The brand's logo is shared with the look-alike: it agrees, on fewer points.
    assert inliers[PACKET] >= 20 and inliers[LOOK_ALIKE] < inliers[PACKET] * 0.7 and inliers[OTHER] < 10, inliers


def test_a_verified_match_is_in_the_answer_and_can_be_switched_off(grocery):
    photo = shelf_shot(catalog_photo(PACKET), (400, 400), (100, 100, 200))
    response = grocery.search(SearchQuery(image=photo, k=5))
    results = response.results
    assert results[0].product_id == PACKET
    assert results[0].explanation["match"] > 0.1 and results[0].signals["match"] > 0.9
    assert not response.nothing_close  # a label verified point by point is the product itself
    off = grocery.search(SearchQuery(image=photo, k=5, weights={"match": 0})).results
    assert all("match" not in r.explanation for r in off)


def test_match_comes_from_the_registry_and_verifies_only_the_best_candidates(grocery):
    """The match signal is a registry entry like the others: the plan of a photo query names it but
    reads no product's local features for every candidate, and only the best ``verify_top``
    candidates are verified (the rest carry no geometric evidence); with words it does not apply."""
    photo = shelf_shot(catalog_photo(PACKET), (400, 400), (100, 100, 200))
    plan = grocery.plan(grocery.prepare(SearchQuery(image=photo, k=5)))
    assert "match" in plan.signals and LOCAL_VECTOR not in plan.record_vectors
    column = grocery.signals.names.index("match")
    few = Searcher(grocery.encoder, grocery.store, SearchSettings(verify_top=3))
    evidence = few.search(SearchQuery(image=photo, k=20)).evidence[:, column]
    assert np.count_nonzero(evidence) <= 3 and evidence[0] > 0
    worded = grocery.plan(grocery.prepare(SearchQuery(image=photo, text="orange juice", k=5)))
    assert "match" not in worded.signals


def test_verification_finds_more_real_packets_first(grocery):
    """Real shoppers' photos of packaged goods (the first 40 of the set): the match signal puts the
    right product first more often than the same search without it."""
    queries = pd.read_csv(GROCERY / "queries.csv")
    packets = queries[queries.query_image.str.contains("_Packages_")].head(40)
    firsts = {0.0: 0, None: 0}
    for row in packets.itertuples():
        encoded = grocery.encode_photo(load_image_file(GROCERY / row.query_image))
        for weight in firsts:
            weights = {"match": weight} if weight is not None else None
            top = grocery.search(SearchQuery(encoded_photo=encoded, k=1, weights=weights)).results[0]
            firsts[weight] += top.product_id == str(row.product_id)
    assert firsts[None] >= firsts[0.0] + 4, firsts


def test_a_real_photo_gets_its_category_from_what_the_search_found(grocery):
    """Real shoppers' photos (every 10th of the set, all departments): the category the search
    reports comes from its ranked products (appearance, verification, the neighbours' vote), and
    is right more often than the appearance neighbours' vote alone (on these 80: 57 against 52)."""
    catalog = pd.read_csv(GROCERY / "catalog.csv", dtype=str).set_index("id")
    queries = pd.read_csv(GROCERY / "queries.csv", dtype=str).iloc[::10]
    ranked = neighbours = 0
    for row in queries.itertuples():
        category = catalog.category[row.product_id]
        encoded = grocery.encode_photo(load_image_file(GROCERY / row.query_image))
        ranked += grocery.search(SearchQuery(encoded_photo=encoded, k=5)).predicted_category == category
        neighbours += photo_kind(grocery.store, encoded.joint, encoded.look).predicted == category
    assert ranked >= 0.6 * len(queries) and ranked >= neighbours + 3, (ranked, neighbours, len(queries))


def _exif_rotated(photo: Image.Image) -> bytes:
    """What a phone held sideways writes: the pixels turned, an EXIF tag saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return as_jpeg(photo.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def _screenshot(photo: Image.Image) -> bytes:
    """A phone screenshot of the photo: a tall screen, a status bar, black bars, buttons below."""
    screen = Image.new("RGB", (360, 780), (0, 0, 0))
    screen.paste(Image.new("RGB", (360, 40), (245, 245, 245)), (0, 0))
    screen.paste(photo.resize((360, 360)), (0, 180))
    screen.paste(Image.new("RGB", (360, 90), (30, 30, 30)), (0, 690))
    return as_jpeg(screen)


@pytest.mark.parametrize("make", [
    pytest.param(_exif_rotated, id="exif-rotated"),
    pytest.param(lambda photo: as_jpeg(shelf_shot(photo, (300, 400), (40, 90, 220))), id="portrait"),
    pytest.param(_screenshot, id="screenshot-with-borders"),
    pytest.param(lambda photo: as_jpeg(photo.resize((40, 40))), id="tiny"),
    pytest.param(lambda photo: as_jpeg(photo.resize((4032, 3024))), id="huge"),
])
def test_photos_as_phones_send_them_find_the_product(grocery, make):
    photo = decode_image(make(catalog_photo(PACKET)), source="upload")
    results = grocery.search(SearchQuery(image=photo, k=3)).results
    assert PACKET in [r.product_id for r in results]


def test_a_box_around_the_product_finds_it_where_the_whole_photo_does_not_have_to(grocery):
    photo = shelf_shot(catalog_photo(PACKET), (600, 600), (450, 450, 150))
    response = grocery.search(SearchQuery(image=photo, k=3, crop=Region.parse("0.75,0.75,0.25,0.25")))
    assert response.results[0].product_id == PACKET
    assert response.region == Region(0.75, 0.75, 0.25, 0.25)


@pytest.mark.parametrize("values", ["0.5,0.5,0.6,0.2", "0,0,0,1", "nan,0,1,1", "0,0,1"])
def test_a_box_outside_the_photo_is_refused(values):
    from engine.errors import InvalidQuery

    with pytest.raises(InvalidQuery, match="crop"):
        Region.parse(values)


def test_the_whole_photo_and_centred_crops_are_searched_without_a_box():
    from engine.regions import search_regions

    regions = search_regions(None)
    assert regions[0] == Region(0, 0, 1, 1)
    assert all(np.isclose(r.x + r.w / 2, 0.5) and np.isclose(r.y + r.h / 2, 0.5) for r in regions)
    assert search_regions(Region(0.1, 0.1, 0.3, 0.3)) == [Region(0.1, 0.1, 0.3, 0.3)]


def test_a_query_photo_is_its_regions_vectors_and_the_whole_photos_local_features(grocery):
    """What ``encode_photo`` hands the ranker, however it spreads the work over threads: the
    appearance vector of the regions at ``LOOK_REGIONS``, the joint-space vector of those at
    ``JOINT_REGIONS`` (with a box: the box alone), the SIFT features of the whole photo (the box),
    and the time of each stage."""
    from engine.regions import JOINT_REGIONS, LOOK_REGIONS, search_regions
    from engine.signals import mean_direction
    from engine.timing import StageClock

    photo = shelf_shot(catalog_photo(PACKET), (480, 640), (100, 200, 240))
    for crop in (None, Region(0.1, 0.2, 0.6, 0.5)):
        clock = StageClock()
        encoded = grocery.encode_photo(photo, crop, clock=clock)
        cuts = [region.cut(photo) for region in search_regions(crop)]
        joint, look = grocery.encoder.encode_photos(cuts)
        joints, looks = (list(JOINT_REGIONS), list(LOOK_REGIONS)) if crop is None else ([0], [0])
        assert float(encoded.joint @ mean_direction(joint[joints])) > 0.9999
        assert float(encoded.look @ mean_direction(look[looks])) > 0.9999
        expected = extract_local_features(cuts[0])
        assert np.array_equal(encoded.local.descriptors, expected.descriptors)
        assert {"crops", "encode", "verify"} <= set(clock.seconds)


def test_a_joint_vector_with_a_look_tower_part_reads_the_look_tower_on_the_joint_regions(encoder):
    """A model whose joint photo vector adds the look tower's part (engine.joint_look; here another,
    random one): a query's joint vectors are those of its joint regions, though the look tower's
    own vectors are of other regions."""
    import torch

    from engine.joint_look import LOOK_PROJ
    from engine.regions import search_regions

    photo = shelf_shot(catalog_photo(PACKET), (480, 640), (100, 200, 240))
    cuts = [region.cut(photo) for region in search_regions(None)]
    # Into the first joint head's width (version 6's joint vector is two heads side by side).
    projection = torch.nn.Linear(encoder.info.look_dim, encoder.model.text.proj.out_features, bias=False)
    torch.nn.init.normal_(projection.weight, std=0.05)
    shipped = getattr(encoder.model, LOOK_PROJ, None)  # the session's model: put back as it was
    setattr(encoder.model, LOOK_PROJ, projection.eval())
    try:
        joint, look = encoder.encode_photos(cuts)
        query_joint, query_look = encoder.encode_query_photo(cuts, cuts[1:])
    finally:
        if shipped is None:
            delattr(encoder.model, LOOK_PROJ)
        else:
            setattr(encoder.model, LOOK_PROJ, shipped)
    np.testing.assert_allclose(query_joint, joint, atol=1e-4)
    np.testing.assert_allclose(query_look, look[1:], atol=1e-4)
    assert np.abs(joint - encoder.encode_photos(cuts)[0]).max() > 1e-3  # the part counted
