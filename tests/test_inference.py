"""Inference apart from training: serving loads no training code, and no cache keeps an encoder alive."""

import gc
import os
import subprocess
import sys
import weakref

import torch

from engine.encoder import Encoder
from engine.model_info import ModelInfo
from tests.conftest import REPO


class CountingTextModel(torch.nn.Module):
    """A text tower small enough to make and drop in a test: counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return tokens.float() + 1.0


def tokenize(texts):
    return torch.tensor([[len(text), 1, 0, 0] for text in texts])


def test_text_caches_do_not_keep_an_encoder_alive():
    model = CountingTextModel()
    encoder = Encoder(model, None, tokenize, ModelInfo("tiny", "1", 4), torch.device("cpu"), 8)
    first = encoder.encode_text("black dress")
    again = encoder.encode_text("black dress")
    assert model.calls == 1 and (first == again).all()  # a repeated query is not encoded again
    encoder.encode_text("red shoes")
    assert model.calls == 2
    gone = weakref.ref(encoder)
    del encoder, first, again
    gc.collect()
    assert gone() is None


def test_serving_loads_no_training_code():
    probe = ("import sys\nfrom api.app import create_app\nfrom engine.model_loading import load_encoder\n"
             "from engine.settings import ModelSettings\nfrom engine.search import Searcher\ncreate_app()\n"
             "load_encoder(ModelSettings())\n"
             "print(sorted(m for m in ('engine.training', 'engine.look_training', 'engine.shopper_views') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_serving_folds_batchnorm_and_finds_the_same_vectors(encoder):
    """Folding the trunks' BatchNorms into their convolutions (engine.batchnorm_folding) changes
    no vector a shopper's photo gets: compared with the model as training builds it, real weights."""
    import numpy as np

    from engine.images import load_image_file
    from engine.lit_model import build_lit_model
    from engine.regions import search_regions
    from engine.registry import resolve_model
    from tests.conftest import GROCERY, require

    spec = resolve_model(encoder.info.name)
    model, preprocess, tokenizer, _ = build_lit_model(spec.config_path, spec.weights_path)
    unfolded = Encoder(model.to(memory_format=torch.channels_last), preprocess, tokenizer, encoder.info,
                       torch.device("cpu"), 8)
    photos = sorted((require(GROCERY) / "queries").glob("*.jpg"))[:: 200][:4]
    for path in photos:
        photo = load_image_file(path)
        regions = [region.cut(photo) for region in search_regions(None)]
        joint, look = encoder.encode_photos(regions)
        joint_ref, look_ref = unfolded.encode_photos(regions)
        assert np.min(np.sum(joint * joint_ref, axis=1)) > 0.9999, path.name
        assert np.min(np.sum(look * look_ref, axis=1)) > 0.9999, path.name
    served = [m for m in encoder.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not served, f"{len(served)} BatchNorms left unfolded"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # what training keeps
