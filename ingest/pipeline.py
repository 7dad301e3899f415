"""Catalog to stored vectors, in stages: plan, decode, encode, upsert.

- plan: compare each row's fingerprints with the store's; unchanged products are skipped, a
  change of price or category only rewrites the payload, a new title or photo re-embeds.
- decode: photos are fetched and decoded by a thread pool a few batches ahead of the encoder.
- encode: photos and titles in batches.
- upsert: each batch is written as soon as it is encoded, so a killed run resumes where it
  stopped: the next run finds those products unchanged.
Every stage is timed; every skipped row or photo is reported with its row number and reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from engine.attributes import detect_attributes, typed_fields
from engine.encoder import Encoder
from engine.errors import InvalidImage, PruneRefused
from engine.fetch import fetch_url
from engine.images import decode_image, load_image_file
from engine.lexical import title_terms
from engine.local_features import LocalFeatures, extract_local_features, pack
from engine.products import ProductPayload, Products, new_payload, stored_form
from engine.settings import IngestSettings
from engine.store import ProductPoint, VectorStore
from ingest.catalog import Catalog, ProductRow

log = logging.getLogger(__name__)


@dataclass
class Problem:
    row: int
    product_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" (id {self.product_id})" if self.product_id else ""
        return f"row {self.row}{who}: {self.reason}"


@dataclass
class IngestSummary:
    catalog: str
    rows: int = 0
    added: int = 0
    updated: int = 0
    payload_only: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped_rows: list[Problem] = field(default_factory=list)
    bad_images: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)  # ids deleted by --prune (or that would be, in a dry run)
    # What became of each stored product id: added, updated, payload_only or unchanged (a row
    # that is not here was skipped, and its reason is among the problems).
    outcomes: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def stored(self) -> int:
        return self.added + self.updated + self.payload_only + self.unchanged

    def as_dict(self) -> dict:
        return {
            "catalog": self.catalog, "rows": self.rows, "added": self.added, "updated": self.updated,
            "payload_only": self.payload_only, "unchanged": self.unchanged, "deleted": self.deleted,
            "skipped": len(self.skipped_rows), "bad_images": len(self.bad_images),
            "problems": [str(p) for p in self.skipped_rows + self.bad_images],
            "warnings": list(self.warnings), "dry_run": self.dry_run, "pruned": list(self.pruned),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


class ImageSourceError(InvalidImage):
    """An image reference in a catalog that may not be read (outside the catalog's folder)."""


class ImageLoader:
    """Loads a catalog's image references: paths relative to the catalog, or http(s) URLs."""

    def __init__(self, base_dir: Path, settings: IngestSettings):
        self.base_dir = base_dir.resolve()
        self.settings = settings

    def resolve(self, source: str) -> Path:
        """The local file of ``source``; refuses paths that leave the catalog's folder."""
        path = Path(source).expanduser()
        path = (path if path.is_absolute() else self.base_dir / path).resolve()
        if not path.is_relative_to(self.base_dir):
            raise ImageSourceError(f"{source}: outside the catalog's folder {self.base_dir}")
        return path

    def load(self, source: str) -> Image.Image:
        limits = {"max_bytes": self.settings.max_image_bytes, "max_pixels": self.settings.max_image_pixels}
        if source.lower().startswith(("http://", "https://")):
            data = fetch_url(source, timeout_s=self.settings.url_timeout_s, max_bytes=self.settings.max_image_bytes,
                             allow_private=self.settings.allow_private_urls)
            return decode_image(data, source=source, **limits)
        if "://" in source:
            raise ImageSourceError(f"{source}: only local paths and http(s) URLs are read")
        return load_image_file(self.resolve(source), **limits)

    def locate(self, source: str) -> str:
        """An absolute path for a local photo, the URL itself for a remote one ('' when refused)."""
        if "://" in source:
            return source
        try:
            return str(self.resolve(source))
        except ImageSourceError:
            return ""

    def stamp(self, source: str) -> str:
        """What identifies this image's content cheaply: a file's size and mtime, or the URL."""
        if "://" in source:
            return source
        try:
            stat = self.resolve(source).stat()
            return f"{source}:{stat.st_size}:{stat.st_mtime_ns}"
        except (OSError, ImageSourceError):
            return f"{source}:missing"


def content_hash(row: ProductRow, loader: ImageLoader, model_tag: str) -> str:
    """Changes when the vectors would: the title, the photos, or the model."""
    stamps = [loader.stamp(source) for source in row.images]
    return _digest([model_tag, row.title, stamps])


def meta_hash(row: ProductRow) -> str:
    """Changes when only the payload would: price, category, free fields."""
    return _digest([row.price, row.category, row.fields])


def _digest(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def catalog_attributes(catalog: Catalog, settings: IngestSettings) -> dict[str, str]:
    """The catalog's attributes to index: those its format and the settings declare, and the
    detected ones unless detection is switched off."""
    declared = {**catalog.attributes, **settings.attributes}
    if not settings.detect_attributes:
        return declared
    return detect_attributes((row.fields for row in catalog.rows), declared)


def payload_of(row: ProductRow, c_hash: str, m_hash: str, model_tag: str, loader: ImageLoader) -> ProductPayload:
    return new_payload(row.product_id, row.title, row.price, row.category, row.images,
                       [loader.locate(source) for source in row.images], row.fields, c_hash, m_hash, model_tag)


def ingest_catalog(
    catalog: Catalog,
    encoder: Encoder,
    store: VectorStore,
    settings: IngestSettings | None = None,
    prune: bool = False,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> IngestSummary:
    """Bring the store in line with ``catalog``; returns what was done and what was skipped.

    Every row ends up counted once: ``summary.stored + len(summary.skipped_rows) == summary.rows``.
    With ``prune``, products the catalog no longer lists are deleted, unless they are more than
    ``settings.prune_max_share`` of the store: then ``PruneRefused`` before anything is written,
    unless ``force``. ``dry_run`` writes nothing and says what would be done (``summary.pruned``:
    the ids that would be deleted).
    """
    settings = settings or IngestSettings()
    summary = IngestSummary(str(catalog.path), rows=len(catalog.rows) + len(catalog.errors), dry_run=dry_run)
    summary.skipped_rows = [Problem(e.row, e.product_id, e.reason + (f" [{e.field}]" if e.field else ""))
                            for e in catalog.errors]
    loader = ImageLoader(catalog.base_dir, settings)
    started = time.perf_counter()
    products = Products(store)
    stored = products.bookkeeping()
    if prune:
        summary.pruned = _to_prune(catalog, stored, summary)
        _check_prune_share(len(summary.pruned), len(stored), settings.prune_max_share, force, dry_run, summary)
    attributes = {**catalog_attributes(catalog, settings), **store.attribute_indexes()}
    for row in catalog.rows:  # numbers a CSV read as text become numbers before they are hashed
        row.fields = typed_fields(row.fields, attributes)
    to_embed = _plan(catalog, stored, loader, encoder, products, summary, dry_run)
    if dry_run:
        summary.added = sum(row.product_id not in stored for row, *_ in to_embed)
        summary.updated, summary.deleted = len(to_embed) - summary.added, len(summary.pruned)
        return summary
    products.prune(summary.pruned)
    summary.deleted = len(summary.pruned)
    summary.seconds["plan"] = time.perf_counter() - started
    _embed_and_store(to_embed, stored, loader, encoder, products, settings, summary, progress, on_batch)
    t = time.perf_counter()
    store.index_attributes(attributes)
    store.optimize()
    summary.seconds["index"] = time.perf_counter() - t
    summary.seconds["total"] = time.perf_counter() - started
    return summary


def _plan(catalog, stored, loader, encoder, products, summary, dry_run) -> list[tuple[ProductRow, str, str]]:
    """Rows to embed; unchanged ones are counted, and a changed payload alone is rewritten here."""
    to_embed: list[tuple[ProductRow, str, str]] = []
    for row in catalog.rows:
        c_hash, m_hash = content_hash(row, loader, encoder.info.tag), meta_hash(row)
        previous = stored.get(row.product_id)
        if previous and previous.content_hash == c_hash:
            if previous.meta_hash == m_hash:
                summary.unchanged += 1
                summary.outcomes[row.product_id] = "unchanged"
            else:
                if not dry_run:
                    products.set_payload(row.product_id, payload_of(row, c_hash, m_hash, encoder.info.tag, loader))
                summary.payload_only += 1
                summary.outcomes[row.product_id] = "payload_only"
        else:
            to_embed.append((row, c_hash, m_hash))
    return to_embed


def _to_prune(catalog: Catalog, stored: dict, summary: IngestSummary) -> list[str]:
    """Stored products the catalog no longer lists.

    A product whose row is in the catalog but invalid this time (a typo in its price) is still
    listed: its stored version stays. A row too broken to tell whose it is (a broken quote)
    could be any product's, so then nothing is deleted and the summary says why.
    """
    unknown = [error.row for error in catalog.errors if not error.product_id]
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        message = (f"prune skipped: row(s) {shown} could not be read far enough to know their product id, "
                   "so no product is deleted; fix them and ingest with --prune again")
        summary.warnings.append(message)
        log.warning(message)
        return []
    listed = {row.product_id for row in catalog.rows} | {error.product_id for error in catalog.errors}
    return sorted(set(stored) - listed)


def _check_prune_share(gone: int, held: int, max_share: float, force: bool, dry_run: bool,
                       summary: IngestSummary) -> None:
    """An empty or cut-short catalog must not empty the store: a large prune needs ``force``."""
    if not gone or force or gone <= max_share * held:
        return
    message = (f"prune would delete {gone} of the {held} stored products ({gone / held:.0%}), more than "
               f"{max_share:.0%} of the store (SNAPSHOP_INGEST__PRUNE_MAX_SHARE). Is the catalog complete? "
               "See what would go with --dry-run; delete them anyway with --force")
    if dry_run:
        summary.warnings.append(message)
        return
    raise PruneRefused(message)


def _embed_and_store(to_embed, stored, loader, encoder, products, settings, summary, progress, on_batch) -> None:
    batch_size = settings.upsert_batch
    batches = [to_embed[i : i + batch_size] for i in range(0, len(to_embed), batch_size)]
    timings = {"decode_wait": 0.0, "encode": 0.0, "upsert": 0.0}
    bar = tqdm(total=len(to_embed), desc="ingest", unit="product", disable=not progress)
    with ThreadPoolExecutor(max_workers=settings.decode_workers) as pool:
        pending: deque[list[tuple[tuple, list[Future]]]] = deque()

        def submit(batch):
            pending.append([(item, [pool.submit(_load_photo, loader, src) for src in item[0].images]) for item in batch])

        queue = iter(batches)
        for batch in queue:  # fill the look-ahead window
            submit(batch)
            if len(pending) >= settings.lookahead_batches:
                break
        while pending:
            decoded = pending.popleft()
            next_batch = next(queue, None)
            if next_batch is not None:
                submit(next_batch)
            t = time.perf_counter()
            ready = _collect(decoded, summary)
            timings["decode_wait"] += time.perf_counter() - t
            points = _encode(ready, encoder, timings, loader)
            t = time.perf_counter()
            products.upsert(points)
            timings["upsert"] += time.perf_counter() - t
            for point in points:
                outcome = "updated" if point.product_id in stored else "added"
                summary.outcomes[point.product_id] = outcome
                setattr(summary, outcome, getattr(summary, outcome) + 1)
            bar.update(len(decoded))
            if on_batch:
                on_batch(len(points))
    bar.close()
    summary.seconds.update(timings)


def _load_photo(loader: ImageLoader, source: str) -> tuple[Image.Image, LocalFeatures]:
    """A decoded catalog photo and its local features, both made on a decode worker: OpenCV's SIFT
    releases the GIL, so it runs beside the encoder as decoding does."""
    image = loader.load(source)
    return image, extract_local_features(image)


def _collect(decoded, summary: IngestSummary):
    """Photos of each product that decoded; a product with none is skipped and reported."""
    ready = []
    for (row, c_hash, m_hash), futures in decoded:
        images = []
        for source, future in zip(row.images, futures):
            try:
                images.append(future.result())
            except InvalidImage as e:
                summary.bad_images.append(Problem(row.row, row.product_id, str(e)))
            except Exception as e:  # noqa: BLE001 - a decoder bug must not end the run: report it as this photo's problem
                summary.bad_images.append(Problem(row.row, row.product_id, f"{source}: {type(e).__name__}: {e}"))
        if images:
            ready.append((row, c_hash, m_hash, images))
        else:
            summary.skipped_rows.append(Problem(row.row, row.product_id, "no readable image; product not stored"))
    return ready


def _encode(ready, encoder: Encoder, timings: dict, loader: ImageLoader) -> list[ProductPoint]:
    if not ready:
        return []
    t = time.perf_counter()
    photos = [image for *_, images in ready for image, _ in images]
    photo_vectors, look_vectors = encoder.encode_catalog_photos(photos)
    titles = [row.title for row, *_ in ready]
    title_vectors = encoder.encode_texts(titles)
    sentence_vectors = encoder.encode_sentences(titles)
    timings["encode"] += time.perf_counter() - t
    points, offset = [], 0
    for (row, c_hash, m_hash, images), title_vector, sentence in zip(ready, title_vectors, sentence_vectors):
        vectors = photo_vectors[offset : offset + len(images)]
        looks = look_vectors[offset : offset + len(images)]
        offset += len(images)
        points.append(ProductPoint(row.product_id, np.ascontiguousarray(vectors), title_vector,
                                   stored_form(payload_of(row, c_hash, m_hash, encoder.info.tag, loader)), sentence,
                                   title_terms(row.title), np.ascontiguousarray(looks),
                                   pack([features for _, features in images])))
    return points
