"""The benchmark suite, the encoder's fast paths it measures, and the cluster's configuration.

The bench runs here at a tiny size: the test checks that every figure and every ratio is in the
report, never how fast anything was (timings depend on the machine and on what else runs).
"""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
import torch
import yaml
from conftest import FASHION, REPO, require
from PIL import Image
from qdrant_client import QdrantClient
from typer.testing import CliRunner

from engine.encoder import Encoder
from engine.model_info import ModelInfo
from engine.model_loading import pick_dtype
from engine.settings import Settings, StoreSettings
from engine.store import open_store
from eval.bench.corpus import RealEmbeddings, replicate
from eval.bench.queries import KINDS, MODES, exact_top
from eval.bench.report import acceptance
from snapshop.cli import app

SIZE = 500
BATCHES = (1, 8)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> dict:
    catalog = require(FASHION) / "catalog.csv"
    folder = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, [
        "bench", "--catalog", str(catalog), "--sizes", str(SIZE), "--queries", "4", "--source-products", "40",
        "--ingest-products", "12", "--quality-products", "24", "--batches", ",".join(map(str, BATCHES)),
        "--min-seconds", "0.05", "--ef", "32,128", "--warmup", "6", "--work-dir", str(folder / "work"),
        "--out", str(folder / "out"),
    ])
    assert result.exit_code == 0, result.output
    assert "acceptance targets" in result.output
    assert not (folder / "work" / f"store-{SIZE}").exists()  # big stores are deleted unless kept
    return json.loads((folder / "out" / "bench.json").read_text())


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_encoder_figures_stand_beside_the_machines_ceiling(tiny_report):
    ceilings = tiny_report["machine"]["matmul_gflops"]
    assert number(ceilings["fp32"]) and ceilings["fp32"] > 0
    assert tiny_report["machine"]["load_average_start"] is not None
    for precision, figures in tiny_report["encoder"].items():
        assert number(figures["ceiling_gflops"])
        for kind in ("image", "text"):
            for batch in BATCHES:
                entry = figures[kind][f"batch_{batch}"]
                for key in ("per_s", "ms_per_call", "gflop_per_item", "achieved_gflops", "ceiling_fraction",
                            "speedup_vs_fp32"):
                    assert number(entry[key]) and entry[key] > 0, (precision, kind, batch, key)
            assert number(figures[kind][f"batch_{max(BATCHES)}_over_batch_{min(BATCHES)}"])


def test_precisions_are_compared_on_retrieval_quality(tiny_report):
    if not tiny_report["machine"]["native_bf16"]:
        pytest.skip("no native bf16 on this CPU: only fp32 is measured")
    quality = tiny_report["quality"]
    assert quality["products"] > 0
    for precision in ("fp32", "bf16"):
        assert all(number(quality[precision][k]) for k in ("recall@1", "recall@10", "mrr"))
    assert set(quality["bf16"]["drop_points_vs_fp32"]) == {"recall@1", "recall@10", "mrr"}
    assert isinstance(quality["bf16"]["within_1_point"], bool)


def test_ingest_is_measured_against_the_encoder_alone(tiny_report):
    ingest = tiny_report["ingest"]
    assert ingest["stored"] == ingest["products"] == 12
    for key in ("end_to_end_per_s", "encoder_only_per_s", "end_to_end_over_encoder_only"):
        assert number(ingest[key]) and ingest[key] > 0
    assert {"decode_wait", "encode", "upsert", "index", "total"} <= set(ingest["stages_s"])


def test_queries_are_measured_beside_exact_search_with_recall(tiny_report):
    entry = tiny_report["scale"][str(SIZE)]
    load = entry["load"]
    for key in ("upsert_s", "upsert_per_s", "index_while_loading_s", "optimize_s", "total_s", "reopen_s",
                "rss_bytes_per_product",
                "disk_bytes_per_product", "raw_vector_bytes_per_product", "rss_over_raw", "disk_over_raw"):
        assert number(load[key]), key
    assert load["products"] == SIZE and load["disk_bytes_per_product"] > 0
    for kind in KINDS:
        for mode in MODES:
            figures = entry["queries"][kind][mode]
            assert figures["queries"] == 4
            for key in ("p50_ms", "p99_ms", "exact_p50_ms", "engine_over_exact_p50", "ann_p50_ms", "selectivity"):
                assert number(figures[key]), (kind, mode, key)
            assert figures["p99_ms"] >= figures["p50_ms"]
            # The store's share of each query (its searches, scores and reads) is part of the whole.
            assert 0 < figures["store_p50_ms"] <= figures["store_p99_ms"]
            assert figures["store_p50_ms"] < figures["p50_ms"]
            recall = figures["recall@10"]
            assert "image" in recall and all(0 <= v <= 1 for v in recall.values())
            # Within 1 % of the exact 10th's distance: every exact top-10 hit counts, and near-ties too.
            assert all(recall[k] <= v <= 1 for k, v in figures["recall@10_epsilon"].items())
            assert set(figures["recall@10_epsilon"]) == set(recall)
            assert "caption" not in recall  # the titles in the joint space only score: no HNSW search
            # Typed words alone are searched as sentences too; beside a photo they only score.
            assert ("text" in recall) == (kind == "text")
        assert entry["queries"][kind]["filtered"]["selectivity"] < 1
    assert entry["warmup"]["queries"] == 6 + 2  # six texts and two photos, reported apart
    assert number(entry["warmup"]["p50_ms"])
    cached = entry["queries"]["text"]["cached"]
    assert number(cached["p50_ms"]) and number(cached["uncached_over_cached_p50"])
    assert {"image", "text"} <= set(entry["hnsw_ef_sweep"])
    for using, by_ef in entry["hnsw_ef_sweep"].items():
        # Keyed by the breadth really searched: titles search 4x wider (engine.store.base.EF_MULTIPLE).
        assert set(by_ef) == ({"128", "512"} if using == "text" else {"32", "128"})
        assert all(0 <= v["recall@10"] <= 1 and number(v["p50_ms"]) for v in by_ef.values())
    assert {"image", "text", "sentence"} <= set(entry["noise"]) == set(entry["copy_cosine_to_source"])
    assert all(0 < cosine < 1 for cosine in entry["copy_cosine_to_source"].values())


def test_every_acceptance_target_is_reported(tiny_report):
    targets = {t["target"]: t for t in tiny_report["targets"]}
    assert len(targets) == 8
    assert targets["products loaded into the embedded store"]["value"] == SIZE
    assert targets["products loaded into the embedded store"]["met"] is False
    assert targets["text query p50 at 100k products (ms)"]["met"] is None  # not measured at this size
    assert isinstance(targets["ingest end to end / encoder only"]["met"], bool)


def test_acceptance_reads_the_sizes_it_names():
    report = {
        "ingest": {"end_to_end_over_encoder_only": 0.9},
        "scale": {"100000": {"queries": {"text": {"unfiltered": {"p50_ms": 12.0, "recall@10": {"image": 0.97}}},
                                         "photo": {"unfiltered": {"p50_ms": 170.0, "recall@10": {"image": 0.99}}}}},
                  "1000000": {"load": {"total_s": 850.0},
                              "queries": {"text": {"filtered": {"p99_ms": 48.0, "store_p99_ms": 30.0,
                                                                "recall@10": {"image": 0.96}}},
                                          "photo": {"filtered": {"p99_ms": 160.0, "store_p99_ms": 45.0}},
                                          "photo_text": {"filtered": {"p99_ms": 170.0, "store_p99_ms": 49.0}}}}},
    }
    met = {t["target"]: t["met"] for t in acceptance(report)}
    assert list(met.values()) == [True, False, True, True, True, True, True, True]
    report["scale"]["1000000"]["queries"]["photo"]["filtered"]["store_p99_ms"] = 51.0  # the worst kind counts
    report["scale"]["1000000"]["queries"]["text"]["filtered"]["p99_ms"] = 55.0
    report["scale"]["1000000"]["load"]["total_s"] = 2400.0
    met = {t["target"]: t["met"] for t in acceptance(report)}
    assert list(met.values()) == [True, False, True, True, False, False, False, True]


def test_exact_search_is_a_sort():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((300, 16)).astype(np.float32)
    vector = rng.standard_normal(16).astype(np.float32)
    assert exact_top(matrix, vector, 10).tolist() == np.argsort(-(matrix @ vector))[:10].tolist()
    rows = np.arange(0, 300, 7)
    expected = rows[np.argsort(-(matrix[rows] @ vector))[:10]]
    assert exact_top(matrix, vector, 10, rows).tolist() == expected.tolist()
    halves = matrix.astype(np.float16)  # appearance vectors are kept in half precision
    assert exact_top(halves, vector, 5, rows).tolist() == rows[np.argsort(-(halves[rows].astype(np.float32)
                                                                             @ vector))[:5]].tolist()


def test_copies_are_real_vectors_moved_by_a_little_noise():
    rng = np.random.default_rng(1)

    def units(n, d):
        x = rng.standard_normal((n, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    real = RealEmbeddings([f"p{i}" for i in range(10)], [f"title {i}" for i in range(10)], ["a", "b"] * 5,
                          np.arange(10, dtype=np.float32) + 5, ["x.jpg"] * 10, [{}] * 10, units(10, 8), units(10, 8),
                          units(10, 384), [([1], [1.0])] * 10, look=units(10, 32))
    copies = replicate(real, 95, noise=0.35)
    assert copies.noise == {"image": 0.35, "text": 0.35, "sentence": 0.35, "look": 0.35}
    assert copies.image.shape == (95, 8) and copies.look.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(copies.sentence.astype(np.float32), axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(copies.image[:10], real.image, atol=1e-6)  # the real catalog is a subset
    cosines = np.einsum("ij,ij->i", copies.image[10:], real.image[copies.source[10:]])
    assert 0.85 < cosines.min() and cosines.max() < 1.0
    assert [copies.category_names[c] for c in copies.category_codes[:4]] == ["a", "b", "a", "b"]
    assert np.all(np.abs(copies.prices / real.prices[copies.source] - 1) <= 0.26)


def test_calibrated_copies_are_as_close_to_their_source_as_its_nearest_real_neighbour():
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((5, 64)).astype(np.float32)
    image = np.repeat(centres, 20, axis=0) + 0.5 * rng.standard_normal((100, 64)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    real = RealEmbeddings([f"p{i}" for i in range(100)], ["t"] * 100, ["a"] * 100, np.ones(100, np.float32),
                          ["x.jpg"] * 100, [{}] * 100, image, image, np.tile(image, (1, 6)), [([1], [1.0])] * 100)
    similarity = image @ image.T
    np.fill_diagonal(similarity, -1)
    nearest = np.median(similarity.max(axis=1))
    copies = replicate(real, 2000)
    cosines = np.einsum("ij,ij->i", copies.image[100:], image[copies.source[100:]])
    assert abs(np.mean(cosines) - nearest) < 0.03


def test_text_vectors_are_the_same_with_dynamic_padding_and_one_pass(encoder):
    """Cutting the pad positions and sharing one transformer pass between a title's two vectors
    are pure speed-ups: the vectors equal the model's own 48-token forward pass (the first joint
    head's half: open_clip's ``encode_text``; every head's: their projections of that pass)."""
    from engine.joint_heads import head_count, joint_vectors, text_parts

    texts = ["Nike Men Black Running Shoes", "watch", "", "Puma Women Pink Graphic Printed Round Neck T-shirt"]
    tokens = encoder.tokenizer([t or " " for t in texts]).to(encoder.device)
    with torch.inference_mode():
        own = torch.nn.functional.normalize(encoder.model.encode_text(tokens).float(), dim=-1).numpy()
        text = encoder.model.text
        mask = (tokens != text.config.pad_token_id).long()
        pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
        full = joint_vectors(text_parts(encoder.model, pooled)).numpy()
        sentences = torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()
    # In bf16 (the text tower's default on CPUs that have it) a shorter sum rounds differently.
    atol = 2e-5 if encoder.text_dtype in (None, torch.float32) else 6e-3
    vectors, heads = encoder.encode_texts(texts), head_count(encoder.model)
    np.testing.assert_allclose(vectors, full, atol=atol)
    np.testing.assert_allclose(vectors[:, : own.shape[1]] * np.sqrt(heads), own, atol=atol * np.sqrt(heads))
    np.testing.assert_allclose(encoder.encode_sentences(texts), sentences, atol=atol)
    np.testing.assert_allclose(encoder.encode_sentence(texts[0]), sentences[0], atol=atol)


class _ThreadRecorder(torch.nn.Module):
    """A model that notes, for each batch it encodes, its size, the calling thread and how many
    threads torch may use there."""

    def __init__(self):
        super().__init__()
        self.threads: list[int] = []
        self.calls: list[tuple[int, str]] = []

    def encode_image(self, pixels):
        self.threads.append(torch.get_num_threads())
        self.calls.append((len(pixels), threading.current_thread().name))
        return torch.ones(len(pixels), 4)


def test_a_query_sized_batch_is_encoded_on_one_thread_and_a_big_one_in_parallel_chunks():
    """A query's photo on the caller's thread, limited to one CPU thread; a catalog's batch as
    chunks of CPU_PHOTO_CHUNK on parallel one-thread workers (twice the photos/s here)."""
    from engine.encoder import CPU_PHOTO_CHUNK

    model = _ThreadRecorder()
    encoder = Encoder(model, lambda image: torch.zeros(3, 4, 4), None, ModelInfo("m", "1", 4), torch.device("cpu"), 8)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert encoder.encode_images([None]).shape == (1, 4)
        assert model.calls[0][1] == threading.current_thread().name and model.threads == [1]
        vectors = encoder.encode_images([None] * (2 * CPU_PHOTO_CHUNK + 1))
        assert vectors.shape == (2 * CPU_PHOTO_CHUNK + 1, 4) and np.allclose(vectors, 0.5)  # every row written
        chunks = model.calls[1:]
        assert sorted(size for size, _ in chunks) == [1, CPU_PHOTO_CHUNK, CPU_PHOTO_CHUNK]
        assert all(name.startswith("encode") for _, name in chunks) and model.threads[1:] == [1, 1, 1]
        assert torch.get_num_threads() == 2  # the caller keeps its threads
    finally:
        torch.set_num_threads(saved)


def test_a_gpu_encodes_in_half_precision_and_a_cpu_in_fp32_unless_asked():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("bf16", cpu) == torch.bfloat16
    assert pick_dtype("fp16", gpu) == torch.float16
    if torch.cuda.is_available():
        assert pick_dtype("auto", gpu) in (torch.bfloat16, torch.float16)


# --- scale-out: a Qdrant cluster ------------------------------------------------------------
COMPOSE = REPO / "docker-compose.yml"
NODES = ("qdrant-node-1", "qdrant-node-2", "qdrant-node-3")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_cluster_profile_runs_three_qdrant_nodes_in_distributed_mode(compose):
    services = compose["services"]
    for index, name in enumerate(NODES):
        node = services[name]
        assert node["profiles"] == ["cluster"]
        assert node["image"] == services["qdrant"]["image"]
        assert node["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert "/readyz" in " ".join(node["healthcheck"]["test"]) and node["healthcheck"]["retries"] > 0
        command = node["command"]
        assert command[0] == "./qdrant" and command[command.index("--uri") + 1] == f"http://{name}:6335"
        if index == 0:
            assert "--bootstrap" not in command  # the first node starts the cluster
        else:
            assert command[command.index("--bootstrap") + 1] == "http://qdrant-node-1:6335"
            # Each joins once every node before it is healthy: one membership change at a time.
            assert node["depends_on"] == {before: {"condition": "service_healthy"} for before in NODES[:index]}
        assert any(volume.startswith(f"{name}:") for volume in node["volumes"])
        assert name in compose["volumes"]


def test_snapshop_waits_for_the_whole_cluster_and_shards_its_collection(compose, monkeypatch):
    client = compose["services"]["snapshop-cluster"]
    assert client["profiles"] == ["cluster"]
    assert client["depends_on"] == {node: {"condition": "service_healthy"} for node in NODES}
    environment = client["environment"]
    assert environment["SNAPSHOP_STORE__URL"] == "http://qdrant-node-1:6333"
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    store = Settings().store
    assert store.backend == "server"
    assert (store.shard_number, store.replication_factor) == (6, 2)
    assert store.replication_factor <= len(NODES) <= store.shard_number


def test_the_single_server_setup_is_unchanged(compose):
    services = compose["services"]
    assert "profiles" not in services["qdrant"] and "profiles" not in services["snapshop"]
    assert services["snapshop"]["depends_on"] == {"qdrant": {"condition": "service_healthy"}}
    assert "/readyz" in " ".join(services["qdrant"]["healthcheck"]["test"])


@pytest.mark.parametrize("shards, replicas", [(6, 2), (None, None)])
def test_the_server_store_creates_its_collection_with_the_settings_sharding(monkeypatch, shards, replicas):
    calls = []
    create = QdrantClient.create_collection

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return create(self, *args, **kwargs)  # the in-memory mode accepts (and ignores) them

    monkeypatch.setattr(QdrantClient, "create_collection", recording)
    settings = StoreSettings(url=":memory:", shard_number=shards, replication_factor=replicas)
    with open_store(settings, ModelInfo("snapshop-lit-fashion", "1-test", 8)) as store:
        assert store.count() == 0
    assert len(calls) == 1
    assert (calls[0]["shard_number"], calls[0]["replication_factor"]) == (shards, replicas)


def test_a_kept_store_is_queried_again_without_loading(tmp_path):
    catalog = require(FASHION) / "catalog.csv"
    base = ["bench", "--catalog", str(catalog), "--sections", "scale", "--sizes", "300", "--queries", "2",
            "--source-products", "30", "--ef", "32", "--warmup", "2", "--work-dir", str(tmp_path / "work")]
    first = CliRunner().invoke(app, [*base, "--keep-stores", "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*base, "--reuse-stores", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    loaded = json.loads((tmp_path / "first" / "bench.json").read_text())["scale"]["300"]
    reused = json.loads((tmp_path / "again" / "bench.json").read_text())["scale"]["300"]
    assert "optimize_s" in loaded["load"] and "reused" not in loaded["load"]
    assert reused["load"]["reused"] is True and "optimize_s" not in reused["load"]
    assert number(reused["queries"]["text"]["filtered"]["p50_ms"])
    assert (tmp_path / "work" / "store-300").exists()  # a reused store is kept


def test_bad_bench_options_are_one_clear_line():
    result = CliRunner().invoke(app, ["bench", "--catalog", "x.csv", "--sections", "encoder,warp"])
    assert result.exit_code == 2 and "unknown section(s) warp" in result.output
    result = CliRunner().invoke(app, ["bench", "--catalog", "x.csv", "--sizes", "100k"])
    assert result.exit_code == 2 and "positive whole numbers" in result.output


def test_the_default_precision_keeps_text_vectors_those_of_fp32(encoder):
    """'auto' on a CPU with native bf16 runs only the text tower in bf16 (for query speed): its
    vectors stay those of fp32, and photos are encoded in fp32 exactly."""
    from engine.model_loading import load_encoder, native_bf16
    from engine.settings import ModelSettings

    if not native_bf16():
        assert encoder.text_dtype is None
        pytest.skip("this CPU has no native bf16: everything runs in fp32")
    assert encoder.text_dtype == torch.bfloat16 and encoder.dtype == torch.float32
    fp32 = load_encoder(ModelSettings(precision="fp32"))
    texts = ["navy blue men casual shirts", "Puma Women Pink Graphic Printed Round Neck T-shirt", "watch"]
    cosines = np.einsum("ij,ij->i", encoder.encode_texts(texts), fp32.encode_texts(texts))
    assert cosines.min() > 0.999, cosines
    photo = Image.new("RGB", (224, 224), (200, 30, 30))
    np.testing.assert_allclose(encoder.encode_images([photo]), fp32.encode_images([photo]), atol=1e-6)
