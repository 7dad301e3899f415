"""Model registry: a model name maps to its architecture, weights source and preprocessing.

The registry is data (``engine/models/registry.json``); names outside it are accepted when
open_clip knows them (``ARCH/TAG``) or they point at the Hugging Face hub (``hf-hub:org/repo``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from engine.errors import UnknownModel

MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class ModelSpec:
    """What it takes to build one model."""

    name: str
    kind: Literal["lit", "open_clip"]
    version: str
    description: str = ""
    offline: bool = False
    architecture: str | None = None  # open_clip architecture or hf-hub: name
    pretrained: str | None = None  # open_clip pretrained tag
    config: str | None = None  # lit: open_clip config JSON in engine/models
    weights: str | None = None  # lit: trained heads checkpoint in engine/models

    @property
    def config_path(self) -> Path | None:
        return MODELS_DIR / self.config if self.config else None

    @property
    def weights_path(self) -> Path | None:
        return MODELS_DIR / self.weights if self.weights else None


@cache
def _registry() -> dict[str, ModelSpec]:
    raw = json.loads((MODELS_DIR / "registry.json").read_text())
    return {name: ModelSpec(name=name, **fields) for name, fields in raw.items()}


def list_models() -> list[ModelSpec]:
    """The registered models, the offline default first."""
    return sorted(_registry().values(), key=lambda spec: (not spec.offline, spec.name))


def resolve_model(name: str) -> ModelSpec:
    """The spec for ``name``: a registry entry, an open_clip ``ARCH/TAG`` or an ``hf-hub:`` name."""
    registry = _registry()
    if name in registry:
        return registry[name]
    if name.startswith("hf-hub:") and len(name) > len("hf-hub:"):
        return ModelSpec(name=name, kind="open_clip", version="hub", architecture=name)
    if "/" in name:
        arch, tag = name.split("/", 1)
        import open_clip

        if (arch, tag) in set(open_clip.list_pretrained()):
            return ModelSpec(name=name, kind="open_clip", version=tag, architecture=arch, pretrained=tag)
    known = ", ".join(sorted(registry))
    raise UnknownModel(
        f"unknown model '{name}'. Registered: {known}; also any open_clip 'ARCH/TAG' from "
        "open_clip.list_pretrained() or an 'hf-hub:org/repo' name (see `snapshop models`)."
    )
