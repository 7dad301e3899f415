"""`snapshop train` on a small sample: it learns, reports on validation, and its heads load."""

import torch

from engine.encoder import load_encoder
from engine.settings import ModelSettings
from engine.training import TrainConfig, TrainingPair, retrieval_metrics, split_validation, train_lit_heads
from tests.conftest import FASHION, pick_products


def test_training_on_a_small_sample_learns_and_its_heads_load(tmp_path, fashion_frame):
    rows = pick_products(fashion_frame, 8, ["Shirts", "Watches", "Sports Shoes", "Handbags", "Sunglasses",
                                            "Jeans", "Flip Flops", "Tshirts"])
    pairs = [TrainingPair(str(r.id), FASHION / r.image, r.title) for r in rows.itertuples()]
    out = tmp_path / "heads.pt"
    report = train_lit_heads(pairs, out, TrainConfig(epochs=12, batch_size=32, val_fraction=0.25), progress=False)
    assert report.train_products == 48 and report.val_products == 16
    losses = [row["loss"] for row in report.history]
    assert losses[-1] < losses[0]
    assert 0.0 <= report.val_recall_at_1 <= report.val_recall_at_10 <= 1.0

    checkpoint = torch.load(out, weights_only=True)
    assert all(name.startswith(("visual.head", "text.proj", "logit_scale")) for name in checkpoint["state_dict"])
    encoder = load_encoder(ModelSettings(weights=out))
    assert encoder.info.name == "snapshop-lit-fashion" and encoder.info.dim == 256
    shipped = load_encoder(ModelSettings())
    assert encoder.info.version != shipped.info.version  # other heads, another model version


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
