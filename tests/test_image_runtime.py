"""The image trunks in ONNX Runtime (engine.image_runtime): the same vectors as the torch trunks
for query and catalog photos, the graphs exported once, read back on the next start and remade
when broken."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelWeightsMissing
from engine.image_runtime import onnx_trunks
from engine.images import load_image_file
from engine.model_loading import load_encoder
from engine.regions import JOINT_REGIONS, LOOK_REGIONS, pick, search_regions
from engine.settings import ModelSettings
from tests.conftest import FASHION, GROCERY, require

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

# Real shopper photos of a packet, a fruit and a shelf, and fashion catalog photos.
PHOTOS = ["queries/train_Packages_Juice_Tropicana-Juice-Smooth_Tropicana-Juice-Smooth_002.jpg",
          "queries/train_Fruit_Nectarine_Nectarine_036.jpg",
          "queries/train_Packages_Yoghurt_Valio-Vanilla-Yoghurt_Valio-Vanilla-Yoghurt_027.jpg"]
FASHION_PHOTOS = ["images/10002.jpg", "images/10003.jpg"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """The model with its query photos' trunks in ONNX Runtime (graphs kept in a fresh cache), and
    the same model in torch: the reference."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    in_runtime = load_encoder(ModelSettings(cache_dir=cache, image_runtime="onnxruntime", text_runtime="torch"))
    in_torch = load_encoder(ModelSettings(cache_dir=cache, image_runtime="torch", text_runtime="torch"))
    return in_runtime, in_torch, cache


def _regions(path):
    photo = load_image_file(require(path))
    cuts = [region.cut(photo) for region in search_regions(None)]
    return pick(cuts, JOINT_REGIONS), pick(cuts, LOOK_REGIONS)


def test_query_photos_run_in_onnx_runtime_with_the_torch_trunks_vectors(encoders):
    in_runtime, in_torch, _ = encoders
    assert in_runtime.image_runtime is not None and in_torch.image_runtime is None
    paths = [GROCERY / name for name in PHOTOS] + [FASHION / name for name in FASHION_PHOTOS]
    for path in paths:
        joint_regions, look_regions = _regions(path)
        joint, look = in_runtime.encode_query_photo(joint_regions, look_regions)
        reference_joint, reference_look = in_torch.encode_query_photo(joint_regions, look_regions)
        assert joint.shape == reference_joint.shape == (3, in_runtime.info.dim)
        assert look.shape == reference_look.shape == (2, in_runtime.info.look_dim)
        assert (joint * reference_joint).sum(axis=1).min() > 0.9999, path.name
        assert (look * reference_look).sum(axis=1).min() > 0.9999, path.name
    # A shopper's box: one region, both trunks on it.
    box = [load_image_file(paths[0]).crop((40, 40, 200, 260))]
    joint, look = in_runtime.encode_query_photo(box, box)
    reference_joint, reference_look = in_torch.encode_query_photo(box, box)
    assert float(joint[0] @ reference_joint[0]) > 0.9999 and float(look[0] @ reference_look[0]) > 0.9999


def test_catalog_photos_run_in_onnx_runtime_with_the_torch_trunks_vectors(encoders):
    # A shop's photos at ingest (chunks on parallel workers, catalog views blended into the
    # appearance vector): stores made with the torch trunks stay searchable by queries made here.
    in_runtime, in_torch, _ = encoders
    photos = [load_image_file(require(FASHION / name)) for name in FASHION_PHOTOS]
    photos += [load_image_file(require(GROCERY / name)) for name in PHOTOS]
    photos = photos * 2  # 10 photos: more than one worker's chunk
    joint, look = in_runtime.encode_catalog_photos(photos)
    reference_joint, reference_look = in_torch.encode_catalog_photos(photos)
    assert (joint * reference_joint).sum(axis=1).min() > 0.9999
    assert (look * reference_look).sum(axis=1).min() > 0.9999
    # and a shop's own photo searched as a query lands on its stored vectors
    query_joint, query_look = in_runtime.encode_query_photo(photos[:1], photos[:1])
    stored_joint, stored_look = in_runtime.encode_photos(photos[:2])
    assert float(query_joint[0] @ stored_joint[0]) > 0.9999 and float(query_look[0] @ stored_look[0]) > 0.9999


def test_the_exported_graphs_are_kept_and_read_back(encoders, monkeypatch):
    in_runtime, _, cache = encoders
    kept = {part: list(cache.glob(f"{part}-*.onnx")) for part in ("joint-trunk", "look-trunk")}
    assert all(len(files) == 1 and files[0].stat().st_size > 1_000_000 for files in kept.values()), kept

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the graph was kept")

    monkeypatch.setattr("engine.image_runtime.export_joint_trunk", no_export)
    monkeypatch.setattr("engine.image_runtime.export_look_trunk", no_export)
    again = onnx_trunks(in_runtime.model, in_runtime.preprocess, in_runtime.info.tag, cache)
    assert again is not None
    pixels = in_runtime._runtime_pixels(_regions(GROCERY / PHOTOS[0])[0])
    (feature_map, stages), (kept_map, kept_stages) = again.joint_maps(pixels), in_runtime.image_runtime.joint_maps(pixels)
    np.testing.assert_allclose(feature_map.numpy(), kept_map.numpy(), atol=1e-6)
    np.testing.assert_allclose(stages.numpy(), kept_stages.numpy(), atol=1e-6)


def test_the_joint_graph_gives_the_trunk_stages_the_second_head_reads(encoders):
    """Version 6's second joint head reads Lite0's stages: the graph gives them from the same pass
    as the feature map, as the torch trunk does (engine.joint_heads.trunk_with_stages)."""
    import torch

    from engine.joint_heads import trunk_with_stages

    in_runtime, in_torch, _ = encoders
    regions = _regions(GROCERY / PHOTOS[2])[0]
    feature_map, stages = in_runtime.image_runtime.joint_maps(in_runtime._runtime_pixels(regions))
    with torch.inference_mode():
        reference_map, reference_stages = trunk_with_stages(in_torch.model.visual.trunk, in_torch._pixels(regions))
    assert stages is not None and stages.shape == (len(regions), 784)
    np.testing.assert_allclose(stages.numpy(), reference_stages.numpy(), atol=1e-4)
    np.testing.assert_allclose(feature_map.numpy(), reference_map.numpy(), atol=1e-4)


def test_a_broken_kept_graph_is_exported_again(encoders, tmp_path):
    in_runtime, _, _ = encoders
    first = onnx_trunks(in_runtime.model, in_runtime.preprocess, in_runtime.info.tag, tmp_path)
    kept = next(tmp_path.glob("look-trunk-*.onnx"))
    size = kept.stat().st_size
    kept.write_bytes(kept.read_bytes()[: size // 3])  # a torn write, as after a full disk
    again = onnx_trunks(in_runtime.model, in_runtime.preprocess, in_runtime.info.tag, tmp_path)
    assert again is not None and kept.stat().st_size == size
    pixels = in_runtime._runtime_pixels(_regions(GROCERY / PHOTOS[1])[1], in_runtime.model.look_preprocess)
    np.testing.assert_allclose(again.look_map(pixels).numpy(), first.look_map(pixels).numpy(), atol=1e-6)


def test_torch_serves_when_the_export_fails_unless_onnx_runtime_is_required(encoders, monkeypatch, tmp_path):
    in_runtime, _, _ = encoders
    monkeypatch.setattr("engine.image_runtime.export_look_trunk",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("exporter broke")))
    assert onnx_trunks(in_runtime.model, in_runtime.preprocess, in_runtime.info.tag, tmp_path) is None
    with pytest.raises(ModelWeightsMissing, match="IMAGE_RUNTIME=onnxruntime"):
        load_encoder(ModelSettings(cache_dir=tmp_path, image_runtime="onnxruntime", text_runtime="torch"))


def test_a_bf16_model_keeps_its_trunks_in_torch(tmp_path):
    # The graphs are the fp32 trunks: a model asked for in bf16 must not be served in fp32.
    encoder = load_encoder(ModelSettings(cache_dir=tmp_path, precision="bf16", text_runtime="torch"))
    assert encoder.image_runtime is None and not list(tmp_path.glob("*.onnx"))
