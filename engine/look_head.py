"""The appearance head: a shopper's photo of a product against the shop's studio photos.

The image trunk's last feature map, GeM-pooled, already tells one product from its look-alikes
better than the joint space does; a linear head trained on the shop's own catalog then makes it
ignore what differs between a studio shot and a shopper's photo (background, framing, light:
``engine.shopper_views``). It starts as the identity and is held near it, so what the trunk
knew about other kinds of products is not lost: trained on fashion it lifted shopper-like
fashion photos' Recall@1 from 0.86 to 0.94 while real grocery shelf photos stayed where
they were (docs/quality.md).

This module is what serving loads; training the head is ``engine.look_training``.
"""

from __future__ import annotations

import torch


class LookHead(torch.nn.Module):
    """GeM pooling of the trunk's feature map, then a linear map from the catalog's mean."""

    def __init__(self, width: int, dim: int | None = None, p: float = 3.0):
        super().__init__()
        self.p = p
        self.register_buffer("center", torch.zeros(width))
        self.proj = torch.nn.Linear(width, dim or width, bias=False)
        if (dim or width) == width:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(width))

    @property
    def dim(self) -> int:
        return self.proj.out_features

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        return gem(feature_map, self.p)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        # GeM pools in fp32; the head runs in whatever precision the towers were put in.
        pooled = pooled.to(self.proj.weight.dtype)
        return self.proj(torch.nn.functional.normalize(pooled, dim=-1) - self.center)

    @classmethod
    def from_checkpoint(cls, state: dict, meta: dict) -> LookHead:
        head = cls(int(meta["width"]), int(meta["dim"]), float(meta["p"]))
        head.load_state_dict(state)
        return head.eval()


def gem(feature_map: torch.Tensor, p: float) -> torch.Tensor:
    """Generalised mean pooling over the spatial positions: between average (p=1) and max."""
    return feature_map.float().clamp(min=1e-6).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
