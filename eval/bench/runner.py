"""`snapshop bench`: every figure measured beside its baseline in the same run."""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.encoder import Encoder
from engine.heap import settle_heap
from engine.images import load_image_file
from engine.model_loading import load_encoder
from engine.search import Searcher
from engine.settings import Settings, StoreSettings
from engine.store import open_store
from engine.store.base import LOCAL_VECTOR, SENTENCE_DIM
from eval.bench.corpus import bulk_load, real_embeddings, replicate, spill
from eval.bench.encoding import bench_encoder
from eval.bench.ingest import bench_ingest
from eval.bench.machine import (
    anonymous_rss_bytes,
    dir_bytes,
    load_average,
    machine_info,
    matmul_gflops,
    rss_bytes,
)
from eval.bench.quality import precision_quality
from eval.bench.queries import ef_sweep, plan_queries, run_queries
from eval.bench.report import acceptance
from ingest.catalog import read_catalog

SECTIONS = ("encoder", "quality", "ingest", "scale")
PRECISION_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass
class BenchConfig:
    """What to measure and how big; the defaults are the full run, tests pass tiny ones."""

    catalog: Path
    sizes: tuple[int, ...] = (100_000,)
    queries: int = 200  # per query kind and filter mode
    cached_repeats: int = 50
    source_products: int = 8000
    ingest_products: int = 512
    quality_products: int = 1000
    batches: tuple[int, ...] = (1, 64)
    precisions: tuple[str, ...] = ("fp32", "bf16")
    noise: float | None = None  # norm of the noise added to each copied vector; None: calibrated
    load_batch: int = 2000
    ef_sweep: tuple[int, ...] = (16, 32, 64, 128, 256)
    sections: tuple[str, ...] = SECTIONS
    work_dir: Path = Path("var/bench")
    keep_stores: bool = False
    reuse_stores: bool = False  # query a kept store of the same size instead of loading it again
    warmup: int = 100  # untimed queries first (their cold latency is reported apart)
    local_features: bool = True  # store the photos' local features (the match signal) with the products
    min_seconds: float = 2.0
    seed: int = 0
    extra: dict = field(default_factory=dict)


def run_bench(settings: Settings, config: BenchConfig, encoder: Encoder | None = None,
              say: Callable[[str], None] = lambda message: None) -> dict:
    """Run the chosen sections; returns the report (JSON-ready)."""
    encoder = encoder or load_encoder(settings.model)
    report: dict = {"config": _config_dict(config), "machine": machine_info(), "model": encoder.info.tag}
    say("measuring the matmul ceiling")
    ceilings = {"fp32": matmul_gflops()}
    if report["machine"]["native_bf16"]:
        ceilings["bf16"] = matmul_gflops(dtype=_torch_dtype("bf16"))
    report["machine"]["matmul_gflops"] = {k: round(v, 1) for k, v in ceilings.items()}
    encoders = _encoders(settings, encoder, config, report["machine"]["native_bf16"])
    if "encoder" in config.sections:
        say("encoder throughput")
        report["encoder"] = _encoder_section(encoders, ceilings, config)
    if "quality" in config.sections and len(encoders) > 1:
        say("precision quality")
        report["quality"] = precision_quality(encoders, config.catalog, config.quality_products)
    if "ingest" in config.sections:
        say(f"ingest of {config.ingest_products} products")
        report["ingest"] = bench_ingest(encoder, config.catalog, config.ingest_products, settings.ingest,
                                        config.work_dir)
    if "scale" in config.sections:
        report["scale"] = _scale_section(settings, encoder, config, say)
    report["machine"]["load_average_end"] = load_average()
    report["targets"] = acceptance(report)
    return report


def _config_dict(config: BenchConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _encoders(settings: Settings, main: Encoder, config: BenchConfig, native_bf16: bool) -> dict[str, Encoder]:
    """One encoder per precision to compare (bf16 only where the CPU has it); the main one reused.

    The default ('auto') on a CPU with native bf16 runs the text tower in bf16 and the image
    tower in fp32: it is measured as 'auto', beside pure fp32 and pure bf16.
    """
    mixed = main.text_dtype is not None and main.text_dtype != main.dtype
    main_name = "auto" if mixed else PRECISION_NAMES[str(main.dtype).replace("torch.", "")]
    out = {}
    for name in config.precisions:
        if name == main_name:
            out[name] = main
        elif name == "bf16" and main.device.type == "cpu" and not native_bf16:
            continue
        else:
            out[name] = load_encoder(settings.model.model_copy(update={"precision": name}))
    if mixed:
        out["auto"] = main
    return out or {main_name: main}


def _encoder_section(encoders: dict[str, Encoder], ceilings: dict[str, float], config: BenchConfig) -> dict:
    catalog = read_catalog(config.catalog)
    rows = [row for row in catalog.rows if row.images][: max(config.batches) * 4]
    images = [load_image_file(catalog.base_dir / row.images[0]) for row in rows[: max(config.batches)]]
    titles = [row.title for row in catalog.rows[: max(config.batches) * 64]]
    out = {}
    for name, encoder in encoders.items():
        ceiling = ceilings.get(name, ceilings["fp32"])
        text_name = PRECISION_NAMES[str(encoder.text_dtype or encoder.dtype).replace("torch.", "")]
        out[name] = bench_encoder(encoder, images, titles, config.batches, ceiling, config.min_seconds,
                                  text_ceiling_gflops=ceilings.get(text_name, ceiling))
    if "fp32" in out:
        for name in out:
            for kind in ("image", "text"):
                for batch in config.batches:
                    entry = out[name][kind][f"batch_{batch}"]
                    entry["speedup_vs_fp32"] = round(entry["per_s"] / out["fp32"][kind][f"batch_{batch}"]["per_s"], 2)
    return out


def _scale_section(settings: Settings, encoder: Encoder, config: BenchConfig, say) -> dict:
    say(f"real embeddings of {config.source_products} products (cached in {config.work_dir})")
    real = real_embeddings(encoder, config.catalog, config.source_products, config.work_dir)
    if not config.local_features:
        real.local = None  # the products are stored without them, as a store made before the match signal
    plan = plan_queries(real, config.queries, config.seed, config.warmup)
    out = {"source_products": len(real)}
    for size in config.sizes:
        out[str(size)] = _one_size(settings, encoder, config, real, plan, size, say)
        gc.collect()
    return out


def _one_size(settings, encoder, config, real, plan, size, say) -> dict:
    say(f"{size:,} products: replicating")
    synthetic = replicate(real, size, config.noise, config.seed)
    copies = _copy_cosines(real, synthetic)
    folder = config.work_dir / f"store-{size}"
    vectors = config.work_dir / f"vectors-{size}"
    synthetic = spill(synthetic, vectors)
    # The store's settings as given (SNAPSHOP_STORE__*: quantisation, segments, hnsw_ef), in the bench's folder.
    store_settings = settings.store.model_copy(update={"path": folder, "url": None})
    try:
        if config.reuse_stores and _holds(store_settings, encoder, size):
            say(f"{size:,} products: reusing the store in {folder}")
            load = {"reused": True, "products": size, "disk_bytes_per_product": round(dir_bytes(folder) / size, 1)}
        else:
            load = _load(store_settings, folder, encoder, real, synthetic, config, size, say)
            say(f"{size:,} products: loaded and indexed in {load['total_s']} s (upserts {load['upsert_s']} s, "
                f"graphs while loading {load['index_while_loading_s']} s, last segment {load['optimize_s']} s)")
        started = time.perf_counter()
        with open_store(store_settings, encoder.info) as store:
            load["reopen_s"] = round(time.perf_counter() - started, 2)
            # Queries are measured as a running server answers them: with the store's files in
            # memory (the API reads them at start, EdgeStore.warm). The first 125 after this are
            # still reported apart, as the cold start.
            started = time.perf_counter()
            load["warm_bytes"] = store.warm()
            load["warm_s"] = round(time.perf_counter() - started, 2)
            settle_heap()  # as the API does once it has loaded (engine.heap)
            say(f"{size:,} products: queries")
            searcher = Searcher(encoder, store, settings.search)
            queries, probes = run_queries(searcher, real, synthetic, plan, config.cached_repeats)
            say(f"{size:,} products: hnsw_ef sweep")
            sweep = ef_sweep(searcher, probes, list(config.ef_sweep))
        warmup = queries.pop("warmup")
    finally:
        shutil.rmtree(vectors, ignore_errors=True)  # the maps stay readable until they are closed
        if not (config.keep_stores or config.reuse_stores):
            shutil.rmtree(folder, ignore_errors=True)
    return {"load": load, "warmup": warmup, "queries": queries, "hnsw_ef_sweep": sweep, "hnsw_ef": settings.store.hnsw_ef,
            "noise": synthetic.noise, "copy_cosine_to_source": copies}


def _holds(store_settings: StoreSettings, encoder: Encoder, size: int) -> bool:
    """Whether a kept benchmark store of this size is there to query again."""
    if not (store_settings.path / store_settings.collection / "snapshop.json").exists():
        return False
    with open_store(store_settings, encoder.info) as store:
        return store.count() == size


def _load(store_settings: StoreSettings, folder: Path, encoder: Encoder, real, synthetic, config: BenchConfig,
          size: int, say) -> dict:
    """Bulk load ``size`` products into a new store: time, memory and disk per product."""
    shutil.rmtree(folder, ignore_errors=True)
    gc.collect()
    rss_before, anonymous_before = rss_bytes(), anonymous_rss_bytes()
    with open_store(store_settings, encoder.info) as store:
        say(f"{size:,} products: bulk load")
        load = bulk_load(store, real, synthetic, config.load_batch)
        gc.collect()
        load["rss_bytes_per_product"] = round((rss_bytes() - rss_before) / size, 1)
        anonymous = anonymous_rss_bytes()
        if anonymous is not None and anonymous_before is not None:
            load["rss_anonymous_bytes_per_product"] = round((anonymous - anonymous_before) / size, 1)
    load["disk_bytes_per_product"] = round(dir_bytes(folder) / size, 1)
    # The photos' local features stay on disk (never warmed into memory): their own figure.
    local = sum(dir_bytes(p) for p in folder.rglob(f"vector_storage-{LOCAL_VECTOR}") if p.is_dir())
    load["local_features_disk_bytes_per_product"] = round(local / size, 1)
    raw = 4 * (synthetic.image.shape[1] + synthetic.text.shape[1] + SENTENCE_DIM)  # stored as float32
    raw += 2 * synthetic.look.shape[1] if synthetic.look is not None else 0  # stored as float16
    load["raw_vector_bytes_per_product"] = raw
    load["rss_over_raw"] = round(load["rss_bytes_per_product"] / raw, 2)
    load["disk_over_raw"] = round(load["disk_bytes_per_product"] / raw, 2)
    return load


def _copy_cosines(real, synthetic, sample: int = 20_000) -> dict[str, float]:
    """Mean cosine of a copy to its source, per vector kind (on a sample of the copies)."""
    rows = np.arange(min(sample, len(synthetic)))
    out = {}
    for name in synthetic.noise:
        copies = getattr(synthetic, name)[rows].astype(np.float32)
        out[name] = round(float(np.einsum("ij,ij->i", copies, getattr(real, name)[synthetic.source[rows]]).mean()), 4)
    return out
