"""The appearance trunk as a second input of the joint-space photo vector.

Every query photo (its regions) and every catalog photo at ingest already go through the
appearance trunk (``look_tower``: EfficientNet-Lite1) for the ``look`` vector. Its average-pooled
features, projected into the joint space and added to the image tower's projection, teach titles
more about photos than the image tower's features alone, at no extra trunk pass: the joint photo
vector is ``normalise(head(lite0 pooled) + look_proj(lite1 pooled))``, a linear head over both
trunks' features side by side. Measured in docs/quality.md ("Two trunks for the joint space").

This module is what serving loads; ``engine.training`` trains the projection.
"""

from __future__ import annotations

import torch

# The name of the projection on the model and in a heads checkpoint (``look_proj.weight``).
LOOK_PROJ = "look_proj"


def attach_look_projection(model: torch.nn.Module, width: int) -> torch.nn.Linear:
    """Give ``model`` (with a look tower of ``width`` features) a projection of them into its joint
    space, as the image head's projection is (linear, no bias); returns it."""
    embed_dim = int(model.text.proj.out_features)
    projection = torch.nn.Linear(width, embed_dim, bias=False)
    setattr(model, LOOK_PROJ, projection)
    return projection


def look_projection(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's projection of look features into the joint space, when it has one."""
    return getattr(model, LOOK_PROJ, None)


def pooled(feature_map: torch.Tensor) -> torch.Tensor:
    """The appearance trunk's last feature map, average-pooled: what the projection reads."""
    return feature_map.mean(dim=(-2, -1))
