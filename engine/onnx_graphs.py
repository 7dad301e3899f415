"""Parts of the loaded model exported to ONNX Runtime once and kept on disk: what the text tower
(``engine.text_runtime``) and the image trunks (``engine.image_runtime``) of a query run in.

A graph is exported from the model as loaded (fine-tuned or ``snapshop train``ed weights, batch
norms folded: what torch would run), so the only way to get another model's graph is another key:
the model's tag (its version names its exact heads), the part's name, this module's graph format
and the exporting and running libraries' versions. Only the first start of a model pays the export
(2-3 s a part). A cached graph that does not load (a torn or corrupt file) is exported again, not
fatal; where ONNX Runtime or ``onnx`` is missing or the export fails, the caller serves in torch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Bumped when what a part's graph computes changes without the model's tag changing.
GRAPH_FORMAT = 1
# The opset torch's TorchScript exporter writes well for both towers (transformer and MBConv).
OPSET = 17


def missing_runtime() -> str | None:
    """Why ONNX Runtime cannot serve here (a package missing), or None when it can."""
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e} (pip install onnxruntime onnx)"
    return None


def session(graph: bytes | str, threads: int = 1):
    """An ONNX Runtime CPU session of ``graph`` (bytes or a file path), all graph optimisations on.

    One thread by default: a query is too little work to split (``engine.encoder._threads_for``),
    and concurrent searches each run their own ``run`` on the one session (it is thread-safe).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def cached_session(part: str, model_tag: str, cache_dir: Path | None, export: Callable[[], bytes]):
    """The session of the model's ``part`` ("text-tower", "joint-trunk", ...): read from
    ``cache_dir`` (default ``~/.cache/snapshop``) where kept, else made by ``export`` and kept; None,
    with the reason logged, where it cannot be made (the caller serves in torch)."""
    missing = missing_runtime()
    if missing:
        log.info("%s runs in torch: %s", part, missing)
        return None
    path = graph_path(part, model_tag, cache_dir)
    if path.is_file():
        try:
            return session(str(path))
        except Exception as e:  # a torn or corrupt file: onnxruntime raises its own kinds
            log.warning("the kept %s graph %s does not load (%s): exporting it again", part, path, str(e)[:200])
    try:
        graph = export()
        made = session(graph)
    except Exception as e:  # the exporter and runtime raise many kinds; torch still serves
        log.warning("%s runs in torch: its ONNX graph could not be made (%s)", part, str(e)[:300])
        return None
    _write_atomically(path, graph)
    return made


def graph_path(part: str, model_tag: str, cache_dir: Path | None) -> Path:
    """Where the graph of the model's ``part`` is kept."""
    import onnxruntime

    key = hashlib.sha256(
        f"{model_tag}|{part}|format {GRAPH_FORMAT}|torch {torch.__version__}|ort {onnxruntime.__version__}".encode()
    ).hexdigest()[:16]
    return (cache_dir or _default_cache()) / f"{part}-{key}.onnx"


def export_graph(module: torch.nn.Module, example: tuple, input_names: list[str], output_names: list[str],
                 dynamic_axes: dict) -> bytes:
    """``module`` traced on ``example`` as an ONNX graph (opset ``OPSET``), as bytes."""
    graph = io.BytesIO()
    # The tracer warns about Python values it turns into constants (the text mask's padding
    # checks): each graph is checked against torch on inputs unlike its example (tests), so they
    # are not shown.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, graph, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
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
        log.info("the exported graph is not kept (%s): the next start exports it again", e)
