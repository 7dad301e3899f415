"""The image trunk cut in two: the lower blocks every photo vector shares, and a top that a
training run may unlock.

``snapshop train`` fine-tunes the last MBConv block(s) and the 1x1 head convolution of the
EfficientNet trunk against the titles (``engine.trunk_tuning``); what it changes is stored in the
heads checkpoint under the trunk's own tensor names. The appearance (``look``) branch keeps the
trunk's original top, so teaching the joint space about titles does not move appearance vectors:
both tops read one pass of the shared lower blocks (``feature_maps``).

This module is what serving loads; nothing here trains.
"""

from __future__ import annotations

import copy

import torch


def trunk_blocks(trunk: torch.nn.Module) -> list[torch.nn.Module]:
    """The trunk's MBConv blocks in order, stages flattened (EfficientNet-Lite0: 16)."""
    return [block for stage in trunk.blocks for block in stage]


class TrunkTop(torch.nn.Module):
    """The last ``depth`` blocks of an EfficientNet trunk and its head convolution: input the
    lower blocks' feature map, output the trunk's last feature map (1280 x 7 x 7 on Lite0)."""

    def __init__(self, trunk: torch.nn.Module, depth: int, share: bool = False):
        super().__init__()
        take = (lambda module: module) if share else copy.deepcopy
        self.depth = depth
        blocks = trunk_blocks(trunk)
        self.blocks = torch.nn.Sequential(*[take(block) for block in blocks[len(blocks) - depth :]])
        self.conv_head = take(trunk.conv_head)
        self.bn2 = take(trunk.bn2)

    def forward(self, lower: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(lower)))


def lower_features(trunk: torch.nn.Module, pixels: torch.Tensor, depth: int) -> torch.Tensor:
    """The trunk's feature map below its last ``depth`` blocks."""
    x = trunk.bn1(trunk.conv_stem(pixels))
    blocks = trunk_blocks(trunk)
    for block in blocks[: len(blocks) - depth]:
        x = block(x)
    return x


def feature_maps(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trunk's last feature map for the joint space and for the appearance branch.

    One map for both unless the model carries the trunk's original top for appearance
    (``model.look_top``, set where training unlocked the top): then the lower blocks run once
    and each top reads them (on Lite0 one block + head convolution: ~50 of ~400 MFLOPs a photo).
    """
    trunk = model.visual.trunk
    look_top = getattr(model, "look_top", None)
    if look_top is None:
        feature_map = trunk.forward_features(pixels)
        return feature_map, feature_map
    lower = lower_features(trunk, pixels, look_top.depth)
    joint_top = TrunkTop(trunk, look_top.depth, share=True)
    return joint_top(lower), look_top(lower)
