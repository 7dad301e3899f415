"""A query's text in ONNX Runtime (engine.text_runtime): the same vectors as the torch tower, the
graph exported once and read back on the next start."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine.errors import ModelWeightsMissing
from engine.model_loading import load_encoder
from engine.settings import ModelSettings
from engine.text_runtime import onnx_text_tower

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

QUERIES = ["red dress", "men black leather watch", "sneakers", "kids blue denim jeans with a print",
           "Puma Men Slick 3HD Yellow Black Watches"]


def _fp32_sentences(encoder, texts: list[str]) -> np.ndarray:
    """The text tower in fp32 torch, one text at a time: the reference."""
    tower = copy.deepcopy(encoder.hf_text_tower()).float()
    rows = []
    with torch.inference_mode():
        for text in texts:
            tokens = encoder.tokenizer([text])
            mask = (tokens != tower.config.pad_token_id).long()
            rows.append(tower.pooler(tower.transformer(input_ids=tokens, attention_mask=mask), mask)[0])
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1).numpy()


@pytest.fixture(scope="module")
def runtime_encoder(tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx-cache")
    return load_encoder(ModelSettings(batch_size=32, cache_dir=cache, text_runtime="onnxruntime")), cache


def test_a_query_text_runs_in_onnx_runtime_with_the_fp32_towers_vectors(runtime_encoder):
    encoder, _ = runtime_encoder
    assert encoder.text_runtime is not None
    got = np.stack([encoder.encode_sentences([text])[0] for text in QUERIES])
    reference = _fp32_sentences(encoder, QUERIES)
    assert (got * reference).sum(axis=1).min() > 0.99999
    pair = encoder.encode_sentences(QUERIES[2:4])  # two texts of unlike length: one padded
    assert (pair * reference[2:4]).sum(axis=1).min() > 0.99999


def test_query_and_catalog_title_vectors_stay_in_one_space(runtime_encoder):
    # A catalog's titles go through torch in batches, queries through ONNX Runtime one at a time:
    # the same title must land on (nearly) the same joint-space vector either way.
    encoder, _ = runtime_encoder
    batched = encoder.encode_texts(QUERIES * 2)[: len(QUERIES)]
    single = np.stack([encoder.encode_texts([text])[0] for text in QUERIES])
    assert (batched * single).sum(axis=1).min() > 0.999


def test_the_exported_graph_is_kept_and_read_back(runtime_encoder, monkeypatch):
    encoder, cache = runtime_encoder
    kept = list(cache.glob("text-tower-*.onnx"))
    assert len(kept) == 1 and kept[0].stat().st_size > 10_000_000

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the graph was kept")

    monkeypatch.setattr("engine.text_runtime.export_text_tower", no_export)
    again = onnx_text_tower(encoder.hf_text_tower(), encoder.tokenizer, encoder.info.tag, cache)
    assert again is not None
    tokens = encoder.tokenizer(["red dress"])
    mask = (tokens != encoder.hf_text_tower().config.pad_token_id).long()
    np.testing.assert_allclose(again.pooled(tokens, mask).numpy(),
                               encoder.text_runtime.pooled(tokens, mask).numpy(), atol=1e-6)


def test_torch_serves_when_asked_or_when_the_runtime_is_missing(monkeypatch, tmp_path):
    assert load_encoder(ModelSettings(text_runtime="torch")).text_runtime is None
    monkeypatch.setattr("engine.text_runtime.export_text_tower",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("exporter broke")))
    assert load_encoder(ModelSettings(cache_dir=tmp_path, text_runtime="auto")).text_runtime is None
    with pytest.raises(ModelWeightsMissing, match="TEXT_RUNTIME=onnxruntime"):
        load_encoder(ModelSettings(cache_dir=tmp_path, text_runtime="onnxruntime"))
