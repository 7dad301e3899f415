"""The encoder: images and texts in, unit vectors in one joint space out.

Vectors are L2-normalised here, at the boundary, so the store and the ranker can assume
cosine everywhere.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from engine.image_runtime import OnnxTrunks
from engine.joint_colour import colour_histograms
from engine.joint_heads import (
    joint_heads,
    joint_vectors,
    look_parts,
    photo_parts,
    reads_colours,
    reads_stages,
    text_parts,
    trunk_with_stages,
)
from engine.joint_look import look_projection, pooled
from engine.look_head import gem
from engine.model_info import ModelInfo
from engine.text_runtime import OnnxTextTower
from engine.trunk_top import feature_maps

log = logging.getLogger(__name__)


@dataclass
class Encoder:
    """A loaded model with batched, normalised image and text encoding."""

    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    info: ModelInfo
    device: torch.device
    batch_size: int = 32
    metadata: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32  # the towers' compute precision (see load_encoder)
    text_dtype: torch.dtype | None = None  # the text tower's, where it differs (None: ``dtype``)
    # Query-sized texts' tower pass in ONNX Runtime, where loaded (engine.text_runtime).
    text_runtime: OnnxTextTower | None = None
    # The image trunks' passes on a CPU in ONNX Runtime, where loaded (engine.image_runtime).
    image_runtime: OnnxTrunks | None = None
    # The last text batch's pooled tower output, keyed by its texts: a title's joint-space vector
    # and its sentence vector come from one transformer pass (see _pooled).
    _pooled_memo: tuple | None = field(default=None, repr=False, compare=False)
    _pool: tuple | None = field(default=None, repr=False, compare=False)  # (workers, pid, executor): _chunked
    _text_memo: _Memo = field(default_factory=lambda: _Memo(4096), repr=False, compare=False)
    _sentence_memo: _Memo = field(default_factory=lambda: _Memo(4096), repr=False, compare=False)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One unit vector per image, shape (n, dim)."""
        if look_projection(self.model) is not None or reads_colours(self.model) or joint_heads(self.model):
            # the joint vector reads the look tower, colours or more heads too
            return self.encode_photos(images)[0]
        out = np.zeros((len(images), self.info.dim), dtype=np.float32)

        def encode(start: int, chunk: Sequence[Image.Image]) -> None:
            out[start : start + len(chunk)] = self._image_chunk(chunk)

        self._chunked(images, encode)
        return out

    @torch.inference_mode()
    def _image_chunk(self, chunk: Sequence[Image.Image]) -> np.ndarray:
        return self._normalise(self.model.encode_image(self._pixels(chunk)))

    def _pixels(self, images: Sequence[Image.Image], preprocess=None) -> torch.Tensor:
        """Preprocessed images as one batch on the device, in the towers' precision and layout."""
        pixels = torch.stack([(preprocess or self.preprocess)(image) for image in images])
        if self.device.type == "cuda":
            pixels = pixels.pin_memory()  # lets the copy to the GPU run without a staging copy
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        return pixels.contiguous(memory_format=torch.channels_last)

    def _runtime_pixels(self, images: Sequence[Image.Image], preprocess=None) -> np.ndarray:
        """Preprocessed images as one fp32 batch in ONNX Runtime's layout (N, C, H, W)."""
        return torch.stack([(preprocess or self.preprocess)(image) for image in images]).numpy()

    def encode_photos(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Joint-space vectors and appearance vectors of photos.

        The appearance vector is the image trunk's (or the model's look tower's) last feature map, GeM-pooled, through the
        model's appearance head where it has one (``engine.look_head``): richer than the joint
        space for telling a shopper's photo of *this* product from its look-alikes (measured here
        on shopper-like photos of 2,000 products: Recall@1 0.84 pooled, 0.94 with the head, 0.60
        in the joint space). Models without a separate trunk return their joint vector for both.

        On a CPU with several threads, a batch is cut into chunks of ``CPU_PHOTO_CHUNK`` photos
        encoded side by side, one thread each: a convolution over 32 photos at once streams
        activations far bigger than the caches and waits on its threads at every layer. Measured
        here on 2 cores, 192 photos: 35 photos/s batched on 2 threads, 70/s as chunks of 4.
        """
        trunk = getattr(getattr(self.model, "visual", None), "trunk", None)
        if trunk is None or not hasattr(trunk, "forward_features"):
            joint = self.encode_images(images)
            return joint, joint
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        if getattr(self.model, "look_trunk", None) is not None and workers > 1 and 1 < len(images) <= CPU_PHOTO_CHUNK:
            # A query's photo (its regions): the two trunks side by side, one core each, rather
            # than one after the other. A single image stays in the calling thread, where
            # torch's FLOP counter (the bench's) sees all of its work.
            pool = self._photo_pool(workers)
            joint_done = pool.submit(self._joint_chunk, trunk, images)
            look_done = pool.submit(self._look_chunk, images, None)
            (joint_part, _), (look, look_part) = joint_done.result(), look_done.result()
            return self._joint(joint_part, look_part), look
        joint = np.zeros((len(images), self.info.dim), dtype=np.float32)
        look = np.zeros((len(images), self.info.look_dim), dtype=np.float32)

        def encode(start: int, chunk: Sequence[Image.Image]) -> None:
            joint_part, feature_map = self._joint_chunk(trunk, chunk)
            look[start : start + len(chunk)], look_part = self._look_chunk(chunk, feature_map)
            joint[start : start + len(chunk)] = self._joint(joint_part, look_part)

        self._chunked(images, encode)
        return joint, look

    def encode_catalog_photos(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """``encode_photos`` for a shop's own photos (ingest): where the model names catalog views
        (``engine.catalog_views``: the product heaped, or lined up on a shelf), each photo's
        appearance vector is the direction of its own plus ``weight`` times its views' mean, so a
        shopper's photo of a crate of apples finds the studio apple more often (docs/quality.md).
        """
        joint, look = self.encode_photos(images)
        views = getattr(self.model, "catalog_views", None)
        if not views or not len(images):
            return joint, look
        from engine.catalog_views import catalog_views

        count, weight = int(views["count"]), float(views["weight"])
        made = [view for image in images for view in catalog_views(image, count)]
        view_looks = self._looks(made).reshape(len(images), count, -1)
        blended = look + weight * view_looks.mean(axis=1)
        return joint, (blended / np.linalg.norm(blended, axis=1, keepdims=True)).astype(np.float32)

    def _looks(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Appearance vectors alone: through the look tower only, where the model has one."""
        if getattr(self.model, "look_trunk", None) is None:
            return self.encode_photos(images)[1]
        out = np.zeros((len(images), self.info.look_dim), dtype=np.float32)

        def encode(start: int, chunk: Sequence[Image.Image]) -> None:
            out[start : start + len(chunk)] = self._look_chunk(chunk, None)[0]

        self._chunked(images, encode)
        return out

    def encode_query_photo(self, joint_regions: Sequence[Image.Image],
                           look_regions: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """A query photo's search regions (``engine.regions``): joint-space vectors of
        ``joint_regions``, appearance vectors of ``look_regions``.

        With a look tower of its own (version 3 on), the two trunks run side by side on a CPU with
        two or more threads, one core each, each on its own regions. A model whose one trunk makes
        both vectors encodes the regions of both once.
        """
        trunk = getattr(getattr(self.model, "visual", None), "trunk", None)
        if getattr(self.model, "look_trunk", None) is None or not hasattr(trunk, "forward_features"):
            # A region in both lists is encoded once (images compare by content: keyed by identity).
            unique = list({id(image): image for image in [*joint_regions, *look_regions]}.values())
            row = {id(image): i for i, image in enumerate(unique)}
            joint, look = self.encode_photos(unique)
            return joint[[row[id(i)] for i in joint_regions]], look[[row[id(i)] for i in look_regions]]
        joint_regions, look_regions = list(joint_regions), list(look_regions)
        # Where the joint vector has a look-tower part (engine.joint_look), the look tower reads the
        # joint regions too.
        look_in = look_regions if look_projection(self.model) is None else list(
            {id(image): image for image in [*look_regions, *joint_regions]}.values())
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        if workers > 1:
            pool = self._photo_pool(workers)
            joint_done = pool.submit(self._joint_chunk, trunk, joint_regions)
            look_done = pool.submit(self._look_chunk, look_in, None)
            (image_part, _), (looks, look_part) = joint_done.result(), look_done.result()
        else:
            with self._threads_for(1):
                (image_part, _), (looks, look_part) = self._joint_chunk(trunk, joint_regions), self._look_chunk(look_in, None)
        row = {id(image): i for i, image in enumerate(look_in)}
        if look_part is not None:
            look_part = look_part[[row[id(image)] for image in joint_regions]]
        return self._joint(image_part, look_part), looks[[row[id(image)] for image in look_regions]]

    @torch.inference_mode()
    def _joint_chunk(self, trunk, chunk: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each joint head's image-tower part of photos' joint-space vectors, (n, heads, dim), with
        their colours' and the trunk stages' where a head reads them (not normalised: the look
        tower may add its part, ``_joint``; engine.joint_heads), and the trunk's feature map the
        appearance vector reads where the model has no look tower of its own
        (``engine.trunk_top.feature_maps``). The trunk runs in ONNX Runtime where it is loaded
        (only for models with a look tower: no appearance map then)."""
        stages = None
        if self.image_runtime is not None:
            (joint_map, stages), look_map = self.image_runtime.joint_maps(self._runtime_pixels(chunk)), None
        elif reads_stages(self.model):  # heads only: no trained top, one map for both
            joint_map, stages = trunk_with_stages(trunk, self._pixels(chunk))
            look_map = joint_map
        else:
            joint_map, look_map = feature_maps(self.model, self._pixels(chunk))
        colours = colour_histograms(chunk) if reads_colours(self.model) else None  # engine.joint_colour
        return photo_parts(self.model, trunk.forward_head(joint_map), colours, stages), look_map

    @torch.inference_mode()
    def _look_chunk(self, chunk: Sequence[Image.Image],
                    feature_map: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor | None]:
        """Appearance vectors of photos: from the look tower's own trunk where the model has one
        (``engine.lit_model.build_look_trunk``; in ONNX Runtime where it is loaded), else from the
        image trunk's ``feature_map``; and each joint head's look-tower part of their joint-space
        vectors where the model has one (``engine.joint_look``, ``engine.joint_heads``)."""
        look_trunk = getattr(self.model, "look_trunk", None)
        if look_trunk is not None and self.image_runtime is not None:
            feature_map = self.image_runtime.look_map(self._runtime_pixels(chunk, self.model.look_preprocess))
        elif look_trunk is not None:
            feature_map = look_trunk.forward_features(self._pixels(chunk, self.model.look_preprocess))
        head = getattr(self.model, "look_head", None)
        look = self._normalise(head(head.pool(feature_map)) if head is not None else gem(feature_map, 2.0))
        return look, look_parts(self.model, pooled(feature_map)) if look_trunk is not None else None

    @torch.inference_mode()
    def _joint(self, image_part: torch.Tensor, look_part: torch.Tensor | None) -> np.ndarray:
        """Unit joint-space vectors from each head's image-tower part and look-tower part, if any."""
        return joint_vectors(image_part if look_part is None else image_part + look_part).cpu().numpy()

    def _chunked(self, items: Sequence, encode) -> None:
        """Call ``encode(start, chunk)`` over ``items``: on a multi-threaded CPU as small chunks on
        parallel one-thread workers (see ``encode_photos``), elsewhere as the batch size's chunks."""
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        if workers == 1 or len(items) <= QUERY_BATCH:
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                with self._threads_for(len(chunk)):
                    encode(start, chunk)
            return
        pool = self._photo_pool(workers)
        starts = range(0, len(items), CPU_PHOTO_CHUNK)
        for done in [pool.submit(encode, start, items[start : start + CPU_PHOTO_CHUNK]) for start in starts]:
            done.result()

    def _photo_pool(self, workers: int) -> ThreadPoolExecutor:
        with _POOL_LOCK:
            # Keyed by process too: a forked child inherits the pool but not its threads.
            if self._pool is None or self._pool[:2] != (workers, os.getpid()):
                # The thread count is per thread: each worker computes on its own one.
                self._pool = (workers, os.getpid(), ThreadPoolExecutor(
                    workers, thread_name_prefix="encode", initializer=torch.set_num_threads, initargs=(1,)))
            return self._pool[2]

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text, shape (n, dim)."""
        tower = self.hf_text_tower()
        if tower is not None:
            return joint_vectors(text_parts(self.model, self._pooled(texts))).cpu().numpy()
        out = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(_non_blank(texts[start : start + self.batch_size])).to(self.device)
            with self._threads_for(len(tokens)):
                out[start : start + len(tokens)] = self._normalise(self.model.encode_text(tokens))
        return out

    def encode_text(self, text: str) -> np.ndarray:
        """One text's unit vector; shoppers repeat queries ("black dress"), so the last 4,096 are kept."""
        return self._text_memo.get(text, lambda: self.encode_texts([text])[0])

    @torch.inference_mode()
    def encode_sentences(self, texts: Sequence[str]) -> np.ndarray:
        """MiniLM-L6 sentence embeddings (sentence-transformers all-MiniLM-L6-v2), shape (n, 384).

        Text-to-title similarity in a text-only space: it knows that "sneakers" and "sports
        shoes" mean one thing, which the joint space learned only as far as photos showed it.
        """
        if self._sentence_from_tower():
            return self._normalise(self._pooled(texts))
        from engine.model_loading import sentence_model

        return sentence_model().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True).astype(np.float32)

    def encode_sentence(self, text: str) -> np.ndarray:
        """One text's sentence embedding, the last 4,096 kept (see ``encode_text``)."""
        return self._sentence_memo.get(text, lambda: self.encode_sentences([text])[0])

    def _sentence_from_tower(self) -> bool:
        # The offline model's text tower *is* all-MiniLM-L6-v2 with mean pooling: its pooled
        # output before the head is the sentence embedding, so no second model is loaded.
        text = self.hf_text_tower()
        return getattr(getattr(text, "config", None), "model_type", None) == "bert"

    def hf_text_tower(self) -> torch.nn.Module | None:
        """The text tower when it is a Hugging Face transformer masked by its pad token, else None."""
        text = getattr(self.model, "text", None)
        if not all(hasattr(text, name) for name in ("transformer", "pooler", "proj", "config")):
            return None
        if getattr(text.config, "pad_token_id", None) is None or getattr(text, "output_tokens", False):
            return None
        return text

    def _pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """The tower's pooled output (before the head) for each text, shape (n, width).

        Titles are encoded twice in a row, for the joint space and as sentences (ingest and every
        text query do so), and both are functions of this output: the last batch is kept so the
        second call costs no transformer pass. Sequences are cut after the batch's longest text
        instead of the tokenizer's fixed context (48 tokens): a title has about 10, and the pad
        positions are masked out anyway, so the vectors are the same.
        """
        key = tuple(_non_blank(texts))
        memo = self._pooled_memo  # one read: another thread may replace it meanwhile
        if memo is not None and memo[0] == key:
            return memo[1]
        tower = self.hf_text_tower()
        pad = tower.config.pad_token_id
        parts = []
        in_runtime = self.text_runtime is not None and len(key) <= QUERY_BATCH  # a query: ONNX Runtime
        for start in range(0, len(key), self.batch_size):
            chunk = list(key[start : start + self.batch_size])
            with self._threads_for(len(chunk)):
                tokens = self.tokenizer(chunk).to(self.device)
                mask = tokens != pad
                length = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else tokens.shape[1]
                tokens, mask = tokens[:, :length], mask[:, :length].long()
                if in_runtime:
                    parts.append(self.text_runtime.pooled(tokens, mask))
                else:
                    parts.append(tower.pooler(tower.transformer(input_ids=tokens, attention_mask=mask), mask))
        pooled = torch.cat(parts) if parts else torch.zeros((0, _width(tower)), device=self.device)
        self._pooled_memo = (key, pooled)
        return pooled

    @contextmanager
    def _threads_for(self, items: int) -> Iterator[None]:
        """One CPU thread for a query-sized batch, torch's threads for bigger ones.

        A shopper's query is one photo or one text: too little work to split, and splitting it
        makes every layer wait for all threads. With the cores busy (other searches in the API's
        pool, an ingest, another process) that wait is paid hundreds of times per forward pass:
        measured here on 2 busy cores, one text 386 ms with 2 threads against 16 ms with 1, one
        photo 1,198 ms against 29 ms; on idle cores 2 threads gain at most 1.5x on such batches.
        The thread count is per calling thread, so concurrent searches do not disturb each other.
        """
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or items > QUERY_BATCH or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _normalise(features: torch.Tensor) -> np.ndarray:
        features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other


def _non_blank(texts: Sequence[str]) -> list[str]:
    return [text if text.strip() else " " for text in texts]


def _width(tower: torch.nn.Module) -> int:
    return int(getattr(tower.config, "hidden_size", 0) or getattr(tower.config, "d_model", 0))


# Batches up to this size (a query's photo or text) are encoded on one CPU thread (_threads_for).
QUERY_BATCH = 2
# Photos per forward pass of one CPU worker (Encoder._chunked): 1, 2, 4 and 8 gave 63, 69, 70 and
# 66 photos/s on 2 cores, against 35/s for one batch of 32 on both threads.
CPU_PHOTO_CHUNK = 4
_POOL_LOCK = threading.Lock()


class _Memo:
    """The last ``size`` results of one encoder's calls, by text. Kept on the encoder itself, so a
    cache never keeps an encoder alive (a module-level cache keyed by encoders did)."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, compute) -> np.ndarray:
        with self._lock:
            if text in self._values:
                self._values.move_to_end(text)
                return self._values[text]
        value = compute()
        with self._lock:
            self._values[text] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value
