"""A query's text through ONNX Runtime: the text tower's transformer and pooling, exported once.

A shopper's text query is a few tokens. In torch, MiniLM-L6's 36 linear layers then cost far more
than their arithmetic: each call re-lays out its weights for the CPU's matrix units and walks
Python between layers. ONNX Runtime runs the same graph with its weights packed once: one
thread, each query through both in turn, a text query's two vectors took 0.71x the time of the
bf16 torch tower's on a loaded machine (docs/scale.md, "Text queries in ONNX Runtime"). The
vectors are the fp32 tower's (cosine to torch fp32 above 0.99999, tested; the bf16 tower's 0.9996).

Only query-sized batches go this way (``engine.encoder.QUERY_BATCH``): a catalog's titles in
batches of 32 keep the torch tower on all its threads.

The graph is exported from the loaded tower (so fine-tuned text weights are what runs) and kept
on disk by ``engine.onnx_graphs``, so only the first start of a model pays the export (about 2-3 s).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from engine import onnx_graphs


class OnnxTextTower:
    """The text tower's pooled output (before its head) for token ids and their mask, in ONNX Runtime."""

    def __init__(self, session):
        self.session = session  # engine.onnx_graphs.session: one thread, shared by concurrent searches

    def pooled(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(n, width) fp32 pooled outputs of token ids ``tokens`` with attention ``mask`` (both (n, length))."""
        inputs = {"input_ids": tokens.to(torch.int64).numpy(), "attention_mask": mask.to(torch.int64).numpy()}
        return torch.from_numpy(np.ascontiguousarray(self.session.run(None, inputs)[0]))


class _Pooled(torch.nn.Module):
    """The tower's transformer and pooler as one module: what is exported."""

    def __init__(self, tower: torch.nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.tower.transformer(input_ids=input_ids, attention_mask=attention_mask)
        return self.tower.pooler(hidden, attention_mask)


def onnx_text_tower(tower: torch.nn.Module, tokenizer, model_tag: str, cache_dir: Path | None) -> OnnxTextTower | None:
    """The text ``tower`` (an open_clip HF tower) as an ``OnnxTextTower``, exported on first use and
    kept under ``cache_dir``; None, with the reason logged, where ONNX Runtime or the exporter's
    ``onnx`` package is missing or the export fails (the torch tower then serves)."""
    made = onnx_graphs.cached_session("text-tower", model_tag, cache_dir, lambda: export_text_tower(tower, tokenizer))
    return OnnxTextTower(made) if made is not None else None


def export_text_tower(tower: torch.nn.Module, tokenizer) -> bytes:
    """The tower's transformer and pooling as an fp32 ONNX graph (any batch, any length)."""
    exported = _Pooled(copy.deepcopy(tower).float()).eval()
    tokens = tokenizer(["a red shirt for men"])
    mask = (tokens != tower.config.pad_token_id).long()
    # The mask's padding checks become constants in the trace: the graph is checked on padded
    # batches of unlike lengths (tests/test_text_runtime.py).
    return onnx_graphs.export_graph(
        exported, (tokens, mask), ["input_ids", "attention_mask"], ["pooled"],
        {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}, "pooled": {0: "batch"}},
    )
