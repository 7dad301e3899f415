"""`snapshop train` on a small sample: it learns, reports on validation, and its heads load."""

import numpy as np
import pytest
import torch

from engine.images import load_image_file
from engine.joint_colour import COLOUR_BINS
from engine.lit_model import build_lit_model
from engine.look_head import LookHead
from engine.look_training import LookConfig, train_look_head
from engine.model_loading import load_encoder
from engine.registry import resolve_model
from engine.settings import ModelSettings
from engine.shopper_views import shopper_view
from engine.training import TrainConfig, TrainingPair, retrieval_metrics, split_validation, train_lit_heads
from engine.trunk_top import feature_maps
from engine.trunk_tuning import category_batches, photo_views
from tests.conftest import FASHION, pick_products


def test_training_on_a_small_sample_learns_and_its_heads_load(tmp_path, fashion_frame):
    rows = pick_products(fashion_frame, 8, ["Shirts", "Watches", "Sports Shoes", "Handbags", "Sunglasses",
                                            "Jeans", "Flip Flops", "Tshirts"])
    pairs = [TrainingPair(str(r.id), FASHION / r.image, r.title, r.category) for r in rows.itertuples()]
    out = tmp_path / "heads.pt"
    report = train_lit_heads(pairs, out, TrainConfig(epochs=12, batch_size=32, val_fraction=0.25, views=2,
                                                     unlocked_blocks=1, category_run=4, second_head=False),
                             progress=False)
    assert report.train_products == 48 and report.val_products == 16 and report.tune_products == 5
    losses = [row["loss"] for row in report.history]
    assert losses[-1] < losses[0]
    assert 0.0 <= report.val_recall_at_1 <= report.val_recall_at_10 <= 1.0
    assert report.history[report.best_epoch - 1]["mrr"] == max(row["mrr"] for row in report.history)

    checkpoint = torch.load(out, weights_only=True)
    tuned = [name for name in checkpoint["state_dict"] if name.startswith("visual.trunk.")]
    # The trunk's last block and head convolution are trained with the heads; nothing else is.
    assert tuned and all(name.startswith(("visual.trunk.blocks.6.", "visual.trunk.conv_head", "visual.trunk.bn2"))
                         for name in tuned)
    assert all(name.startswith(("visual.head", "text.proj", "logit_scale", "visual.trunk.", "look_proj", "colour_proj"))
               for name in checkpoint["state_dict"])
    # The look tower's pooled features are the joint photo vector's second input (engine.joint_look),
    # the photo's colour histogram its third (engine.joint_colour).
    assert checkpoint["state_dict"]["look_proj.weight"].shape == (256, 1280) and checkpoint["metadata"]["joint_look"]
    assert checkpoint["state_dict"]["colour_proj.weight"].shape == (256, COLOUR_BINS)
    assert checkpoint["metadata"]["joint_colour"]
    look = checkpoint["metadata"]["look_head"]  # the appearance head is trained too, on the same split
    assert look["report"]["val_products"] == 16 and {"r1", "r5"} <= set(look["report"]["after"])
    encoder = load_encoder(ModelSettings(weights=out))
    assert encoder.info.name == "snapshop-lit-fashion" and encoder.info.dim == 256
    assert isinstance(encoder.model.look_head, LookHead) and encoder.info.look_dim == look["dim"] == 1280
    shipped = load_encoder(ModelSettings())
    assert encoder.info.version != shipped.info.version  # other heads, another model version


def test_snapshop_train_makes_two_joint_heads_and_keeps_a_given_appearance_head(tmp_path, fashion_frame):
    """The one command of a new model version, heads only: each joint head's photo vector learns
    from the image tower and the look tower side by side (engine.joint_look) and the photo's
    colours, the second also from the image trunk's stages (engine.joint_heads); the joint vector
    is both heads' side by side, so a title's score is the mean of the heads' cosines; and
    ``--look-from`` carries the shipped appearance head over unchanged, so appearance vectors stay
    what they were."""
    import subprocess
    import sys

    from tests.conftest import REPO, write_catalog

    rows = pick_products(fashion_frame, 6, ["Shirts", "Watches", "Handbags", "Jeans", "Sunglasses", "Flip Flops"])
    catalog = write_catalog(rows, tmp_path)
    shipped = resolve_model("snapshop-lit-fashion").weights_path
    out = tmp_path / "heads.pt"
    result = subprocess.run([sys.executable, "-m", "snapshop", "train", "--catalog", str(catalog), "--out", str(out),
                             "--epochs", "3", "--look-from", str(shipped)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "trained on 27 products, validated on 9" in result.stdout
    assert "joint head 1 alone" in result.stdout and "joint head 2 alone" in result.stdout
    checkpoint, source = torch.load(out, weights_only=True), torch.load(shipped, weights_only=True)
    state = checkpoint["state_dict"]
    assert not any(name.startswith("visual.trunk.") for name in state)  # heads only
    assert state["look_proj.weight"].shape == (256, 1280)
    assert state["colour_proj.weight"].shape == (256, COLOUR_BINS)
    # The second head: Lite0 pooled and its seven stages (784), Lite1, the colours, its own text side.
    assert checkpoint["metadata"]["joint_heads"] == [{"look": True, "colour": True, "stages": True}]
    assert state["joint_heads.0.image.weight"].shape == (256, 1280 + 784)
    assert state["joint_heads.0.look.weight"].shape == (256, 1280)
    assert state["joint_heads.0.colour.weight"].shape == (256, COLOUR_BINS)
    assert state["joint_heads.0.text.weight"].shape == (256, 384)
    assert state["joint_heads.0.image.weight"].dtype == torch.float16  # half on disk: a small file
    heads = checkpoint["metadata"]["report"]["heads"]
    assert len(heads) == 2 and all(1 <= head["best_epoch"] <= 3 for head in heads)
    for name, tensor in source["look_head"].items():
        torch.testing.assert_close(checkpoint["look_head"][name], tensor)

    encoder = load_encoder(ModelSettings(weights=out))
    assert encoder.info.dim == 512 and len(encoder.model.joint_heads) == 1
    photos = [load_image_file(FASHION / image) for image in rows.image[:3]]
    joint, look = encoder.encode_photos(photos)
    _, shipped_look = load_encoder(ModelSettings()).encode_photos(photos)
    np.testing.assert_allclose(look, shipped_look, atol=1e-4)
    np.testing.assert_allclose(encoder.encode_images(photos), joint, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(joint, axis=1), 1.0, atol=1e-5)
    # Each half is one head's unit vector over sqrt(2): a title's score is the mean of two cosines.
    titles = encoder.encode_texts(list(rows.title[:3]))
    halves = [(titles[:, i * 256:(i + 1) * 256] * np.sqrt(2)) @ (joint[:, i * 256:(i + 1) * 256] * np.sqrt(2)).T
              for i in range(2)]
    np.testing.assert_allclose(titles @ joint.T, (halves[0] + halves[1]) / 2, atol=1e-5)
    assert np.abs(halves[0] - halves[1]).max() > 1e-3  # two heads, not one twice
    second = encoder.model.joint_heads[0]
    second.image.weight.data[:, 1280:] = 0  # without the trunk stages' part the second half moves
    without_stages = encoder.encode_photos(photos)[0]
    assert np.abs(without_stages[:, 256:] - joint[:, 256:]).max() > 1e-3
    np.testing.assert_allclose(without_stages[:, :256], joint[:, :256], atol=1e-6)
    encoder.model.colour_proj.weight.data.zero_()  # without the colours' part the vectors move
    without_colour = encoder.encode_photos(photos)[0]
    assert np.abs(without_colour - without_stages).max() > 1e-3
    encoder.model.look_proj.weight.data.zero_()  # without the look tower's part the vectors move
    assert np.abs(encoder.encode_photos(photos)[0] - without_colour).max() > 1e-3


def test_a_rerun_reads_the_kept_features_and_trains_the_same_heads(tmp_path, fashion_frame, monkeypatch):
    """``features_cache``: the second run on the same pairs makes no photo pass and gives the same
    heads and report; another set of pairs is another key (no stale features)."""
    rows = pick_products(fashion_frame, 4, ["Shirts", "Watches", "Handbags", "Jeans"])
    pairs = [TrainingPair(str(r.id), FASHION / r.image, r.title, r.category) for r in rows.itertuples()]
    config, cache = TrainConfig(epochs=2, batch_size=8, views=1), tmp_path / "features"
    first = train_lit_heads(pairs, tmp_path / "a.pt", config, progress=False, look=None, features_cache=cache)
    assert len(list(cache.glob("features-*.pt"))) == 1

    def no_photo_pass(*args, **kwargs):
        raise AssertionError("the photos were read again although their features were kept")

    monkeypatch.setattr("engine.training.cached_lower_features", no_photo_pass)
    again = train_lit_heads(pairs, tmp_path / "b.pt", config, progress=False, look=None, features_cache=cache)
    assert (again.val_recall_at_10, again.val_mrr, again.heads) == (first.val_recall_at_10, first.val_mrr, first.heads)
    a, b = (torch.load(tmp_path / name, weights_only=True)["state_dict"] for name in ("a.pt", "b.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    with pytest.raises(AssertionError, match="read again"):
        train_lit_heads(pairs[:-1], tmp_path / "c.pt", config, progress=False, look=None, features_cache=cache)


def test_the_second_joint_head_refuses_an_unlocked_trunk_top(tmp_path, fashion_frame):
    """It reads the trunk's stages, which an unlocked top would change under it: refused, saying
    what to do, before any photo is read."""
    rows = pick_products(fashion_frame, 2, ["Shirts", "Watches"])
    pairs = [TrainingPair(str(r.id), FASHION / r.image, r.title, r.category) for r in rows.itertuples()]
    with pytest.raises(ValueError, match="heads only"):
        train_lit_heads(pairs, tmp_path / "x.pt", TrainConfig(unlocked_blocks=1), progress=False, look=None)


def test_teaching_the_joint_side_leaves_the_appearance_branch_as_it_was(tmp_path, fashion_frame):
    """The trunk's top is trained for the joint space only: a photo's appearance feature map (the
    model's own look trunk, EfficientNet-Lite1) is the untrained one's, its joint one is not."""
    rows = pick_products(fashion_frame, 4, ["Shirts", "Watches", "Handbags", "Jeans"])
    pairs = [TrainingPair(str(r.id), FASHION / r.image, r.title, r.category) for r in rows.itertuples()]
    out = tmp_path / "heads.pt"
    train_lit_heads(pairs, out, TrainConfig(epochs=3, batch_size=8, views=1, unlocked_blocks=1,
                                            trunk_learning_rate=1e-2, second_head=False),
                    progress=False, look=None)
    spec = resolve_model("snapshop-lit-fashion")
    tuned, preprocess, _, _ = build_lit_model(spec.config_path, out)
    untrained, _, _, _ = build_lit_model(spec.config_path, None)
    photos = [load_image_file(pair.image_path) for pair in pairs[:4]]
    pixels = torch.stack([preprocess(photo) for photo in photos])
    look_pixels = torch.stack([tuned.look_preprocess(photo) for photo in photos])
    with torch.inference_mode():
        joint, _ = feature_maps(tuned, pixels)
        original = untrained.visual.trunk.forward_features(pixels)
        look = tuned.look_trunk.forward_features(look_pixels)
        original_look = untrained.look_trunk.forward_features(look_pixels)
    torch.testing.assert_close(look, original_look)
    assert (joint - original).abs().max() > 1e-3


def test_category_batches_put_products_of_one_kind_side_by_side():
    categories = ["a"] * 10 + ["b"] * 10 + [None] * 4
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(categories), generator=generator)
    batches = category_batches(order, categories, batch_size=8, run=4, generator=generator)
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(len(categories)))  # every product once
    runs = [flat[i : i + 4] for i in range(0, 8, 4)]  # the first runs are whole: one kind each
    assert all(len({categories[i] for i in run}) == 1 for run in runs)
    assert torch.equal(torch.cat(category_batches(order, categories, 8, 1, generator)), order)


def test_the_photo_pass_in_chunks_gives_the_whole_batchs_features():
    """Training's photo pass runs a CPU batch in chunks of 4 (page faults, caches): the features
    are those of the batch in one pass."""
    from engine.trunk_tuning import _in_chunks

    model, _, _, _ = build_lit_model(resolve_model("snapshop-lit-fashion").config_path, heads_path=None)
    trunk = model.visual.trunk.eval()
    pixels = torch.randn(10, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole = trunk.forward_features(pixels)
        chunked = _in_chunks(trunk.forward_features, pixels)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-4)


def test_photo_views_are_the_photo_its_mirror_and_crops():
    import random

    from PIL import Image, ImageOps

    photo = Image.new("RGB", (224, 224), (255, 255, 255))
    photo.paste((200, 30, 30), (20, 20, 80, 200))  # a red product at the left
    views = photo_views(photo, 4, random.Random(0))
    assert views[0] is photo and ImageOps.mirror(views[1]).tobytes() == photo.tobytes()
    assert all(view.width * view.height < 224 * 224 for view in views[2:])


def test_the_validation_split_is_deterministic_and_disjoint():
    ids = [str(i) for i in range(1000)]
    first, again = split_validation(ids, 0.25, seed=0), split_validation(ids, 0.25, seed=0)
    assert first == again and len(first) == 250
    assert split_validation(ids, 0.25, seed=1) != first


def test_retrieval_metrics_match_a_brute_force_count():
    similarity = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    # ranks of the diagonal: 1, 2 (0.8 beats 0.5), 1
    metrics = retrieval_metrics(similarity)
    assert metrics["r1"] == round(2 / 3, 4)
    assert metrics["mrr"] == round((1 + 0.5 + 1) / 3, 4)
    assert metrics["r10"] == 1.0


def test_the_appearance_head_learns_to_ignore_what_shopper_photos_change():
    """Features of shopper views differ from the catalog's along a few nuisance directions (the
    background, the light); the head learns to ignore them and held-out products are found."""
    generator = torch.Generator().manual_seed(0)
    width, products = 64, 600
    catalog = torch.randn(products, width, generator=generator).abs()
    nuisance = torch.randn(4, width, generator=generator)
    views = catalog + 3.0 * torch.randn(products, 4, generator=generator) @ nuisance
    train, val = slice(0, 400), slice(400, None)
    head, report = train_look_head(catalog[train], views[train], catalog[val], views[val],
                                   LookConfig(epochs=40, batch_size=100, identity_pull=1e-4), progress=False)
    assert report["val_products"] == 200
    assert report["after"]["r1"] >= report["before"]["r1"] + 0.2, report
    assert head.dim == width


def test_an_untrained_appearance_head_is_the_pooled_features_themselves():
    head = LookHead(32)
    pooled = torch.rand(5, 32)
    out = torch.nn.functional.normalize(head(pooled), dim=-1)
    torch.testing.assert_close(out, torch.nn.functional.normalize(pooled, dim=-1))


def test_shopper_views_move_the_product_off_the_studio_backdrop():
    import random

    import numpy as np
    from PIL import Image

    photo = Image.new("RGB", (200, 260), (255, 255, 255))
    photo.paste((20, 40, 160), (60, 60, 140, 200))  # a blue product on white paper
    views = [np.asarray(shopper_view(photo, random.Random(seed)).convert("RGB")) for seed in range(6)]
    assert all(v.ndim == 3 and v.shape[2] == 3 for v in views)
    # The white backdrop is replaced: no view is mostly white any more.
    assert all((v.min(axis=2) > 240).mean() < 0.5 for v in views)
    again = np.asarray(shopper_view(photo, random.Random(0)))
    assert np.array_equal(again, views[0]) and not np.array_equal(views[0], views[1])
