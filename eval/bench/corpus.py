"""Catalogs at scale made from real ones: real embeddings, replicated with small noise.

The dev catalog's photos and titles are encoded once (cached under the bench's work folder);
a catalog of N products is then made by copying them round-robin, each copy moved by Gaussian
noise and put back on the unit sphere. Copies keep the real data's structure (categories, near
duplicates, the spread of the space), which uniform random vectors do not: those make every
nearest-neighbour problem look easy and every filter look uniform.

How far a copy moves is calibrated per vector by default: as far from its source as a real
product's nearest real neighbour typically is (the median 1-NN cosine), so a million products
are a thousand variants of the real ones rather than a thousand near-identical clones, which
would turn every query into a tie among clones.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.encoder import Encoder
from engine.images import load_image_file
from engine.lexical import title_terms
from engine.local_features import PACKED_WIDTH, extract_local_features, pack
from engine.products import new_payload, stored_form
from engine.settings import IngestSettings
from engine.store import ProductPoint, VectorStore
from ingest.catalog import ProductRow, read_catalog
from ingest.pipeline import ImageLoader


@dataclass
class RealEmbeddings:
    """Encoded products of a real catalog: the seeds of a synthetic one."""

    product_ids: list[str]
    titles: list[str]
    categories: list[str]
    prices: np.ndarray  # (S,)
    image_files: list[str]  # absolute paths
    fields: list[dict]
    image: np.ndarray  # (S, dim) one photo per product
    text: np.ndarray  # (S, dim) title in the joint space
    sentence: np.ndarray  # (S, 384)
    terms: list[tuple[list[int], list[float]]]
    look: np.ndarray | None = None  # (S, look_dim) appearance vectors, when the model makes them
    local: list[np.ndarray | None] | None = None  # each photo's packed local features (engine.local_features)

    def __len__(self) -> int:
        return len(self.product_ids)


def real_embeddings(encoder: Encoder, catalog_path: Path, count: int, cache_dir: Path) -> RealEmbeddings:
    """The first ``count`` products of the catalog with their vectors, from the cache when it has them."""
    catalog = read_catalog(catalog_path)
    rows = [row for row in catalog.rows if row.images][:count]
    stamp = (f"{Path(catalog_path).resolve()}:{Path(catalog_path).stat().st_mtime_ns}:{len(rows)}:{encoder.info.tag}"
             ":local")
    key = hashlib.sha256(f"{stamp}:{encoder.dtype}".encode()).hexdigest()[:16]
    vectors_path, meta_path = cache_dir / f"real-{key}.npz", cache_dir / f"real-{key}.json"
    if vectors_path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        arrays = np.load(vectors_path)
        return RealEmbeddings(meta["product_ids"], meta["titles"], meta["categories"], arrays["prices"],
                              meta["image_files"], meta["fields"], arrays["image"], arrays["text"],
                              arrays["sentence"], [tuple(t) for t in meta["terms"]],
                              arrays["look"] if "look" in arrays.files else None,
                              _split_local(arrays["local_rows"], arrays["local_counts"]))
    real = _encode_rows(encoder, rows, ImageLoader(catalog.base_dir, IngestSettings()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    looks = {"look": real.look} if real.look is not None else {}
    counts = np.array([len(rows) if rows is not None else 0 for rows in real.local], dtype=np.int64)
    packed = [rows for rows in real.local if rows is not None]
    local_rows = np.concatenate(packed) if packed else np.zeros((0, PACKED_WIDTH), np.uint8)
    np.savez(vectors_path, prices=real.prices, image=real.image, text=real.text, sentence=real.sentence,
             local_rows=local_rows, local_counts=counts, **looks)
    meta_path.write_text(json.dumps({
        "stamp": stamp, "product_ids": real.product_ids, "titles": real.titles, "categories": real.categories,
        "image_files": real.image_files, "fields": real.fields, "terms": real.terms}))
    return real


def _encode_rows(encoder: Encoder, rows: list[ProductRow], loader: ImageLoader, chunk: int = 256) -> RealEmbeddings:
    """Each product's first photo and its title, encoded like ingest does (photos decoded by threads)."""
    files = [loader.locate(row.images[0]) for row in rows]
    joints, looks, kept, local = [], [], [], []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(rows), chunk):
            decoded = list(pool.map(_try_load, files[start : start + chunk]))
            batch = [(i, image) for i, image in enumerate(decoded, start) if image is not None]
            joint, look = photo_vectors(encoder, [image for _, image in batch])
            local += pool.map(lambda image: pack([extract_local_features(image)]), [image for _, image in batch])
            joints.append(joint)
            looks.append(look)
            kept.extend(i for i, _ in batch)
    rows = [rows[i] for i in kept]
    titles = [row.title for row in rows]
    return RealEmbeddings(
        product_ids=[row.product_id for row in rows], titles=titles,
        categories=[row.category or "" for row in rows],
        prices=np.asarray([row.price if row.price is not None else 0.0 for row in rows], dtype=np.float32),
        image_files=[files[i] for i in kept], fields=[dict(row.fields) for row in rows],
        image=np.concatenate(joints) if joints else np.zeros((0, encoder.info.dim), np.float32),
        text=encoder.encode_texts(titles), sentence=encoder.encode_sentences(titles),
        terms=[title_terms(title) for title in titles],
        look=np.concatenate(looks) if looks and looks[0] is not None else None, local=local,
    )


def _split_local(rows: np.ndarray, counts: np.ndarray) -> list[np.ndarray | None]:
    """Each product's packed local features from their concatenation (None where a photo had none)."""
    ends = np.cumsum(counts)
    return [rows[end - count : end] if count else None for end, count in zip(ends, counts)]


def photo_vectors(encoder: Encoder, images: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Joint-space vectors of photos, and their appearance vectors when the model makes them."""
    if getattr(encoder.info, "look_dim", 0) and hasattr(encoder, "encode_photos"):
        return encoder.encode_photos(images)
    return encoder.encode_images(images), None


def _try_load(path: str):
    try:
        return load_image_file(Path(path))
    except Exception:  # noqa: BLE001 - a broken photo in the dev data: that product is left out
        return None


@dataclass
class SyntheticCatalog:
    """N products made from real ones: product i copies real product ``source[i]``, plus noise."""

    source: np.ndarray  # (N,) index into the real products
    # The image vectors are float32 (exact search over them is the latency baseline); the others
    # float16, to hold a million products' vectors in a few GB. The store is given these very
    # values, so exact search over them is still exact.
    image: np.ndarray  # (N, dim)
    text: np.ndarray  # (N, dim)
    sentence: np.ndarray  # (N, 384)
    prices: np.ndarray  # (N,)
    category_codes: np.ndarray  # (N,) index into ``category_names``
    category_names: list[str]
    noise: dict[str, float]  # norm of the noise added to each vector kind
    look: np.ndarray | None = None  # (N, look_dim) float16, as the store keeps them

    def __len__(self) -> int:
        return len(self.source)

    @staticmethod
    def product_id(index: int) -> str:
        return f"syn-{index}"

    @staticmethod
    def index_of(product_id: str) -> int:
        return int(product_id.removeprefix("syn-"))


VECTOR_KINDS = ("image", "text", "sentence", "look")


def calibrated_noise(real: RealEmbeddings, sample: int = 1000, seed: int = 0) -> dict[str, float]:
    """Per vector kind, the noise norm that puts a copy at the median real 1-NN cosine from its source.

    Noise of norm r is almost orthogonal to a unit vector in these dimensions, so the copy's
    cosine to its source is 1 / sqrt(1 + r^2).
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(real), min(sample, len(real)), replace=False)
    out = {}
    for name in VECTOR_KINDS:
        matrix = getattr(real, name)
        if matrix is None or len(real) < 2:
            continue
        matrix = matrix.astype(np.float32)
        similarity = matrix[rows] @ matrix.T
        similarity[np.arange(len(rows)), rows] = -np.inf
        nearest = float(np.clip(np.median(similarity.max(axis=1)), 0.05, 0.999))
        out[name] = round(float(np.sqrt(1 / nearest**2 - 1)), 4)
    return out


def replicate(real: RealEmbeddings, size: int, noise: float | dict[str, float] | None = None, seed: int = 0,
              chunk: int = 65_536) -> SyntheticCatalog:
    """``size`` products: real ones round-robin, each vector plus Gaussian noise of norm about ``noise``
    (one for all kinds, one per kind, or None: calibrated on the real catalog).

    The first copy of every real product is exact (no noise), so the real catalog is a subset.
    """
    if noise is None:
        noise = calibrated_noise(real, seed=seed)
    elif not isinstance(noise, dict):
        noise = {name: float(noise) for name in VECTOR_KINDS}
    rng = np.random.default_rng(seed)
    source = np.arange(size) % len(real)
    names = sorted(set(real.categories))
    codes = np.asarray([names.index(c) for c in real.categories], dtype=np.int32)
    catalog = SyntheticCatalog(
        source=source,
        image=np.empty((size, real.image.shape[1]), np.float32), text=np.empty((size, real.text.shape[1]), np.float16),
        sentence=np.empty((size, real.sentence.shape[1]), np.float16),
        prices=(real.prices[source] * rng.uniform(0.8, 1.25, size)).round(2).astype(np.float32),
        category_codes=codes[source], category_names=names, noise=noise,
        look=np.empty((size, real.look.shape[1]), np.float16) if real.look is not None else None,
    )
    vectors = ("image", "text", "sentence") + (("look",) if real.look is not None else ())
    for start in range(0, size, chunk):
        part = slice(start, min(start + chunk, size))
        exact = source[part] == np.arange(part.start, part.stop)
        for name in vectors:
            seeds = getattr(real, name)[source[part]]
            scale = noise[name] / np.sqrt(seeds.shape[1])
            moved = seeds + rng.standard_normal(seeds.shape, dtype=np.float32) * scale
            moved[exact] = seeds[exact]
            getattr(catalog, name)[part] = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    return catalog


def spill(synthetic: SyntheticCatalog, folder: Path) -> SyntheticCatalog:
    """The catalog with its vectors moved to files in ``folder``, read back as memory maps.

    The store is measured as a server runs it, and a server does not hold a second copy of every
    vector for exact search: in files, the vectors are pages the system may drop while the
    store's searches keep their own pages in memory (at a million products 6.3 GB of them beside
    the store's 9 GB on a 24 GB machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    moved = {}
    for name in VECTOR_KINDS:
        matrix = getattr(synthetic, name)
        if matrix is None:
            continue
        path = folder / f"{name}.npy"
        np.save(path, matrix)
        moved[name] = np.load(path, mmap_mode="c")  # copy-on-write: writable for torch, never written
    return replace(synthetic, **moved)


def points(real: RealEmbeddings, synthetic: SyntheticCatalog, start: int, stop: int) -> Iterator[ProductPoint]:
    """Products ``start..stop`` as the store takes them: vectors and a payload shaped like ingest's."""
    for i in range(start, stop):
        s = int(synthetic.source[i])
        payload = stored_form(new_payload(
            synthetic.product_id(i), real.titles[s], float(synthetic.prices[i]),
            synthetic.category_names[synthetic.category_codes[i]], [Path(real.image_files[s]).name],
            [real.image_files[s]], real.fields[s], f"{i:024x}", f"{s:024x}", "bench"))
        look = synthetic.look[i : i + 1] if synthetic.look is not None else None
        # A copy keeps its source photo's local features: the bytes stored and read per product
        # are those of a real photo.
        local = real.local[s] if real.local is not None else None
        yield ProductPoint(synthetic.product_id(i), synthetic.image[i : i + 1], synthetic.text[i], payload,
                           synthetic.sentence[i], real.terms[s], look_vectors=look, local_features=local)


def bulk_load(store: VectorStore, real: RealEmbeddings, synthetic: SyntheticCatalog, batch: int) -> dict:
    """Upsert every product in big batches, the store building its graphs a segment at a time as
    they fill (engine.store.indexing), then the last segment's; seconds of each part."""
    started, indexed_before = time.perf_counter(), store.index_seconds
    for start in range(0, len(synthetic), batch):
        store.upsert(list(points(real, synthetic, start, min(start + batch, len(synthetic)))))
    upserted, while_loading = time.perf_counter(), store.index_seconds - indexed_before
    store.optimize()
    done = time.perf_counter()
    writing = upserted - started - while_loading
    return {"products": len(synthetic), "batch": batch, "upsert_s": round(writing, 2),
            "upsert_per_s": round(len(synthetic) / writing, 1), "index_while_loading_s": round(while_loading, 2),
            "optimize_s": round(done - upserted, 2), "total_s": round(done - started, 2)}
