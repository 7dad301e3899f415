"""The model registry and the real loading path of the offline model."""

import numpy as np
import pytest
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
