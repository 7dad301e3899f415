"""More than one head of the joint space, their similarities averaged (model version 6).

One linear head over Lite0, Lite1 and the photo's colours reached validation R@10 0.802 / MRR
0.5145 for titles against photos; two heads trained apart, the second also reading Lite0's seven
stages average-pooled, reached 0.821-0.828 / 0.539-0.543 together (docs/quality.md, "Colour for
the joint space"). Their errors differ, so their mean similarity ranks better than either.

The first head is the model's own projections (open_clip's ``visual.head`` and ``text.proj``,
``engine.joint_look``'s ``look_proj``, ``engine.joint_colour``'s ``colour_proj``); each further
head is a ``JointHead`` in ``model.joint_heads``, with its own projections of what it reads. A
photo's (or a text's) joint vector is each head's unit vector side by side, scaled by
1/sqrt(heads): its dot product with another joint vector is the mean of the heads' cosines, and
it is itself a unit vector. Everything that sizes or makes a joint vector asks this module.

This module is what serving loads; ``engine.training`` trains the heads.
"""

from __future__ import annotations

import math

import torch

from engine.joint_colour import COLOUR_BINS, colour_projection
from engine.joint_look import look_projection

# The model's attribute holding the heads after the first (``joint_heads.0.image.weight`` in a
# heads checkpoint); the checkpoint's metadata ``joint_heads`` lists what each reads.
JOINT_HEADS = "joint_heads"


class JointHead(torch.nn.Module):
    """A joint-space head of its own: photo and text projections into the joint space's width.

    ``image`` reads the image trunk's pooled features, with its stages' pooled outputs after them
    where ``stages`` is set (through dropout in training, as open_clip's image head does); ``look``
    the look tower's pooled features, ``colour`` the colour histogram, when set.
    """

    def __init__(self, embed_dim: int, text_width: int, image_width: int, look_width: int = 0,
                 colour_bins: int = 0, stage_width: int = 0, dropout: float = 0.1):
        super().__init__()
        self.stage_width = stage_width
        self.drop = torch.nn.Dropout(dropout)
        self.image = torch.nn.Linear(image_width + stage_width, embed_dim, bias=False)
        self.look = torch.nn.Linear(look_width, embed_dim, bias=False) if look_width else None
        self.colour = torch.nn.Linear(colour_bins, embed_dim, bias=False) if colour_bins else None
        self.text = torch.nn.Linear(text_width, embed_dim, bias=False)

    def reads(self) -> dict:
        """What this head reads, as its checkpoint's metadata records it."""
        return {"look": self.look is not None, "colour": self.colour is not None, "stages": self.stage_width > 0}

    def photo_part(self, pooled: torch.Tensor, colours: torch.Tensor | None,
                   stages: torch.Tensor | None) -> torch.Tensor:
        """The image trunk's (and colours') part of this head's photo vector, not normalised."""
        if self.stage_width:
            if stages is None:
                raise ValueError("this joint head reads the image trunk's stages, but none were given")
            pooled = torch.cat([pooled, stages.to(pooled.dtype)], dim=-1)
        part = self.image(self.drop(pooled.to(self.image.weight.dtype)))
        if self.colour is not None:
            part = part + self.colour(colours.to(part.device, self.colour.weight.dtype))
        return part


def joint_heads(model: torch.nn.Module) -> list[JointHead]:
    """The model's heads after the first (none for a one-head model)."""
    return list(getattr(model, JOINT_HEADS, None) or [])


def head_count(model: torch.nn.Module) -> int:
    return 1 + len(joint_heads(model))


def reads_stages(model: torch.nn.Module) -> bool:
    """Whether a head reads the image trunk's stages (the trunk pass must give them)."""
    return any(head.stage_width for head in joint_heads(model))


def reads_colours(model: torch.nn.Module) -> bool:
    """Whether a head reads the photo's colour histogram (engine.joint_colour)."""
    return colour_projection(model) is not None or any(head.colour is not None for head in joint_heads(model))


def attach_joint_head(model: torch.nn.Module, look: bool, colour: bool, stages: bool) -> JointHead:
    """Give ``model`` one more joint head reading what is asked (the look tower's width from the
    model's look trunk, the stages' from its image trunk); returns it."""
    if look and getattr(model, "look_trunk", None) is None:
        raise ValueError("a joint head reading the look tower needs a model with one")
    trunk = model.visual.trunk
    look_width = int(model.look_trunk.num_features) if look else 0
    head = JointHead(int(model.text.proj.out_features), int(model.text.proj.in_features), int(trunk.num_features),
                     look_width, COLOUR_BINS if colour else 0, stage_width(trunk) if stages else 0)
    if getattr(model, JOINT_HEADS, None) is None:
        setattr(model, JOINT_HEADS, torch.nn.ModuleList())
    getattr(model, JOINT_HEADS).append(head)
    return head


def stage_width(trunk: torch.nn.Module) -> int:
    """The channels of the trunk's stages' outputs side by side (EfficientNet-Lite0: 784)."""
    return sum(int([m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels)
               for stage in trunk.blocks)


def trunk_blocks_with_stages(trunk: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trunk's blocks' output (below its head convolution) and each stage's output
    average-pooled, side by side (n, ``stage_width``), from one pass."""
    x = trunk.bn1(trunk.conv_stem(pixels))
    pools = []
    for stage in trunk.blocks:
        x = stage(x)
        pools.append(x.mean(dim=(-2, -1)))
    return x, torch.cat(pools, dim=-1)


def trunk_with_stages(trunk: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trunk's last feature map (its ``forward_features``) and its stages' pooled outputs."""
    blocks, stages = trunk_blocks_with_stages(trunk, pixels)
    return trunk.bn2(trunk.conv_head(blocks)), stages


def photo_parts(model: torch.nn.Module, pooled: torch.Tensor, colours: torch.Tensor | None,
                stages: torch.Tensor | None) -> torch.Tensor:
    """Each head's image-trunk part of photos' joint vectors, (n, heads, dim), not normalised:
    the image trunk's ``pooled`` features, with the ``colours`` and ``stages`` where a head reads
    them (the look tower's part is ``look_parts``')."""
    first = model.visual.head(pooled)
    projection = colour_projection(model)
    if projection is not None:
        first = first + projection(colours.to(first.device, projection.weight.dtype)).to(first.dtype)
    parts = [first] + [head.photo_part(pooled, colours, stages).to(first.dtype) for head in joint_heads(model)]
    return torch.stack(parts, dim=1)


def look_parts(model: torch.nn.Module, look_pooled: torch.Tensor) -> torch.Tensor | None:
    """Each head's look-tower part of photos' joint vectors, (n, heads, dim), or None where the
    joint vector does not read the look tower. A head that does not read it adds zeros."""
    projection = look_projection(model)
    if projection is None:
        return None
    first = projection(look_pooled)
    parts = [first] + [head.look(look_pooled.to(head.look.weight.dtype)).to(first.dtype) if head.look is not None
                       else torch.zeros_like(first) for head in joint_heads(model)]
    return torch.stack(parts, dim=1)


def text_parts(model: torch.nn.Module, text_pooled: torch.Tensor) -> torch.Tensor:
    """Each head's projection of texts' pooled text-tower output, (n, heads, dim)."""
    first = model.text.proj(text_pooled.to(model.text.proj.weight.dtype))
    parts = [first] + [head.text(text_pooled.to(head.text.weight.dtype)).to(first.dtype) for head in joint_heads(model)]
    return torch.stack(parts, dim=1)


def joint_vectors(parts: torch.Tensor) -> torch.Tensor:
    """Unit joint vectors (n, heads x dim) from each head's part (n, heads, dim): each head's unit
    vector, side by side, over sqrt(heads), so a dot product is the mean of the heads' cosines."""
    unit = torch.nn.functional.normalize(parts.float(), dim=-1)
    return unit.flatten(1) / math.sqrt(parts.shape[1])
