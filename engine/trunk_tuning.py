"""Teaching the image side: the top of the image trunk fine-tuned against the titles.

The frozen ImageNet features were the ceiling of heads-only training (titles against photos on the
fashion validation split: R@10 0.76, MRR 0.45, every head variant within 0.72-0.79). Here the
trunk's last block(s) and head convolution train too, with the text tower locked. The feature map
below them is computed once per photo view (the photo, its mirror image, random crops) and kept
in half precision, so an epoch runs only the unlocked top: on Lite0's last block that is ~50 of
the ~400 MFLOPs of a photo.

Batches are built from runs of products of one category, so the other products a title is told
apart from are often of its own kind (hard negatives): "navy blue shirt" against other shirts,
not against watches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from engine.encoder import CPU_PHOTO_CHUNK
from engine.joint_heads import trunk_blocks_with_stages
from engine.joint_look import pooled
from engine.trunk_top import lower_features

# Views of one catalog photo a training epoch picks from: the photo, its mirror image and two
# random crops (one mirrored). A crop keeps 55-100 % of the photo's area: tighter ones cut off
# what the title names (the shoes' laces, the bag's handle).
CROP_AREA = (0.55, 1.0)


def photo_views(photo: Image.Image, count: int, rng: random.Random) -> list[Image.Image]:
    """``count`` views of a catalog photo: itself first, then its mirror image, then random crops."""
    views = [photo, ImageOps.mirror(photo)]
    while len(views) < count:
        views.append(_random_crop(photo, rng, mirror=len(views) % 2 == 1))
    return views[:count]


def _random_crop(photo: Image.Image, rng: random.Random, mirror: bool) -> Image.Image:
    width, height = photo.size
    area = rng.uniform(*CROP_AREA) * width * height
    aspect = rng.uniform(0.8, 1.25)
    crop_w = min(width, round((area * aspect) ** 0.5))
    crop_h = min(height, round((area / aspect) ** 0.5))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    crop = photo.crop((left, top, left + crop_w, top + crop_h))
    return ImageOps.mirror(crop) if mirror else crop


class CachedViews(NamedTuple):
    """Features of the views of a part's photos (``cached_lower_features``)."""

    lower: torch.Tensor  # (views, n, C, H, W) fp16: the trunk below its unlocked top
    look: torch.Tensor | None  # (views, n, width) fp16: the look tower's pooled features
    colour: torch.Tensor | None  # (views, n, bins): the views' colour histograms
    kept: list[int]  # the indices of the photos they hold
    stages: torch.Tensor | None = None  # (views, n, width) fp16: the trunk's stages average-pooled


def cached_lower_features(trunk: torch.nn.Module, preprocess: Callable, photos: Sequence,
                          load: Callable[..., Image.Image | None], depth: int, views: int, seed: int, desc: str,
                          progress: bool, device: torch.device | str = "cpu",
                          look: tuple[torch.nn.Module, Callable] | None = None,
                          colour: Callable[[Image.Image], np.ndarray] | None = None,
                          stages: bool = False) -> CachedViews:
    """The trunk's feature map below its last ``depth`` blocks for ``views`` views of each photo,
    shape (views, n, C, H, W) in fp16 (below Lite0's last block: 192 x 7 x 7, 19 KB a view); the
    ``look`` tower's (trunk, preprocess) average-pooled features of the same views, (views, n,
    width) in fp16, when given (``engine.joint_look``); the ``colour`` histograms of the same
    views, when given (``engine.joint_colour``); the trunk's stages' outputs average-pooled, side
    by side, where ``stages`` (``engine.joint_heads``; only below the whole trunk, ``depth`` 0); and
    the indices of the photos they hold: ``load`` returns None for a photo it cannot read."""
    if stages and depth:
        raise ValueError("a joint head reading the image trunk's stages trains heads only: the unlocked top "
                         f"({depth} blocks) would change the stages it reads (use --no-second-head with --unlocked-blocks)")
    rng = random.Random(seed)
    seeds = [rng.randrange(1 << 30) for _ in photos]

    def prepare(i: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[np.ndarray]] | None:
        photo = load(photos[i])
        if photo is None:
            return None
        shown = photo_views(photo, views, random.Random(seeds[i]))
        return ([preprocess(view) for view in shown], [look[1](view) for view in shown] if look else [],
                [colour(view) for view in shown] if colour else [])

    def batch(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(tensors).to(device).contiguous(memory_format=torch.channels_last)

    def trunk_pass(chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not stages:
            return (lower_features(trunk, chunk, depth).half().cpu(),)
        return tuple(part.half().cpu() for part in trunk_blocks_with_stages(trunk, chunk))

    out, looks, colours, kept, stage_pools = [], [], [], [], []
    trunk = trunk.eval()
    with ThreadPoolExecutor(max_workers=2) as pool, torch.inference_mode():
        for start in tqdm(range(0, len(photos), 32), desc=desc, unit="batch", disable=not progress):
            indices = range(start, min(start + 32, len(photos)))
            prepared = [(i, p) for i, p in zip(indices, pool.map(prepare, indices)) if p is not None]
            if not prepared:
                continue
            kept.extend(i for i, _ in prepared)
            pixels = batch([v for _, (mine, _, _) in prepared for v in mine])
            lower, *its_stages = _in_chunks(trunk_pass, pixels)
            out.append(lower.reshape(len(prepared), views, *lower.shape[1:]).transpose(0, 1))
            if its_stages:
                stage_pools.append(its_stages[0].reshape(len(prepared), views, -1).transpose(0, 1))
            if look is not None:
                pixels = batch([v for _, (_, its, _) in prepared for v in its])
                features = _in_chunks(lambda chunk: pooled(look[0].eval().forward_features(chunk)).half().cpu(), pixels)
                looks.append(features.reshape(len(prepared), views, -1).transpose(0, 1))
            if colour is not None:
                histograms = torch.from_numpy(np.stack([h for _, (_, _, its) in prepared for h in its]))
                colours.append(histograms.reshape(len(prepared), views, -1).transpose(0, 1))
    if not out:
        return CachedViews(torch.zeros((views, 0, 1, 1, 1), dtype=torch.float16), None, None, kept)
    return CachedViews(torch.cat(out, dim=1).contiguous(), torch.cat(looks, dim=1).contiguous() if looks else None,
                       torch.cat(colours, dim=1).contiguous() if colours else None, kept,
                       torch.cat(stage_pools, dim=1).contiguous() if stage_pools else None)


def _in_chunks(run: Callable[[torch.Tensor], torch.Tensor | tuple], pixels: torch.Tensor) -> torch.Tensor | tuple:
    """``run`` over ``pixels``: on a CPU in chunks of ``CPU_PHOTO_CHUNK`` images, on a GPU at once.

    A CPU pass over 64 photo views at once streams activations far bigger than the caches, and
    each layer's are fresh pages from the system: measured here on one thread, Lite0's lower
    blocks and Lite1 over 64 views took 21-23 s and 1.8 million page faults at once, 12-13 s and
    under 13,000 in chunks of 4 (`snapshop train`'s photo pass on 8,000 products spent half its
    CPU time in the kernel before).
    """
    if pixels.device.type != "cpu":
        return run(pixels)
    outs = [run(chunk) for chunk in pixels.split(CPU_PHOTO_CHUNK)]
    if isinstance(outs[0], tuple):  # several outputs of each chunk: each concatenated
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def category_batches(order: torch.Tensor, categories: Sequence[str | None], batch_size: int, run: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of ``order`` made of runs of ``run`` products of one category, the runs shuffled.

    A product without a category is a run of its own kind ("" ). ``run`` 1 is plain shuffling.
    """
    if run <= 1:
        return list(order.split(batch_size))
    by_category: dict[str, list[int]] = {}
    for index in order.tolist():  # order is already shuffled, so each category's list is too
        by_category.setdefault(categories[index] or "", []).append(index)
    runs = [members[i : i + run] for members in by_category.values() for i in range(0, len(members), run)]
    shuffled = [runs[i] for i in torch.randperm(len(runs), generator=generator).tolist()]
    flat = torch.tensor([index for chunk in shuffled for index in chunk])
    return list(flat.split(batch_size))
