"""Contrastive training of the offline model on a shop's own image-title pairs (LiT, top unlocked).

The text tower stays locked; the image trunk's last block(s) and head convolution train with the
projection heads (``engine.trunk_tuning``: their input is computed once per photo view and kept).
The loss is open_clip's CLIP loss. The epoch kept is the one with the best text-to-image MRR on a
tune slice of the training products; the validation split (products never trained on, nor used
to choose anything) is scored once, at the end, with text-to-image Recall@1/10 and MRR.
"""

from __future__ import annotations

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


def train_lit_heads(
    pairs: Sequence[TrainingPair],
    out_path: Path,
    config: TrainConfig = TrainConfig(),
    model_name: str = "snapshop-lit-fashion",
    progress: bool = True,
    look: LookConfig | None = LookConfig(),
    device: torch.device | str = "cpu",
) -> TrainReport:
    """Train the heads (and the image trunk's top) of the registry model ``model_name``; save to ``out_path``.

    On a GPU (``device``) the same recipe runs there; the cached features stay in CPU memory.
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
    model.to(device)

    val_ids = split_validation([p.product_id for p in pairs], config.val_fraction, config.seed)
    training = [p for p in pairs if p.product_id not in val_ids]
    tune_ids = split_validation([p.product_id for p in training], config.tune_fraction, config.seed + 1)
    skipped: list[str] = []

    def part(members: list[TrainingPair], views: int, desc: str) -> _Part:
        return _features(model, preprocess, tokenizer, members, top.depth, views, config.seed, desc, skipped, progress)

    fit = part([p for p in training if p.product_id not in tune_ids], config.views, "training photos")
    tune = part([p for p in training if p.product_id in tune_ids], 1, "tune photos")
    val = part([p for p in pairs if p.product_id in val_ids], 1, "validation photos")
    if len(fit.pairs) < 2:
        raise ValueError(f"too few training pairs ({len(fit.pairs)}) after the validation split")
    if skipped:
        log.warning("%d photos could not be read and were left out of training", len(skipped))

    if not _top_trains(config):  # nothing of the trunk trains: its pooled output, once, is what the head reads
        fit, tune, val = (_pooled_part(model, top, part) for part in (fit, tune, val))
    trained_top = top if _top_trains(config) else None
    history, best = _fit(model, trained_top, fit, tune, config, progress)
    model.load_state_dict(best["state"], strict=False)
    scores = (evaluate(model, trained_top, val.lower[0], val.text, _first(val.look), _first(val.colour)) if val.pairs
              else {"r1": 0.0, "r10": 0.0, "mrr": 0.0})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = TrainReport(
        train_products=len(fit.pairs) + len(tune.pairs), val_products=len(val.pairs), skipped_images=skipped,
        best_epoch=best["epoch"], val_recall_at_1=scores["r1"], val_recall_at_10=scores["r10"],
        val_mrr=scores["mrr"], seconds=round(time.perf_counter() - started, 1), tune_products=len(tune.pairs),
        tune_mrr=best.get("mrr", 0.0), history=history,
    )
    metadata = {"model": model_name, "val_seed": config.seed, "val_fraction": config.val_fraction,
                "report": {k: v for k, v in asdict(report).items() if k not in ("history", "skipped_images")},
                "config": asdict(config), "trunk_top": {"depth": top.depth if _top_trains(config) else 0},
                "joint_look": look_projection(model) is not None, "joint_colour": colour_projection(model) is not None}
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
                                   _device(model), look, colour)
    readable = [pairs[i] for i in cached.kept]
    return _Part(readable, cached.lower, _text_features(model, tokenizer, [p.title for p in readable], progress),
                 cached.look, cached.colour)


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


def _fit(model, top: TrunkTop | None, fit: _Part, tune: _Part, config: TrainConfig, progress: bool):
    from open_clip.loss import ClipLoss

    heads = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("visual.trunk")]
    groups = [{"params": heads, "lr": config.learning_rate}]
    if _top_trains(config):
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
    bar = tqdm(range(config.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        model.visual.head.train()
        model.text.proj.train()
        order = torch.randperm(len(fit.pairs), generator=generator)
        losses = []
        for batch in category_batches(order, categories, config.batch_size, config.category_run, generator):
            if len(batch) < 2:
                continue
            view = torch.randint(0, fit.lower.shape[0], (len(batch),), generator=generator)
            img = _image_embeddings(model, top, fit.lower[view, batch],
                                    fit.look[view, batch] if fit.look is not None else None,
                                    fit.colour[view, batch] if fit.colour is not None else None)
            txt = torch.nn.functional.normalize(model.text.proj(fit.text[batch].to(_device(model))), dim=-1)
            loss = loss_fn(img, txt, model.logit_scale.exp())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
        metrics = (evaluate(model, top, tune.lower[0], tune.text, _first(tune.look), _first(tune.colour))
                   if tune.pairs else {})
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4) if losses else None, **metrics}
        history.append(row)
        bar.set_postfix(loss=row["loss"], r10=metrics.get("r10"), mrr=metrics.get("mrr"))
        if not tune.pairs or metrics["mrr"] > best["mrr"]:
            best = {"epoch": epoch + 1, "state": trainable_state(model), **metrics}
    return history, best


@torch.no_grad()
def _pooled_part(model, top: TrunkTop, part: _Part) -> _Part:
    """The part with its trunk features run through the (locked) top and pooled: (views, n, width).
    Heads-only training then reads 1,280 numbers a view per epoch instead of a 320 x 7 x 7 map
    through the head convolution."""
    views = [torch.cat([model.visual.trunk.forward_head(top(chunk.to(_device(model)).float().contiguous(
        memory_format=torch.channels_last))).half().cpu() for chunk in view.split(256)])
        if len(view) else torch.zeros((0, model.visual.trunk.num_features), dtype=torch.float16)
        for view in part.lower]
    return _Part(part.pairs, torch.stack(views), part.text, part.look, part.colour)


def _first(views: torch.Tensor | None) -> torch.Tensor | None:
    return views[0] if views is not None else None


def _image_embeddings(model, top: TrunkTop | None, lower: torch.Tensor,
                      look: torch.Tensor | None = None, colour: torch.Tensor | None = None) -> torch.Tensor:
    """Unit joint-space vectors of photos from their lower trunk features (their pooled trunk
    output where ``top`` is None: ``_pooled_part``), their look tower's pooled features where
    the joint vector reads them (engine.joint_look), and their colour histograms where it reads
    those (engine.joint_colour)."""
    features = lower.to(_device(model), non_blocking=True).float()
    if top is not None:
        features = model.visual.trunk.forward_head(top(features.contiguous(memory_format=torch.channels_last)))
    joint = model.visual.head(features)
    if look is not None:
        joint = joint + look_projection(model)(look.to(_device(model), non_blocking=True).float())
    if colour is not None:
        joint = joint + colour_projection(model)(colour.to(_device(model), non_blocking=True).float())
    return torch.nn.functional.normalize(joint, dim=-1)


@torch.no_grad()
def evaluate(model, top: TrunkTop | None, lower: torch.Tensor, text_feats: torch.Tensor,
             look: torch.Tensor | None = None, colour: torch.Tensor | None = None) -> dict:
    """Text-to-image retrieval on cached features: query i's right answer is photo i."""
    model.visual.head.eval()
    model.text.proj.eval()
    chunks = math.ceil(len(lower) / 256)
    looks = look.split(256) if look is not None else [None] * chunks
    colours = colour.split(256) if colour is not None else [None] * chunks
    img = torch.cat([_image_embeddings(model, top, chunk, its, hue)
                     for chunk, its, hue in zip(lower.split(256), looks, colours)])
    txt = torch.nn.functional.normalize(model.text.proj(text_feats.to(img.device)), dim=-1)
    return retrieval_metrics(txt @ img.T)


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


