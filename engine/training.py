"""Contrastive training of the offline model on a shop's own image-title pairs (LiT, top unlocked).

The text tower stays locked; the image trunk's last block(s) and head convolution train with the
projection heads (``engine.trunk_tuning``: their input is computed once per photo view and kept).
The loss is open_clip's CLIP loss. The epoch kept is the one with the best text-to-image MRR on a
tune slice of the training products; the validation split (products never trained on, nor used
to choose anything) is scored once, at the end, with text-to-image Recall@1/10 and MRR.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.errors import InvalidImage, ModelWeightsMissing
from engine.images import load_image_file
from engine.joint_colour import attach_colour_projection, colour_histogram, colour_projection
from engine.joint_heads import (
    attach_joint_head,
    joint_heads,
    joint_vectors,
    look_parts,
    photo_parts,
    reads_stages,
    text_parts,
)
from engine.joint_look import attach_look_projection, look_projection
from engine.lit_model import build_lit_model, trainable_state
from engine.look_training import LookConfig, pooled_features, train_look_head
from engine.registry import resolve_model
from engine.trunk_top import TrunkTop, feature_maps
from engine.trunk_tuning import cached_lower_features, category_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPair:
    product_id: str
    image_path: Path
    title: str
    category: str | None = None  # batches are cut from runs of one category (hard negatives)


@dataclass
class TrainConfig:
    # The defaults are the heads-only recipe of the shipped heads (v2: validation R@10 0.759, MRR
    # 0.459 from 40 epochs of batches of 512, plainly shuffled). With the trunk's top unlocked
    # (``unlocked_blocks`` 1, 10 epochs, batch 256, category runs of 8) validation reached only
    # 0.711 / 0.398 heads-only on the same products: see docs/quality.md.
    epochs: int = 40
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    val_fraction: float = 0.25
    seed: int = 0
    # The trunk's last blocks trained with the heads (0: heads only, the frozen-towers recipe),
    # and their learning rate (2e-4: tune MRR 0.616 against 0.602 heads-only on 2,700 products).
    unlocked_blocks: int = 0
    trunk_learning_rate: float = 2e-4
    # Views of each training photo (engine.trunk_tuning.photo_views): the photo and its mirror
    # image; more views add random crops, at one more trunk pass each.
    views: int = 2
    category_run: int = 1  # products of one category next to each other in a batch (1: shuffled)
    # Where the model has a look tower (the appearance trunk), its pooled features of each photo
    # view are a second input of the joint image vector (engine.joint_look).
    look_features: bool = True
    # The joint image vector also reads each photo view's colour histogram (engine.joint_colour):
    # validation MRR 0.471 -> 0.515, R@10 0.779 -> 0.802 on cached features, 3 seeds (docs/quality.md).
    colour_features: bool = True
    tune_fraction: float = 0.1  # of the training products: where the epoch is chosen
    # A second joint head (engine.joint_heads), trained apart from the first (its own epoch chosen
    # on the tune slice), reading what the first reads and the image trunk's seven stages
    # average-pooled; the two heads' similarities are averaged. Titles against photos on cached
    # features, 3 seeds: validation R@10 / MRR 0.802 / 0.5145 with one head, 0.821-0.828 /
    # 0.539-0.543 with both (docs/quality.md). Heads only (``unlocked_blocks`` 0).
    second_head: bool = True


@dataclass
class TrainReport:
    train_products: int
    val_products: int
    skipped_images: list[str]
    best_epoch: int
    val_recall_at_1: float
    val_recall_at_10: float
    val_mrr: float
    seconds: float
    tune_products: int = 0
    tune_mrr: float = 0.0
    history: list[dict] = field(default_factory=list)
    # Each joint head alone: its best epoch, tune MRR and validation scores (the fields above are
    # the joint vector's: all heads together).
    heads: list[dict] = field(default_factory=list)


def split_validation(product_ids: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """A deterministic set of validation product ids: the same catalog and seed give the same split."""
    unique = sorted(set(product_ids))
    rng = random.Random(seed)
    rng.shuffle(unique)
    return set(unique[: int(round(len(unique) * val_fraction))])


@dataclass
class _Part:
    """One part of the catalog (fit, tune or validation): its readable pairs and their features."""

    pairs: list[TrainingPair]
    lower: torch.Tensor  # (views, n, C, H, W) fp16: the trunk below its unlocked top (pooled where none trains)
    text: torch.Tensor  # (n, width): the text tower's pooled output
    look: torch.Tensor | None = None  # (views, n, width) fp16: the look tower's pooled features
    colour: torch.Tensor | None = None  # (views, n, bins): the views' colour histograms
    stages: torch.Tensor | None = None  # (views, n, width) fp16: the image trunk's stages, pooled


def train_lit_heads(
    pairs: Sequence[TrainingPair],
    out_path: Path,
    config: TrainConfig = TrainConfig(),
    model_name: str = "snapshop-lit-fashion",
    progress: bool = True,
    look: LookConfig | None = LookConfig(),
    device: torch.device | str = "cpu",
    features_cache: Path | None = None,
) -> TrainReport:
    """Train the heads (and the image trunk's top) of the registry model ``model_name``; save to ``out_path``.

    On a GPU (``device``) the same recipe runs there; the cached features stay in CPU memory.
    ``features_cache``: a folder where the parts' features are kept, keyed by the pairs and what
    is read of them, so another run on the same catalog trains the heads in seconds.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    spec = resolve_model(model_name)
    if spec.kind != "lit":
        raise ValueError(f"`snapshop train` trains the heads of a LiT model; '{model_name}' is {spec.kind}")
    model, preprocess, tokenizer, _ = build_lit_model(spec.config_path, heads_path=None)
    top = _unlock(model, config)
    if config.look_features and getattr(model, "look_trunk", None) is not None:
        attach_look_projection(model, int(model.look_trunk.num_features))
    if config.colour_features:
        attach_colour_projection(model)
    if config.second_head:
        if _top_trains(config):
            raise ValueError("the second joint head reads the image trunk's stages, which an unlocked top would "
                             "change: train it heads only (unlocked blocks 0), or without the second head")
        attach_joint_head(model, look=look_projection(model) is not None, colour=config.colour_features, stages=True)
    model.to(device)

    val_ids = split_validation([p.product_id for p in pairs], config.val_fraction, config.seed)
    training = [p for p in pairs if p.product_id not in val_ids]
    tune_ids = split_validation([p.product_id for p in training], config.tune_fraction, config.seed + 1)
    skipped: list[str] = []

    def part(members: list[TrainingPair], views: int, desc: str) -> _Part:
        return _features(model, preprocess, tokenizer, members, top.depth, views, config.seed, desc, skipped, progress)

    def make_parts() -> tuple[_Part, _Part, _Part]:
        fit = part([p for p in training if p.product_id not in tune_ids], config.views, "training photos")
        tune = part([p for p in training if p.product_id in tune_ids], 1, "tune photos")
        val = part([p for p in pairs if p.product_id in val_ids], 1, "validation photos")
        if not _top_trains(config):  # nothing of the trunk trains: its pooled output, once, is what the head reads
            fit, tune, val = (_pooled_part(model, top, part) for part in (fit, tune, val))
        return fit, tune, val

    key = _features_key(model_name, pairs, config, look_projection(model) is not None, reads_stages(model))
    fit, tune, val = _cached_parts(features_cache, key, pairs, skipped, make_parts)
    if len(fit.pairs) < 2:
        raise ValueError(f"too few training pairs ({len(fit.pairs)}) after the validation split")
    if skipped:
        log.warning("%d photos could not be read and were left out of training", len(skipped))

    trained_top = top if _top_trains(config) else None
    history, heads = [], []
    for head in range(1 + len(joint_heads(model))):  # each head apart, its own epoch chosen on the tune slice
        head_history, best = _fit(model, trained_top, fit, tune, config, progress, head)
        model.load_state_dict(best["state"], strict=False)
        history += [{"head": head, **row} for row in head_history]
        heads.append({"best_epoch": best["epoch"], "tune_mrr": best.get("mrr", 0.0),
                      "val": evaluate(model, trained_top, val, head) if val.pairs else {}})
    _round_heads_to_half(model)
    scores = evaluate(model, trained_top, val) if val.pairs else {"r1": 0.0, "r10": 0.0, "mrr": 0.0}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = TrainReport(
        train_products=len(fit.pairs) + len(tune.pairs), val_products=len(val.pairs), skipped_images=skipped,
        best_epoch=heads[0]["best_epoch"], val_recall_at_1=scores["r1"], val_recall_at_10=scores["r10"],
        val_mrr=scores["mrr"], seconds=round(time.perf_counter() - started, 1), tune_products=len(tune.pairs),
        tune_mrr=evaluate(model, trained_top, tune)["mrr"] if tune.pairs else 0.0, history=history, heads=heads,
    )
    best = {"state": _on_disk(trainable_state(model))}
    metadata = {"model": model_name, "val_seed": config.seed, "val_fraction": config.val_fraction,
                "report": {k: v for k, v in asdict(report).items() if k not in ("history", "skipped_images")},
                "config": asdict(config), "trunk_top": {"depth": top.depth if _top_trains(config) else 0},
                "joint_look": look_projection(model) is not None, "joint_colour": colour_projection(model) is not None,
                "joint_heads": [head.reads() for head in joint_heads(model)]}
    checkpoint = {"state_dict": best["state"], "metadata": metadata}
    if look is not None:
        kept = fit.pairs + tune.pairs + val.pairs
        checkpoint = _with_look_head(checkpoint, model, preprocess, kept, val_ids, look, progress)
    torch.save(checkpoint, out_path)
    return report


def _top_trains(config: TrainConfig) -> bool:
    return config.unlocked_blocks > 0 and config.trunk_learning_rate > 0


def _unlock(model, config: TrainConfig) -> TrunkTop:
    """Lock the towers, keep the trunk's original top for the appearance branch, unlock the joint
    side's top; returns that top (the trunk's own modules)."""
    # Not freeze_bn_stats: open_clip's BN freezing swaps timm's BatchNormAct2d for a plain frozen
    # BN and silently drops its activation. The trunk runs in eval mode (BN statistics kept).
    model.lock_image_tower()
    model.lock_text_tower(freeze_layer_norm=True)
    top = TrunkTop(model.visual.trunk, max(0, config.unlocked_blocks), share=True)
    if _top_trains(config):
        if getattr(model, "look_trunk", None) is None:  # a look tower of its own needs no copy of the top
            model.look_top = TrunkTop(model.visual.trunk, top.depth).requires_grad_(False)
        top.requires_grad_(True)
    return top.eval()


def _features(model, preprocess, tokenizer, pairs: list[TrainingPair], depth: int, views: int, seed: int,
              desc: str, skipped: list[str], progress: bool) -> _Part:
    """The part's readable pairs, their photos' lower trunk features and their titles' text features."""

    def load(pair: TrainingPair):
        try:
            return load_image_file(pair.image_path)
        except InvalidImage as e:
            skipped.append(str(e))
            return None

    look = (model.look_trunk, model.look_preprocess) if look_projection(model) is not None else None
    colour = colour_histogram if colour_projection(model) is not None else None
    cached = cached_lower_features(model.visual.trunk, preprocess, pairs, load, depth, views, seed, desc, progress,
                                   _device(model), look, colour, stages=reads_stages(model))
    readable = [pairs[i] for i in cached.kept]
    return _Part(readable, cached.lower, _text_features(model, tokenizer, [p.title for p in readable], progress),
                 cached.look, cached.colour, cached.stages)


def _text_features(model, tokenizer, titles: list[str], progress: bool) -> torch.Tensor:
    """Mean-pooled text-tower outputs (n, 384): the input of the text head."""
    text = model.text.eval()
    out = [torch.zeros((0, text.config.hidden_size))]
    with torch.inference_mode():
        for start in tqdm(range(0, len(titles), 256), desc="title features", disable=not progress):
            tokens = tokenizer(titles[start : start + 256]).to(_device(model))
            mask = (tokens != text.config.pad_token_id).long()
            # Cut after the batch's longest title (about 12 of the 48 tokens): pads are masked
            # out, so the vectors are the same, at a quarter of the work.
            length = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else tokens.shape[1]
            tokens, mask = tokens[:, :length], mask[:, :length]
            hidden = text.transformer(input_ids=tokens, attention_mask=mask)
            out.append(text.pooler(hidden, mask).cpu())
    return torch.cat(out)


def _device(model) -> torch.device:
    return model.logit_scale.device


@torch.no_grad()
def _round_heads_to_half(model) -> None:
    """Round the heads' weights to half precision (kept as fp32): what ``_on_disk`` writes and
    serving loads back, so the report scores what is served."""
    for name, param in model.named_parameters():
        if param.requires_grad and not name.startswith("visual.trunk."):
            param.copy_(param.half().float())


def _on_disk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The heads' weights in half precision (a trained trunk top's stay fp32): two joint heads and
    the appearance head in 7 MB instead of 11 MB; loading copies them back into fp32."""
    return {name: tensor if name.startswith("visual.trunk.") else tensor.half() for name, tensor in state.items()}


def _head_modules(model, head: int) -> list[torch.nn.Module]:
    """The modules of joint head ``head`` (0: the model's own projections; engine.joint_heads)."""
    if head:
        return [joint_heads(model)[head - 1]]
    own = [model.visual.head, model.text.proj, look_projection(model), colour_projection(model)]
    return [module for module in own if module is not None]


def _fit(model, top: TrunkTop | None, fit: _Part, tune: _Part, config: TrainConfig, progress: bool, head: int = 0):
    """Train joint head ``head`` alone (and the trunk's top with the first); its history and best state."""
    from open_clip.loss import ClipLoss

    params = [p for module in _head_modules(model, head) for p in module.parameters()]
    # Each head learns its own temperature: the first the model's, a later one a fresh one (it
    # only shapes training; serving compares cosines).
    scale = model.logit_scale if head == 0 else torch.nn.Parameter(
        torch.full_like(model.logit_scale, math.log(1 / 0.07)))
    groups = [{"params": [*params, scale], "lr": config.learning_rate}]
    if _top_trains(config) and head == 0:
        groups.append({"params": list(top.parameters()), "lr": config.trunk_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(fit.pairs) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in groups], total_steps=steps_per_epoch * config.epochs, pct_start=0.1
    )
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(config.seed)
    categories = [pair.category for pair in fit.pairs]
    history, best = [], {"mrr": -1.0}
    bar = tqdm(range(config.epochs), desc=f"training head {head + 1}", unit="epoch", disable=not progress)
    for epoch in bar:
        for module in _head_modules(model, head):
            module.train()
        order = torch.randperm(len(fit.pairs), generator=generator)
        losses = []
        for batch in category_batches(order, categories, config.batch_size, config.category_run, generator):
            if len(batch) < 2:
                continue
            view = torch.randint(0, fit.lower.shape[0], (len(batch),), generator=generator)
            img = _image_embeddings(model, top, fit.lower[view, batch], _views(fit.look, view, batch),
                                    _views(fit.colour, view, batch), _views(fit.stages, view, batch), head)
            txt = _text_embeddings(model, fit.text[batch], head)
            loss = loss_fn(img, txt, scale.exp())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                scale.clamp_(0, math.log(100))
            losses.append(loss.item())
        metrics = evaluate(model, top, tune, head) if tune.pairs else {}
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4) if losses else None, **metrics}
        history.append(row)
        bar.set_postfix(loss=row["loss"], r10=metrics.get("r10"), mrr=metrics.get("mrr"))
        if not tune.pairs or metrics["mrr"] > best["mrr"]:
            best = {"epoch": epoch + 1, "state": trainable_state(model), **metrics}
    return history, best


def _views(features: torch.Tensor | None, view: torch.Tensor, batch: torch.Tensor) -> torch.Tensor | None:
    return features[view, batch] if features is not None else None


@torch.no_grad()
def _pooled_part(model, top: TrunkTop, part: _Part) -> _Part:
    """The part with its trunk features run through the (locked) top and pooled: (views, n, width).
    Heads-only training then reads 1,280 numbers a view per epoch instead of a 320 x 7 x 7 map
    through the head convolution."""
    views = [torch.cat([model.visual.trunk.forward_head(top(chunk.to(_device(model)).float().contiguous(
        memory_format=torch.channels_last))).half().cpu() for chunk in view.split(256)])
        if len(view) else torch.zeros((0, model.visual.trunk.num_features), dtype=torch.float16)
        for view in part.lower]
    return _Part(part.pairs, torch.stack(views), part.text, part.look, part.colour, part.stages)


def _image_embeddings(model, top: TrunkTop | None, lower: torch.Tensor, look: torch.Tensor | None = None,
                      colour: torch.Tensor | None = None, stages: torch.Tensor | None = None,
                      head: int | None = None) -> torch.Tensor:
    """Unit joint-space vectors of photos from their lower trunk features (their pooled trunk
    output where ``top`` is None: ``_pooled_part``), their look tower's pooled features where
    the joint vector reads them (engine.joint_look), their colour histograms (engine.joint_colour)
    and trunk stages (engine.joint_heads) where a head reads those: of joint head ``head`` alone,
    or the model's joint vectors (all heads) where None."""
    device = _device(model)

    def on_device(features: torch.Tensor | None) -> torch.Tensor | None:
        return features.to(device, non_blocking=True).float() if features is not None else None

    features = on_device(lower)
    if top is not None:
        features = model.visual.trunk.forward_head(top(features.contiguous(memory_format=torch.channels_last)))
    parts = photo_parts(model, features, on_device(colour), on_device(stages))
    if look is not None:
        parts = parts + look_parts(model, on_device(look))
    return joint_vectors(parts) if head is None else torch.nn.functional.normalize(parts[:, head], dim=-1)


def _text_embeddings(model, text_feats: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """Unit joint-space vectors of titles from their pooled text-tower output: of head ``head``
    alone, or all heads' (the joint vector) where None."""
    parts = text_parts(model, text_feats.to(_device(model)))
    return joint_vectors(parts) if head is None else torch.nn.functional.normalize(parts[:, head], dim=-1)


@torch.no_grad()
def evaluate(model, top: TrunkTop | None, part: _Part, head: int | None = None) -> dict:
    """Text-to-image retrieval on a part's cached features (its first view): title i's right answer
    is photo i; by joint head ``head`` alone, or by the joint vector (all heads) where None."""
    modules = [model.visual.head, model.text.proj, *joint_heads(model)]
    for module in modules:
        module.eval()
    lower = part.lower[0]
    chunks = math.ceil(len(lower) / 256)

    def split(views: torch.Tensor | None) -> list:
        return list(views[0].split(256)) if views is not None else [None] * chunks

    img = torch.cat([_image_embeddings(model, top, chunk, its_look, its_colour, its_stages, head)
                     for chunk, its_look, its_colour, its_stages in zip(lower.split(256), split(part.look),
                                                                       split(part.colour), split(part.stages))])
    txt = _text_embeddings(model, part.text, head).to(img.device)
    return retrieval_metrics(txt @ img.T)


def _features_key(model_name: str, pairs: Sequence[TrainingPair], config: TrainConfig, look: bool,
                  stages: bool) -> str:
    """What the parts' features depend on: the pairs, the splits, the views and what is read."""
    described = [model_name, [(p.product_id, str(p.image_path), p.title, p.category) for p in pairs],
                 config.val_fraction, config.tune_fraction, config.seed, config.views, config.unlocked_blocks,
                 _top_trains(config), look, config.colour_features, stages]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:20]


_PART_FIELDS = ("lower", "text", "look", "colour", "stages")


def _cached_parts(folder: Path | None, key: str, pairs: Sequence[TrainingPair], skipped: list[str], make):
    """The fit, tune and validation parts: read from ``folder`` where a run with the same ``key``
    kept them, else made by ``make`` (and kept there, when a folder is given)."""
    path = folder / f"features-{key}.pt" if folder is not None else None
    if path is not None and path.is_file():
        kept = torch.load(path, map_location="cpu", weights_only=True)
        by_id = {pair.product_id: pair for pair in pairs}
        skipped.extend(kept["skipped"])
        log.info("features of the parts read from %s", path)
        return tuple(_Part([by_id[i] for i in part["ids"]], **{name: part[name] for name in _PART_FIELDS})
                     for part in kept["parts"])
    parts = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"skipped": list(skipped), "parts": [
            {"ids": [pair.product_id for pair in part.pairs], **{name: getattr(part, name) for name in _PART_FIELDS}}
            for part in parts]}, path)
    return parts


def train_look_only(pairs: Sequence[TrainingPair], heads_path: Path, out_path: Path, look: LookConfig = LookConfig(),
                    model_name: str = "snapshop-lit-fashion", progress: bool = True) -> dict:
    """Add (or retrain) the appearance head of a trained heads checkpoint, keeping its other heads.

    The validation split is the checkpoint's own, so neither head has seen those products.
    """
    spec = resolve_model(model_name)
    if spec.kind != "lit":
        raise ValueError(f"the appearance head belongs to a LiT model; '{model_name}' is {spec.kind}")
    model, preprocess, _, metadata = build_lit_model(spec.config_path, heads_path)
    checkpoint = torch.load(heads_path, map_location="cpu", weights_only=True)
    ids = [pair.product_id for pair in pairs]
    val_ids = split_validation(ids, metadata.get("val_fraction", 0.25), metadata.get("val_seed", 0))
    readable = []
    for pair in pairs:  # train_lit_heads passes only the photos its features were made of
        try:
            load_image_file(pair.image_path)
            readable.append(pair)
        except InvalidImage:
            continue
    if len(readable) < len(pairs):
        log.warning("%d photos could not be read and were left out of training", len(pairs) - len(readable))
    checkpoint = _with_look_head({"state_dict": checkpoint["state_dict"], "metadata": metadata}, model, preprocess,
                                 readable, val_ids, look, progress)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out_path)
    return checkpoint["metadata"]["look_head"]["report"]


def keep_look_head(heads_path: Path, source_path: Path) -> None:
    """Put the appearance head of the heads file ``source_path`` into ``heads_path``.

    The appearance head reads only the look tower's features, which training the joint side never
    changes: it carries over as it is, and the appearance vectors it makes stay the same.
    """
    source = torch.load(source_path, map_location="cpu", weights_only=True)
    if "look_head" not in source:
        raise ModelWeightsMissing(f"{source_path} holds no appearance head to keep")
    checkpoint = torch.load(heads_path, map_location="cpu", weights_only=True)
    checkpoint["look_head"] = source["look_head"]
    checkpoint["metadata"]["look_head"] = {**source["metadata"]["look_head"], "from": str(source_path)}
    torch.save(checkpoint, heads_path)


def _with_look_head(checkpoint: dict, model, preprocess, pairs: list[TrainingPair], val_ids: set[str],
                    look: LookConfig, progress: bool) -> dict:
    """The checkpoint with an appearance head trained on the pairs' photos (engine.look_head);
    every photo must be readable."""
    look_tower = getattr(model, "look_trunk", None)
    if look_tower is not None:  # the appearance path's own trunk (engine.lit_model.build_look_trunk)
        look_tower.eval().to(memory_format=torch.channels_last)
        preprocess = model.look_preprocess

        def look_map(pixels: torch.Tensor) -> torch.Tensor:
            return look_tower.forward_features(pixels.to(_device(model))).float().cpu()
    else:
        model.visual.trunk.eval().to(memory_format=torch.channels_last)
        if getattr(model, "look_top", None) is not None:
            model.look_top.eval().to(memory_format=torch.channels_last)

        def look_map(pixels: torch.Tensor) -> torch.Tensor:  # the trunk's original top (engine.trunk_top)
            return feature_maps(model, pixels.to(_device(model)))[1].float().cpu()

    train = [p.image_path for p in pairs if p.product_id not in val_ids]
    val = [p.image_path for p in pairs if p.product_id in val_ids]

    def features(paths, shopper, seed, desc):
        return pooled_features(look_map, preprocess, paths, load_image_file, look.p, shopper, seed, desc, progress)

    head, report = train_look_head(
        features(train, False, 0, "catalog photos"), features(train, True, look.views_seed, "shopper views"),
        features(val, False, 0, "validation photos"), features(val, True, look.views_seed + 1, "validation views"),
        look, progress,
    )
    metadata = {**checkpoint["metadata"],
                "look_head": {"width": int(head.center.shape[0]), "dim": head.dim, "p": head.p, "report": report}}
    # Half precision on disk (the weights are loaded back into fp32): 3.3 MB instead of 6.6 MB.
    return {**checkpoint, "metadata": metadata, "look_head": {k: v.half() for k, v in head.state_dict().items()}}


def retrieval_metrics(similarity: torch.Tensor) -> dict:
    """Recall@1/10 and MRR where the relevant item of row i is column i."""
    correct = similarity.diagonal().unsqueeze(1)
    ranks = (similarity > correct).sum(dim=1) + 1
    return {
        "r1": round(float((ranks <= 1).float().mean()), 4),
        "r10": round(float((ranks <= 10).float().mean()), 4),
        "mrr": round(float((1.0 / ranks.float()).mean()), 4),
    }


