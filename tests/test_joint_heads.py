"""Joint heads side by side (engine.joint_heads): the joint vector's dot product is the mean of the
heads' cosines, the trunk pass gives the stages a head reads, and a checkpoint that names heads
it does not hold is refused."""

import numpy as np
import pytest
import torch

from engine.errors import ModelWeightsMissing
from engine.images import load_image_file
from engine.joint_heads import joint_heads, joint_vectors, stage_width, trunk_with_stages
from engine.lit_model import build_lit_model
from engine.registry import resolve_model
from tests.conftest import FASHION, pick_products


def test_the_joint_vector_scores_the_mean_of_the_heads_cosines():
    generator = torch.Generator().manual_seed(0)
    photos, texts = torch.randn(5, 2, 256, generator=generator), torch.randn(3, 2, 256, generator=generator)
    photo_vectors, text_vectors = joint_vectors(photos), joint_vectors(texts)
    assert photo_vectors.shape == (5, 512)
    torch.testing.assert_close(photo_vectors.norm(dim=1), torch.ones(5))
    unit_photos = torch.nn.functional.normalize(photos, dim=-1)
    unit_texts = torch.nn.functional.normalize(texts, dim=-1)
    cosines = [unit_texts[:, head] @ unit_photos[:, head].T for head in range(2)]
    torch.testing.assert_close(text_vectors @ photo_vectors.T, (cosines[0] + cosines[1]) / 2)
    # One head: the head's own unit vector, as before version 6.
    torch.testing.assert_close(joint_vectors(photos[:, :1]), unit_photos[:, 0])


def test_one_trunk_pass_gives_the_feature_map_and_the_stages(encoder, fashion_frame):
    """The stages a second head reads come from the same pass as the last feature map (served with
    the batch norms folded): the map is the trunk's own, the stages its seven outputs pooled."""
    trunk = encoder.model.visual.trunk
    row = next(pick_products(fashion_frame, 1, ["Handbags"]).itertuples())
    pixels = encoder._pixels([load_image_file(FASHION / row.image)])
    with torch.inference_mode():
        feature_map, stages = trunk_with_stages(trunk, pixels)
        expected = trunk.forward_features(pixels)
        last_stage = trunk.blocks(trunk.bn1(trunk.conv_stem(pixels)))
    torch.testing.assert_close(feature_map, expected)
    assert stage_width(trunk) == 784 and stages.shape == (1, 784)
    torch.testing.assert_close(stages[:, -320:], last_stage.mean(dim=(-2, -1)))


def test_a_checkpoint_naming_heads_it_does_not_hold_is_refused(tmp_path):
    spec = resolve_model("snapshop-lit-fashion")
    checkpoint = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = {name: tensor for name, tensor in checkpoint["state_dict"].items()
                                if not name.startswith("joint_heads.")}
    checkpoint["metadata"]["joint_heads"] = [{"look": True, "colour": True, "stages": True}]
    broken = tmp_path / "broken.pt"
    torch.save(checkpoint, broken)
    with pytest.raises(ModelWeightsMissing, match=r"broken\.pt: its metadata names 1 more joint heads"):
        build_lit_model(spec.config_path, broken)


def test_the_shipped_model_has_two_joint_heads(encoder):
    """Version 6: the second head reads Lite0 with its stages, Lite1 and the colours; 512-d."""
    assert [head.reads() for head in joint_heads(encoder.model)] == [{"look": True, "colour": True, "stages": True}]
    assert encoder.info.dim == 512
    titles = encoder.encode_texts(["Puma Men Navy Blue Shirts", "Fastrack Women Black Watch"])
    np.testing.assert_allclose(np.linalg.norm(titles, axis=1), 1.0, atol=1e-5)
