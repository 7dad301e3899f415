"""One settings object for the whole engine.

Built once by the CLI or the API's lifespan and passed down; every field can come from the
environment with the ``SNAPSHOP_`` prefix, nested with ``__`` (``SNAPSHOP_STORE__URL=...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseModel):
    """Where vectors live: an embedded Qdrant Edge shard (default) or a Qdrant server by URL."""

    path: Path = Field(Path("var/store"), description="Directory of the embedded Qdrant Edge store.")
    url: str | None = Field(None, description="Qdrant server URL; when set, the embedded store is not used.")
    api_key: str | None = Field(None, description="API key of the Qdrant server, if it needs one.")
    collection: str = Field("products", description="Collection (server) or shard name (embedded).")
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one call to a Qdrant server.")
    hnsw_ef: int = Field(128, ge=8, description="HNSW search breadth: higher is more exact and slower.")

    @property
    def backend(self) -> Literal["edge", "server"]:
        return "server" if self.url else "edge"


class ModelSettings(BaseModel):
    """Which embedding model to load and how."""

    name: str = Field("snapshop-lit-fashion", description="Registry name, open_clip 'ARCH/TAG' or 'hf-hub:org/repo'.")
    weights: Path | None = Field(None, description="Override the registry's trained weights (a .pt checkpoint).")
    cache_dir: Path | None = Field(None, description="Where downloaded weights are cached (online models).")
    offline: bool = Field(False, description="Never try to download weights; fail fast with a clear message.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1', or 'auto' (GPU when one is present).")
    batch_size: int = Field(32, ge=1, le=4096, description="Images or texts encoded per forward pass.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; None leaves torch's default.")


class IngestSettings(BaseModel):
    """How a catalog is read and loaded."""

    decode_workers: int = Field(4, ge=1, le=64, description="Threads that fetch and decode images.")
    lookahead_batches: int = Field(2, ge=1, le=32, description="Batches decoded ahead of the encoder.")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest image file or download accepted.")
    max_image_pixels: int = Field(60_000_000, ge=10_000, description="Larger images are refused (bombs).")
    url_timeout_s: float = Field(10.0, gt=0, description="Timeout for downloading one image URL.")
    allow_private_urls: bool = Field(False, description="Allow image URLs on loopback or private networks.")
    upsert_batch: int = Field(64, ge=1, le=10_000, description="Products written to the store per call.")


class SearchSettings(BaseModel):
    """Query-time defaults a merchandiser may tune."""

    default_k: int = Field(12, ge=1, le=1000)
    max_k: int = Field(200, ge=1, le=10_000)
    photo_text_mix: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Share of the text in a photo+text query (0: photo only, 1: text only).",
    )
    title_weight: float = Field(
        0.15, ge=0.0, le=1.0,
        description="Share of the title similarity when the query has text (the rest is the photos').",
    )


class Settings(BaseSettings):
    """Everything snapshop can be told, in one object."""

    model_config = SettingsConfigDict(
        env_prefix="SNAPSHOP_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    store: StoreSettings = StoreSettings()
    model: ModelSettings = ModelSettings()
    ingest: IngestSettings = IngestSettings()
    search: SearchSettings = SearchSettings()

    @field_validator("environment", mode="before")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value
