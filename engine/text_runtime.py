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
on disk, keyed by the model's tag and the exporting libraries' versions, so only the first start
of a model pays the export (about 2-3 s).
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


class OnnxTextTower:
    """The text tower's pooled output (before its head) for token ids and their mask, in ONNX Runtime."""

    def __init__(self, graph: bytes | str, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One query's text is too little work to split (engine.encoder._threads_for): one thread,
        # and concurrent searches each run their own.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

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
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import onnxruntime
    except ImportError as e:
        log.info("text queries run in torch: %s (pip install onnxruntime onnx)", e)
        return None
    key = hashlib.sha256(
        f"{model_tag}|torch {torch.__version__}|ort {onnxruntime.__version__}".encode()
    ).hexdigest()[:16]
    path = (cache_dir or _default_cache()) / f"text-tower-{key}.onnx"
    try:
        if path.is_file():
            return OnnxTextTower(str(path))
        graph = export_text_tower(tower, tokenizer)
        _write_atomically(path, graph)
        return OnnxTextTower(graph)
    except Exception as e:  # the exporter and runtime raise many kinds; torch still serves
        log.warning("text queries run in torch: the ONNX text tower could not be made (%s)", str(e)[:300])
        return None


def export_text_tower(tower: torch.nn.Module, tokenizer) -> bytes:
    """The tower's transformer and pooling as an fp32 ONNX graph (any batch, any length)."""
    exported = _Pooled(copy.deepcopy(tower).float()).eval()
    tokens = tokenizer(["a red shirt for men"])
    mask = (tokens != tower.config.pad_token_id).long()
    graph = io.BytesIO()
    # The tracer warns that the mask's padding checks become constants: the graph is checked on
    # padded batches of unlike lengths (tests/test_text_runtime.py), so they are not shown.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exported, (tokens, mask), graph, input_names=["input_ids", "attention_mask"], output_names=["pooled"],
            dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
                          "pooled": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    return graph.getvalue()


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snapshop"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (two processes may start at once); an
    unwritable cache only costs the next start another export."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    except OSError as e:
        log.info("the exported text tower is not kept (%s): the next start exports it again", e)
