"""Contrastive training of the offline model's heads on a shop's own image-title pairs (LiT).

The towers stay locked, so their outputs are computed once per photo and title and cached;
the heads then train for many epochs on those features in seconds. The loss is open_clip's
CLIP loss; a held-out validation split (products never trained on) is scored every epoch
with text-to-image Recall@1/10 and MRR, and the best epoch's heads are saved.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.errors import InvalidImage
from engine.images import load_image_file
from engine.lit_model import build_lit_model, trainable_state
from engine.look_training import LookConfig, pooled_features, train_look_head
from engine.registry import resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPair:
    product_id: str
    image_path: Path
    title: str


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    val_fraction: float = 0.25
    seed: int = 0
    hflip_views: bool = True  # a mirrored photo is the same product: a free second view


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
    history: list[dict] = field(default_factory=list)


def split_validation(product_ids: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """A deterministic set of validation product ids: the same catalog and seed give the same split."""
    unique = sorted(set(product_ids))
    rng = random.Random(seed)
    rng.shuffle(unique)
    return set(unique[: int(round(len(unique) * val_fraction))])


def train_lit_heads(
    pairs: Sequence[TrainingPair],
    out_path: Path,
    config: TrainConfig = TrainConfig(),
    model_name: str = "snapshop-lit-fashion",
    progress: bool = True,
    look: LookConfig | None = LookConfig(),
) -> TrainReport:
    """Train the heads of the registry model ``model_name`` and save them to ``out_path``."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    spec = resolve_model(model_name)
    if spec.kind != "lit":
        raise ValueError(f"`snapshop train` trains the heads of a LiT model; '{model_name}' is {spec.kind}")
    model, preprocess, tokenizer, _ = build_lit_model(spec.config_path, heads_path=None)
    # Not freeze_bn_stats: open_clip's BN freezing swaps timm's BatchNormAct2d for a plain frozen
    # BN and silently drops its activation. The trunk only ever runs in eval mode here anyway.
    model.lock_image_tower()
    model.lock_text_tower(freeze_layer_norm=True)

    image_feats, kept, skipped = _image_features(model, preprocess, pairs, config.hflip_views, progress)
    titles = [pair.title for pair in kept]
    text_feats = _text_features(model, tokenizer, titles, progress)
    ids = [pair.product_id for pair in kept]
    val_ids = split_validation(ids, config.val_fraction, config.seed)
    is_val = torch.tensor([pid in val_ids for pid in ids])
    train_idx = torch.nonzero(~is_val).squeeze(1)
    val_idx = torch.nonzero(is_val).squeeze(1)
    if len(train_idx) < 2:
        raise ValueError(f"too few training pairs ({len(train_idx)}) after the validation split")

    history, best = _fit(model, image_feats, text_feats, train_idx, val_idx, config, progress)
    model.load_state_dict(best["state"], strict=False)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = TrainReport(
        train_products=len(train_idx), val_products=len(val_idx), skipped_images=skipped,
        best_epoch=best["epoch"], val_recall_at_1=best["r1"], val_recall_at_10=best["r10"],
        val_mrr=best["mrr"], seconds=round(time.perf_counter() - started, 1), history=history,
    )
    metadata = {"model": model_name, "val_seed": config.seed, "val_fraction": config.val_fraction,
                "report": {k: v for k, v in asdict(report).items() if k not in ("history", "skipped_images")},
                "config": asdict(config)}
    checkpoint = {"state_dict": best["state"], "metadata": metadata}
    if look is not None:
        checkpoint = _with_look_head(checkpoint, model, preprocess, kept, val_ids, look, progress)
    torch.save(checkpoint, out_path)
    return report


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


def _with_look_head(checkpoint: dict, model, preprocess, pairs: list[TrainingPair], val_ids: set[str],
                    look: LookConfig, progress: bool) -> dict:
    """The checkpoint with an appearance head trained on the pairs' photos (engine.look_head);
    every photo must be readable."""
    trunk = model.visual.trunk.eval().to(memory_format=torch.channels_last)
    train = [p.image_path for p in pairs if p.product_id not in val_ids]
    val = [p.image_path for p in pairs if p.product_id in val_ids]

    def features(paths, shopper, seed, desc):
        return pooled_features(trunk, preprocess, paths, load_image_file, look.p, shopper, seed, desc, progress)

    head, report = train_look_head(
        features(train, False, 0, "catalog photos"), features(train, True, look.views_seed, "shopper views"),
        features(val, False, 0, "validation photos"), features(val, True, look.views_seed + 1, "validation views"),
        look, progress,
    )
    metadata = {**checkpoint["metadata"],
                "look_head": {"width": int(head.center.shape[0]), "dim": head.dim, "p": head.p, "report": report}}
    # Half precision on disk (the weights are loaded back into fp32): 3.3 MB instead of 6.6 MB.
    return {**checkpoint, "metadata": metadata, "look_head": {k: v.half() for k, v in head.state_dict().items()}}


def _image_features(model, preprocess, pairs, hflip: bool, progress: bool):
    """Pooled trunk features (views, n, 1280) of every readable photo; unreadable ones are reported."""
    trunk = model.visual.trunk.eval().to(memory_format=torch.channels_last)
    kept, skipped, batches = [], [], []
    batch_size = 64

    def load(pair: TrainingPair):
        try:
            return pair, preprocess(load_image_file(pair.image_path))
        except InvalidImage as e:
            return pair, str(e)

    with ThreadPoolExecutor(max_workers=2) as pool, torch.inference_mode():
        bar = tqdm(total=len(pairs), desc="photo features", unit="img", disable=not progress)
        for start in range(0, len(pairs), batch_size):
            loaded = list(pool.map(load, pairs[start : start + batch_size]))
            tensors = []
            for pair, result in loaded:
                if isinstance(result, str):
                    skipped.append(result)
                else:
                    kept.append(pair)
                    tensors.append(result)
            if tensors:
                pixels = torch.stack(tensors).contiguous(memory_format=torch.channels_last)
                views = [trunk(pixels)]
                if hflip:
                    views.append(trunk(torch.flip(pixels, dims=[3])))
                batches.append(torch.stack(views))
            bar.update(len(loaded))
        bar.close()
    if skipped:
        log.warning("%d photos could not be read and were left out of training", len(skipped))
    return torch.cat(batches, dim=1), kept, skipped


def _text_features(model, tokenizer, titles: list[str], progress: bool) -> torch.Tensor:
    """Mean-pooled text-tower outputs (n, 384): the input of the text head."""
    text = model.text.eval()
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(titles), 256), desc="title features", disable=not progress):
            tokens = tokenizer(titles[start : start + 256])
            mask = (tokens != text.config.pad_token_id).long()
            hidden = text.transformer(input_ids=tokens, attention_mask=mask)
            out.append(text.pooler(hidden, mask))
    return torch.cat(out)


def _fit(model, image_feats, text_feats, train_idx, val_idx, config: TrainConfig, progress: bool):
    from open_clip.loss import ClipLoss

    image_head, text_head = model.visual.head, model.text.proj
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=total, pct_start=0.1
    )
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(config.seed)
    history, best = [], {"mrr": -1.0}
    bar = tqdm(range(config.epochs), desc="training heads", unit="epoch", disable=not progress)
    for epoch in bar:
        image_head.train()
        text_head.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            view = torch.randint(0, image_feats.shape[0], (len(batch),), generator=generator)
            images = image_feats[view, batch]
            img = torch.nn.functional.normalize(image_head(images), dim=-1)
            txt = torch.nn.functional.normalize(text_head(text_feats[batch]), dim=-1)
            loss = loss_fn(img, txt, model.logit_scale.exp())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
        metrics = evaluate_heads(model, image_feats[0, val_idx], text_feats[val_idx]) if len(val_idx) else {}
        row = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), **metrics}
        history.append(row)
        bar.set_postfix(loss=row["loss"], r10=metrics.get("r10"), mrr=metrics.get("mrr"))
        if not len(val_idx) or metrics["mrr"] > best["mrr"]:
            best = {"epoch": epoch + 1, "state": trainable_state(model), **metrics}
    best.setdefault("r1", 0.0)
    best.setdefault("r10", 0.0)
    best.setdefault("mrr", 0.0)
    return history, best


@torch.no_grad()
def evaluate_heads(model, image_feats: torch.Tensor, text_feats: torch.Tensor) -> dict:
    """Text-to-image retrieval on features: query i's right answer is photo i."""
    model.visual.head.eval()
    model.text.proj.eval()
    img = torch.nn.functional.normalize(model.visual.head(image_feats), dim=-1)
    txt = torch.nn.functional.normalize(model.text.proj(text_feats), dim=-1)
    return retrieval_metrics(txt @ img.T)


def retrieval_metrics(similarity: torch.Tensor) -> dict:
    """Recall@1/10 and MRR where the relevant item of row i is column i."""
    correct = similarity.diagonal().unsqueeze(1)
    ranks = (similarity > correct).sum(dim=1) + 1
    return {
        "r1": round(float((ranks <= 1).float().mean()), 4),
        "r10": round(float((ranks <= 10).float().mean()), 4),
        "mrr": round(float((1.0 / ranks.float()).mean()), 4),
    }


