"""The image trunks through ONNX Runtime on a CPU: the joint trunk (EfficientNet-Lite0) and the
appearance trunk (Lite1), each exported once.

EfficientNet is mostly depthwise convolutions and small 1x1 ones: in torch on a CPU each costs a
layout pass and a dispatch far above its arithmetic. ONNX Runtime fuses each convolution with its
activation and runs them in its blocked layout. Measured here, one thread, each of 36 query photos
(20 grocery shopper photos, 16 fashion) through both in turn: both trunks on their regions (Lite0
on 3, Lite1 on 2) p50 99 ms in torch (batch norms folded, channels-last: as served), 68 ms in ONNX
Runtime; 152 ms with 2 ORT threads (the cores are shared with SIFT and the other trunk), 102 ms
calling it once per region instead of once per trunk. The feature maps are the torch trunks' (cosine
of the pooled vectors above 0.99999, tested).

A catalog's photos at ingest go this way too (chunks of 4 photos, one thread each: 488 -> 274 ms a
chunk, same run; docs/scale.md), so a shop's stored vectors and its shoppers' query vectors come
from the same graphs. The graphs are exported from the loaded trunks (so ``snapshop train``ed
weights and folded batch norms are what runs) and kept by ``engine.onnx_graphs``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine import onnx_graphs
from engine.joint_heads import reads_stages, trunk_with_stages
from engine.trunk_top import feature_maps


class OnnxTrunks:
    """The last feature maps of the joint trunk and of the look tower's trunk, in ONNX Runtime."""

    def __init__(self, joint, look):
        self.joint = joint  # engine.onnx_graphs.session of export_joint_trunk's graph
        self.look = look  # and of export_look_trunk's

    def joint_maps(self, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The joint trunk's last feature map of (n, 3, h, w) fp32 ``pixels`` (the model's preprocess),
        and its stages' outputs average-pooled where a joint head reads them (engine.joint_heads;
        None where not): one pass gives both."""
        outputs = self.joint.run(None, {"pixels": pixels})
        return torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1]) if len(outputs) > 1 else None

    def look_map(self, pixels: np.ndarray) -> torch.Tensor:
        """The look tower's trunk's last feature map of ``pixels`` (the look tower's preprocess)."""
        return torch.from_numpy(self.look.run(None, {"pixels": pixels})[0])


def onnx_trunks(model: torch.nn.Module, preprocess, model_tag: str, cache_dir: Path | None) -> OnnxTrunks | None:
    """``model``'s two trunks as ``OnnxTrunks``, exported on first use and kept under ``cache_dir``;
    None where the model has no look tower of its own (its query photos go through one trunk, in
    torch) or a graph cannot be made (the reason logged; torch serves)."""
    if getattr(model, "look_trunk", None) is None:
        return None
    joint = onnx_graphs.cached_session("joint-trunk", model_tag, cache_dir,
                                       lambda: export_joint_trunk(model, preprocess))
    if joint is None:
        return None
    look = onnx_graphs.cached_session("look-trunk", model_tag, cache_dir, lambda: export_look_trunk(model))
    return OnnxTrunks(joint, look) if look is not None else None


class _JointMap(torch.nn.Module):
    """What ``engine.trunk_top.feature_maps`` reads of a model (its image trunk and any look top),
    copied in fp32: its joint-space feature map is what is exported, with the trunk's stages
    pooled beside it where a joint head reads them (``stages``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.visual = torch.nn.Module()
        self.visual.trunk = _fp32_copy(model.visual.trunk)
        look_top = getattr(model, "look_top", None)
        self.look_top = _fp32_copy(look_top) if look_top is not None else None
        self.stages = reads_stages(model)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.stages:  # heads only (engine.joint_heads): no trained top
            return trunk_with_stages(self.visual.trunk, pixels)
        return feature_maps(self, pixels)[0]


class _LookMap(torch.nn.Module):
    def __init__(self, trunk: torch.nn.Module):
        super().__init__()
        self.trunk = _fp32_copy(trunk)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(pixels)


def export_joint_trunk(model: torch.nn.Module, preprocess) -> bytes:
    """The joint trunk's feature map of a batch of photos (and its stages pooled, where a joint
    head reads them), as an fp32 ONNX graph."""
    module = _JointMap(model)
    return _export(module, preprocess, ["map", "stages"] if module.stages else ["map"])


def export_look_trunk(model: torch.nn.Module) -> bytes:
    """The look tower's trunk's feature map of a batch of photos, as an fp32 ONNX graph."""
    return _export(_LookMap(model.look_trunk), model.look_preprocess, ["map"])


def _export(module: torch.nn.Module, preprocess, outputs: list[str]) -> bytes:
    # The graph's side is the preprocess's (224 px Lite0, 240 px Lite1): fixed, so ONNX Runtime
    # plans every layer's shape once; the batch (a photo's regions) varies.
    example = torch.stack([preprocess(image) for image in _blank_photos(2)])
    return onnx_graphs.export_graph(module, (example,), ["pixels"], outputs,
                                    {"pixels": {0: "n"}, **{name: {0: "n"} for name in outputs}})


def _fp32_copy(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).float().to(memory_format=torch.contiguous_format).eval()


def _blank_photos(count: int) -> Sequence[Image.Image]:
    return [Image.new("RGB", (320, 240), (128, 128, 128)) for _ in range(count)]
