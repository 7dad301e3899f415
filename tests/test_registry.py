"""The model registry and the real loading path of the offline model."""

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import ModelWeightsMissing, UnknownModel
from engine.model_loading import load_encoder
from engine.registry import list_models, resolve_model
from engine.settings import ModelSettings
from tests.conftest import FASHION, require


def test_the_offline_default_is_registered_first_with_its_shipped_weights():
    specs = list_models()
    assert specs[0].name == "snapshop-lit-fashion"
    assert specs[0].offline and specs[0].weights_path.is_file()
    # A few MB, as promised: the towers come from packages, only the heads ship.
    assert specs[0].weights_path.stat().st_size < 8 * 1024 * 1024


def test_unknown_model_names_say_what_is_available():
    with pytest.raises(UnknownModel, match="snapshop-lit-fashion"):
        resolve_model("no-such-model")


def test_open_clip_names_resolve_without_downloading():
    spec = resolve_model("ViT-B-32/openai")
    assert (spec.kind, spec.architecture, spec.pretrained) == ("open_clip", "ViT-B-32", "openai")
    assert resolve_model("hf-hub:Marqo/marqo-ecommerce-embeddings-B").kind == "open_clip"


def test_an_online_model_fails_fast_offline_with_what_to_do(tmp_path):
    settings = ModelSettings(name="ViT-B-32/laion2b_s34b_b79k", offline=True, cache_dir=tmp_path)
    with pytest.raises(ModelWeightsMissing, match="SNAPSHOP_MODEL__CACHE_DIR|snapshop-lit-fashion"):
        load_encoder(settings)


def test_missing_trained_heads_are_a_clear_error(tmp_path):
    with pytest.raises(ModelWeightsMissing, match="snapshop train"):
        load_encoder(ModelSettings(weights=tmp_path / "nope.pt"))


def test_vectors_are_unit_length_and_batched_consistently(encoder):
    images = [Image.open(require(FASHION) / "images" / name).convert("RGB") for name in sorted(
        p.name for p in (require(FASHION) / "images").iterdir())[:5]]
    batch = encoder.encode_images(images)
    single = encoder.encode_images(images[:1])
    assert batch.shape == (5, encoder.info.dim)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch[0], single[0], atol=1e-4)
    texts = encoder.encode_texts(["black leather watch", "red running shoes"])
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_the_trained_model_matches_words_to_photos(encoder, fashion_frame):
    """Cross-modal: a watch's photo is nearer 'watch' than 'flip flops', and the other way round."""
    watch = fashion_frame[fashion_frame.category == "Watches"].iloc[0]
    flops = fashion_frame[fashion_frame.category == "Flip Flops"].iloc[0]
    photos = encoder.encode_images([Image.open(FASHION / r.image).convert("RGB") for r in (watch, flops)])
    words = encoder.encode_texts(["a wrist watch", "flip flops"])
    similarity = words @ photos.T
    assert similarity[0, 0] > similarity[0, 1] and similarity[1, 1] > similarity[1, 0]


def test_the_appearance_path_has_its_own_trunk_loaded_offline_from_its_package(encoder):
    """The look tower is EfficientNet-Lite1 at 240 px, its weights those the package ships (no download)."""
    from engine.lit_model import load_config, resolve_package_path

    look = load_config(resolve_model("snapshop-lit-fashion").config_path)["look_tower"]
    assert resolve_package_path(look["weights"]).is_file()
    packaged = torch.load(look["weights"], map_location="cpu", weights_only=True)
    trunk = encoder.model.look_trunk
    assert trunk is not encoder.model.visual.trunk
    # Served with each BatchNorm folded into the convolution before it (engine.batchnorm_folding).
    for conv, norm, served in (("_conv_stem", "_bn0", trunk.conv_stem), ("_conv_head", "_bn1", trunk.conv_head)):
        scale = packaged[f"{norm}.weight"] / torch.sqrt(packaged[f"{norm}.running_var"] + 1e-3)
        torch.testing.assert_close(served.weight.float(), packaged[f"{conv}.weight"] * scale.reshape(-1, 1, 1, 1))
        torch.testing.assert_close(served.bias.float(), packaged[f"{norm}.bias"] - packaged[f"{norm}.running_mean"] * scale)
    assert encoder.model.look_preprocess(Image.new("RGB", (640, 480))).shape[-2:] == (240, 240)


def test_photos_get_appearance_vectors_from_the_look_trunk_alone(encoder):
    """The appearance vector is the look trunk's (through the look head), the joint vector the
    image tower's: a query's photo encoded side by side equals the same photo in a batch."""
    images = [Image.open(require(FASHION) / "images" / name).convert("RGB") for name in sorted(
        p.name for p in (require(FASHION) / "images").iterdir())[:6]]
    joint, look = encoder.encode_photos(images)
    assert look.shape == (6, encoder.info.look_dim) == (6, 1280)
    np.testing.assert_allclose(np.linalg.norm(look, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(joint, encoder.encode_images(images), atol=1e-4)
    query_joint, query_look = encoder.encode_photos(images[:3])  # a query's three regions: both trunks at once
    np.testing.assert_allclose(query_joint, joint[:3], atol=1e-4)
    np.testing.assert_allclose(query_look, look[:3], atol=1e-4)
    model = encoder.model
    with torch.inference_mode():
        pixels = torch.stack([model.look_preprocess(image) for image in images[:1]])
        expected = model.look_head(model.look_head.pool(model.look_trunk.forward_features(pixels)))
    np.testing.assert_allclose(look[0], (expected / expected.norm()).numpy()[0], atol=1e-4)


def test_a_store_made_by_the_previous_version_of_the_default_model_is_refused(tmp_path, encoder):
    """Version 5's catalog photo vectors in the joint space came from one head (256-d; version 6's
    are two heads' side by side, 512-d): a store of them is refused with what to do, not searched
    beside the new ones."""
    from engine.errors import StoreModelMismatch
    from engine.model_info import ModelInfo
    from engine.settings import StoreSettings
    from engine.store import open_store

    assert encoder.info.version.startswith("6-")
    settings = StoreSettings(path=tmp_path / "store")
    previous = ModelInfo(encoder.info.name, "5-e27b51590a", 256, 1280)
    with open_store(settings, previous):
        pass
    with pytest.raises(StoreModelMismatch, match=r"snapshop-lit-fashion@5-e27b51590a.*re-index"):
        open_store(settings, encoder.info)


def test_the_shipped_joint_heads_are_snapshop_trains_two_heads(encoder):
    """Version 6's heads came from `snapshop train` (its report and settings are in the file): two
    joint heads, each reading both trunks and the photo's colours, the second also Lite0's stages,
    each head's epoch chosen on the tune slice; version 5's appearance head was kept as it was, so
    appearance vectors did not change."""
    from engine.joint_colour import colour_projection
    from engine.joint_look import look_projection

    metadata = encoder.metadata
    assert metadata["joint_look"] is True and look_projection(encoder.model).weight.shape == (256, 1280)
    assert metadata["joint_colour"] is True and colour_projection(encoder.model) is not None
    assert metadata["joint_heads"] == [{"look": True, "colour": True, "stages": True}]
    report = metadata["report"]
    assert report["val_products"] == 2000 and report["tune_products"] == 600 and len(report["heads"]) == 2
    # Issue 13's bar for titles against photos on the validation split (version 5: 0.768 / 0.470).
    assert report["val_recall_at_10"] >= 0.82 and report["val_mrr"] >= 0.52
    assert all(head["val"]["mrr"] < report["val_mrr"] for head in report["heads"])  # together above either alone
    assert metadata["config"]["look_features"] is True and metadata["config"]["unlocked_blocks"] == 0
    assert metadata["look_head"]["from"].endswith("snapshop-lit-fashion-v5.pt")
