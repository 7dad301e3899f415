"""One settings object for the whole engine.

Built once by the CLI or the API's lifespan and passed down; every field can come from the
environment with the ``SNAPSHOP_`` prefix, nested with ``__`` (``SNAPSHOP_STORE__URL=...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseModel):
    """Where vectors live: an embedded Qdrant Edge shard (default) or a Qdrant server by URL."""

    path: Path = Field(Path("var/store"), description="Directory of the embedded Qdrant Edge store.")
    url: str | None = Field(None, description="Qdrant server URL; when set, the embedded store is not used.")
    api_key: str | None = Field(None, description="API key of the Qdrant server, if it needs one.")
    collection: str = Field("products", description="Collection (server) or shard name (embedded).")
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one call to a Qdrant server.")
    hnsw_ef: int = Field(64, ge=8, description="HNSW search breadth: higher is more exact and slower.")
    quantization: Literal["int8", "none"] = Field(
        "int8", description="Search the vectors that gather candidates (photos, appearance, title sentences) "
        "on int8 copies kept in memory, the best candidates rescored with the original vectors; applies to "
        "stores created from now on. 'none': search the original vectors.",
    )
    oversampling: float = Field(
        2.0, ge=1.0, le=16.0, description="With int8 quantisation: candidates found on the int8 copies per "
        "result wanted, rescored with the original vectors.",
    )
    segment_products: int = Field(
        100_000, ge=0, description="Embedded store: build the search graphs of each this many products as "
        "they are written, a segment at a time, instead of all of them at the end; 0: only at the end.",
    )
    shard_number: int | None = Field(
        None, ge=1, description="Shards of a new server collection; a Qdrant cluster spreads them over its "
        "nodes. None: the server's default (one per node in a cluster).",
    )
    backup_dir: Path | None = Field(None, description="Where `POST /admin/backup` writes backups of the "
                                    "embedded store, a new folder each; None: beside the store, <path>-backups.")
    alias_poll_s: float = Field(
        2.0, gt=0, description="How often a server checks whether `snapshop reindex` switched its collection "
        "name to a new index (embedded store).",
    )
    replication_factor: int | None = Field(
        None, ge=1, description="Copies of each shard of a new server collection, on different cluster nodes. "
        "None: the server's default (1).",
    )

    @property
    def backend(self) -> Literal["edge", "server"]:
        return "server" if self.url else "edge"

    @property
    def backups(self) -> Path:
        """The folder API backups go to."""
        return self.backup_dir or self.path.with_name(self.path.name + "-backups")


class ModelSettings(BaseModel):
    """Which embedding model to load and how."""

    name: str = Field("snapshop-lit-fashion", description="Registry name, open_clip 'ARCH/TAG' or 'hf-hub:org/repo'.")
    weights: Path | None = Field(None, description="Override the registry's trained weights (a .pt checkpoint).")
    cache_dir: Path | None = Field(None, description="Where downloaded weights are cached (online models).")
    offline: bool = Field(False, description="Never try to download weights; fail fast with a clear message.")
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1', or 'auto' (GPU when one is present).")
    batch_size: int = Field(32, ge=1, le=4096, description="Images or texts encoded per forward pass "
                            "(unset on a GPU: 256).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision of the encoders. 'auto': fp32 on a CPU, bf16 (fp16 where "
        "bf16 is missing) on a GPU. 'bf16' is faster on CPUs with AMX/AVX512-BF16 (see docs/scale.md).",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; None leaves torch's default.")
    text_runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="What runs a query's text tower on a CPU. 'auto': ONNX Runtime where it and "
        "`onnx` are installed (the graph exported once, kept in cache_dir or ~/.cache/snapshop), else torch; "
        "'onnxruntime' fails the start without them. A catalog's titles always go through torch.",
    )
    image_runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="What runs the image trunks on a CPU (models with a look tower), for query and catalog "
        "photos alike. 'auto': ONNX Runtime where it and `onnx` are installed (the graphs exported once, kept like "
        "the text tower's), else torch; 'onnxruntime' fails the start without them.",
    )


class IngestSettings(BaseModel):
    """How a catalog is read and loaded."""

    decode_workers: int = Field(4, ge=1, le=64, description="Threads that fetch and decode images.")
    lookahead_batches: int = Field(2, ge=1, le=32, description="Batches decoded ahead of the encoder.")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest image file or download accepted.")
    max_image_pixels: int = Field(60_000_000, ge=10_000, description="Larger images are refused (bombs).")
    url_timeout_s: float = Field(10.0, gt=0, description="Timeout for downloading one image URL.")
    allow_private_urls: bool = Field(False, description="Allow image URLs on loopback or private networks.")
    upsert_batch: int = Field(64, ge=1, le=10_000, description="Products written to the store per call.")
    prune_max_share: float = Field(
        0.25, ge=0.0, le=1.0,
        description="The most of the store --prune may delete without --force (an empty or cut-short catalog "
        "would otherwise empty it).",
    )
    attributes: dict[str, Literal["keyword", "number"]] = Field(
        default_factory=dict, description="Catalog columns to filter by, as JSON: {\"brand\": \"keyword\", "
        "\"rating\": \"number\"}. Keyword ones are filtered any-of and counted as facets, numbers by range.",
    )
    detect_attributes: bool = Field(
        True, description="Also make attributes of the columns that look like them: numbers, and short texts "
        "whose values repeat (at most 200 of them), such as brand, colour, size, season.",
    )


class SearchSettings(BaseModel):
    """Query-time defaults a merchandiser may tune."""

    default_k: int = Field(12, ge=1, le=1000)
    max_k: int = Field(200, ge=1, le=10_000)
    # 0.7: chosen on the training split's photo + "in <colour>" queries, once the photo's category
    # ranks the candidates the words carry the change. Model version 6 (nDCG@10 / MRR): 0.6 0.855 /
    # 0.844, 0.7 0.920 / 0.897, 0.8 0.927 / 0.891, 0.9 0.926 / 0.881; 0.7 and 0.8 within noise, and
    # at 0.8 version 6's sharper colours put a brown belt and backpack beside the README demo's brown
    # handbag (docs/quality.md). Version 5 had 0.8 (0.78 at 0.6, 0.92 at 0.8, 0.93 at 0.9).
    photo_text_mix: float = Field(
        0.7, ge=0.0, le=1.0,
        description="Share of the text in a photo+text query (0: photo only, 1: text only).",
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Ranker weights by signal name (engine.signals); unset ones keep their defaults. "
        "Per request they can be overridden again.",
    )
    verify_top: int = Field(
        10, ge=0, le=100,
        description="Photo searches verify this many best candidates geometrically (SIFT + RANSAC: the 'match' "
        "signal), about 1 ms each; 0 turns verification off.",
    )
    nothing_close: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Below this calibrated photo match of the best result, answers say 'nothing close'.",
    )
    relevance_floor: float = Field(
        0.35, ge=0.0, le=1.0,
        description="A sorted list (price, newest, popularity) and the facets of a query hold the products "
        "whose fused score is at least this; per request it can be overridden (see docs/search-page.md).",
    )
    out_of_stock: Literal["hide", "demote", "show"] = Field(
        "hide", description="Products out of stock (availability out_of_stock, or stock 0): hidden, demoted "
        "after every product in stock, or shown as ranked; per request it can be overridden.",
    )
    shopper_centre: Literal["auto", "off"] | Path | None = Field(
        "auto", description="What every photo taken in this shop shares (its light, shelves, a hand), subtracted "
        "from a photo query's appearance vector so that the catalog photos that look like a shop do not come "
        "first (engine/shopper_centre.py; grocery shopper photos, fused R@1 0.514 -> 0.566). 'auto': the server "
        "learns it from its shoppers' photo searches as they come, from the 10th distinct photo on (from the "
        "query log when analytics are on, else in memory only); a file written by `snapshop calibrate`: that "
        "centre; 'off': none.",
    )
    depth: int = Field(
        1000, ge=10, le=10_000,
        description="Products one query ranks when it is paged or sorted: every page is cut from this one "
        "list, so page 2 follows page 1 exactly (1000: more than 20 pages of 48).",
    )

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        """A misspelt or out-of-bounds weight fails at start-up, naming the known ones."""
        from engine.signals import SIGNALS  # the registry imports the store, which imports settings

        SIGNALS.check_names(weights)
        SIGNALS.weights(**weights)
        return weights


class AnalyticsSettings(BaseModel):
    """The opt-in search analytics: a query log and shoppers' clicks, kept for a while."""

    enabled: bool = Field(False, description="Log searches (text, filters, a photo's hash and embedding, never "
                          "the photo; results; latency) and accept click / add-to-cart / purchase events.")
    path: Path = Field(Path("var/analytics.sqlite"), description="The query and event log (SQLite).")
    retention_days: float = Field(90.0, gt=0, description="Searches and events older than this are deleted.")
    events_per_minute: int = Field(
        120, ge=1, le=100_000, description="Events accepted per minute from one client address (POST /events "
        "is public); more are refused with 429.",
    )


DEV_API_KEY = "snapshop-dev-key"  # works out of the box in development; refused in production


class ApiSettings(BaseModel):
    """The HTTP API: who may write, how large an upload may be, where relative image paths live."""

    api_key: SecretStr = Field(
        SecretStr(DEV_API_KEY),
        description="Key merchandiser writes must present (X-API-Key or Authorization: Bearer). "
        "The default is refused when environment is 'production'.",
    )
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest shopper photo accepted.")
    max_upload_pixels: int = Field(
        50_000_000, ge=10_000, description="Largest shopper photo accepted, in pixels (phones take 12 to 50 MP).")
    decode_budget_bytes: int = Field(
        1024 * 1024 * 1024, ge=64 * 1024 * 1024,
        description="Memory all shopper photos being decoded at once may take together; a photo waits for "
        "room (at most 30 s, then 503).",
    )
    max_upsert_records: int = Field(1000, ge=1, le=100_000, description="Products per upsert request.")
    images_root: Path = Field(
        Path("var/images"), description="Folder that relative image paths in API upserts are read from.",
    )
    search_threads: int = Field(4, ge=1, le=64, description="Searches encoded at the same time.")
    public_reads: bool = Field(
        True, description="Searches, facets and product reads need no key. False: they need read_key (or the "
        "write key), for a storefront that searches from its own backend.",
    )
    read_key: SecretStr | None = Field(
        None, description="A read-only key (X-API-Key or Authorization: Bearer) for searches and product reads "
        "when public_reads is false; it cannot write.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Web origins whose pages may call the API from a browser, e.g. "
        "[\"https://shop.example\"]; empty: none (same-origin pages only).",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A connection whose request headers are not in this long after it "
        "opened (or after its last answer) is closed.",
    )
    host: str = Field("127.0.0.1", description="Address `snapshop serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `snapshop serve` listens on.")


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
    api: ApiSettings = ApiSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()

    @field_validator("environment", mode="before")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value
