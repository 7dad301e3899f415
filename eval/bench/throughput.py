"""Throughput through the HTTP API at several concurrencies: requests/s and latency percentiles.

A store of real catalog products is built once; the API then runs as its own process (``snapshop
serve``, as in production), so the load generator here does not share its interpreter. Each
concurrency level keeps that many requests in flight for a fixed time, text searches and photo
searches measured apart; every figure is set beside concurrency 1 of the same run.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from engine.model_loading import load_encoder
from engine.settings import Settings
from engine.store import open_store
from ingest.catalog import Catalog, read_catalog
from ingest.pipeline import ingest_catalog


@dataclass
class Level:
    kind: str  # text or photo
    concurrency: int
    requests: int
    failed: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    speedup: float = 1.0  # requests/s against concurrency 1 of the same kind, same run


def build_store(settings: Settings, catalog_path: Path, products: int, store_path: Path) -> Catalog:
    """The first ``products`` rows of a real catalog, ingested into a new embedded store."""
    full = read_catalog(catalog_path)
    catalog = Catalog(full.path, full.rows[:products], [])
    encoder = load_encoder(settings.model)
    store_settings = settings.store.model_copy(update={"path": store_path})
    with open_store(store_settings, encoder.info) as store:
        ingest_catalog(catalog, encoder, store, settings.ingest, progress=False)
    return catalog


def start_server(store_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """``snapshop serve`` on ``port``, answering once /ready says so."""
    command = [sys.executable, "-m", "snapshop", "serve", "--port", str(port), "--store", str(store_path)]
    server = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"the server stopped at start-up (exit {server.returncode})")
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not become ready in 120 s")


async def _load(url: str, make_request: Callable[[random.Random], dict], concurrency: int,
                seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    failed = 0
    deadline = time.perf_counter() + seconds

    async def worker(seed: int) -> None:
        nonlocal failed
        rng = random.Random(seed)
        async with httpx.AsyncClient(timeout=60) as client:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.post(url, **make_request(rng))
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failed += 1

    await asyncio.gather(*(worker(seed) for seed in range(concurrency)))
    return latencies, failed


def measure(base_url: str, catalog: Catalog, concurrencies: tuple[int, ...], seconds: float,
            say: Callable[[str], None] = print) -> list[Level]:
    """Each kind of search at each concurrency, for ``seconds`` each (after a short warm-up)."""
    titles = [row.title for row in catalog.rows]
    photos = [(catalog.base_dir / row.images[0]).read_bytes() for row in catalog.rows[:200] if row.images]

    def text(rng: random.Random) -> dict:
        words = rng.choice(titles).split()
        return {"data": {"text": " ".join(words[: max(2, len(words) // 2)]), "k": "10"}}

    def photo(rng: random.Random) -> dict:
        return {"files": {"photo": ("q.jpg", rng.choice(photos), "image/jpeg")}, "data": {"k": "10"}}

    levels = []
    for kind, make in (("text", text), ("photo", photo)):
        asyncio.run(_load(f"{base_url}/search", make, 2, min(3.0, seconds)))  # warm-up, not counted
        for concurrency in concurrencies:
            started = time.perf_counter()
            latencies, failed = asyncio.run(_load(f"{base_url}/search", make, concurrency, seconds))
            elapsed = time.perf_counter() - started
            ms = np.array(latencies) * 1000
            level = Level(kind, concurrency, len(latencies), failed, round(elapsed, 2),
                          round(len(latencies) / elapsed, 2), round(float(np.percentile(ms, 50)), 1),
                          round(float(np.percentile(ms, 99)), 1))
            levels.append(level)
            say(f"{kind} x{concurrency}: {level.per_second} req/s, p50 {level.p50_ms} ms, p99 {level.p99_ms} ms")
    for level in levels:
        first = next(x for x in levels if x.kind == level.kind)
        level.speedup = round(level.per_second / first.per_second, 2) if first.per_second else 0.0
    return levels


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_throughput(settings: Settings, catalog_path: Path, products: int, concurrencies: tuple[int, ...],
                   seconds: float, work_dir: Path, env: dict[str, str] | None = None,
                   say: Callable[[str], None] = print) -> dict:
    """Build the store, serve it, measure; returns the levels and the run's conditions."""
    store_path = work_dir / "throughput-store"
    if not (store_path / settings.store.collection / "snapshop.json").exists():
        say(f"ingesting {products} products into {store_path}")
        build_store(settings, catalog_path, products, store_path)
    catalog = read_catalog(catalog_path)
    catalog = Catalog(catalog.path, catalog.rows[:products], [])
    port = free_port()
    server = start_server(store_path, port, env or {})
    try:
        levels = measure(f"http://127.0.0.1:{port}", catalog, concurrencies, seconds, say)
    finally:
        server.terminate()
        server.wait(30)
    return {"products": products, "seconds_per_level": seconds, "cpus": os.cpu_count(),
            "load_average_before": os.getloadavg()[0], "env": env or {}, "levels": [asdict(x) for x in levels]}
