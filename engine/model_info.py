"""Which model made a vector: a leaf, so the store can name models without loading torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a vector: stored beside the vectors so models are never mixed."""

    name: str
    version: str
    dim: int
    look_dim: int = 0  # the appearance vector's size (photo-to-photo matching); 0: none

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"
