"""Crash safety: `snapshop ingest` killed with SIGKILL at random points loses nothing.

The real CLI ingests ~800 real fashion products into an embedded Qdrant Edge store and is
killed (SIGKILL: no cleanup, no flush) at random points: after some batches were written, in
the middle of the run, and after the last batch while the index is built. After each kill the
store is opened and checked: every product the killed run had reported as written is there,
and every stored product is whole (all four named vectors and its payload, written in one
upsert). A last run completes, and every product is then present exactly once with the right
vectors (a spot check against a fresh encode of its photo and title) and payload. The same for
an update run that changes every price and some titles.

The random points come from a seed printed on failure (SNAPSHOP_CRASH_SEED replays one);
SNAPSHOP_CRASH_PRODUCTS changes the catalog's size.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.images import load_image_file
from engine.settings import StoreSettings
from engine.store import open_store, point_id
from engine.store.base import BM25_VECTOR, CAPTION_VECTOR, IMAGE_VECTOR, SENTENCE_VECTOR
from tests.conftest import FASHION, REPO, require

PRODUCTS = int(os.environ.get("SNAPSHOP_CRASH_PRODUCTS", "800"))
BATCH = 32  # products per upsert: small batches give the kills more places to land
SEED = int(os.environ.get("SNAPSHOP_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
RUN_TIMEOUT_S = 240
PAYLOAD_KEYS = {"product_id", "title", "price", "category", "images", "content_hash", "meta_hash", "model"}
_BAR = re.compile(r"ingest:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")


# --- the CLI in a subprocess ------------------------------------------------------------------------
class IngestProcess:
    """`python -m snapshop ingest CATALOG`, its progress read from the tqdm bar on stderr.

    The bar advances after a batch's upsert returned, so ``done`` counts products written.
    """

    def __init__(self, catalog: Path, store: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOP_")}
        env.update(SNAPSHOP_STORE__PATH=str(store), SNAPSHOP_PROGRESS="1", PYTHONPATH=str(REPO),
                   SNAPSHOP_INGEST__UPSERT_BATCH=str(BATCH), SNAPSHOP_INGEST__DECODE_WORKERS="2")
        self.started = time.monotonic()
        self.first_bar_s: float | None = None
        self.done, self.total = 0, None
        self.stderr: list[str] = []
        # cwd outside the repository: no .env file there changes the settings.
        self.process = subprocess.Popen([sys.executable, "-m", "snapshop", "ingest", str(catalog)],
                                        cwd=store.parent, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_progress, daemon=True)
        self._reader.start()

    def _read_progress(self) -> None:
        pending = b""
        while chunk := self.process.stderr.read1(4096):
            pending += chunk
            *pieces, pending = re.split(rb"[\r\n]", pending)
            for piece in pieces:
                text = piece.decode("utf-8", "replace")
                self.stderr.append(text)
                if match := _BAR.search(text):
                    if self.first_bar_s is None:
                        self.first_bar_s = time.monotonic() - self.started
                    self.done, self.total = int(match.group(1)), int(match.group(2))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def kill_when(self, ready, timeout_s: float = RUN_TIMEOUT_S) -> bool:
        """SIGKILL as soon as ``ready(self)`` holds; False when the run ended first."""
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if ready(self):
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
                self._reader.join(5)
                return True
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"ingest ran over {timeout_s} s; stderr: {self.tail()}")
            time.sleep(0.01)
        self._reader.join(5)
        return False

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> tuple[int, str]:
        try:
            stdout, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"ingest ran over {timeout_s} s; stderr: {self.tail()}")
        self._reader.join(5)
        return self.process.returncode, stdout.decode("utf-8", "replace")

    def tail(self) -> str:
        return " | ".join(line for line in self.stderr[-8:] if line.strip())


# --- when to kill ---------------------------------------------------------------------------------------
def after_products(count: int):
    return lambda run: run.done >= count


def after_share(share: float):
    return lambda run: bool(run.total) and run.done >= max(1.0, share * run.total)


def after_seconds(seconds: float):
    return lambda run: run.elapsed >= seconds


def after_last_batch(wait_s: float):
    seen: dict[str, float] = {}

    def ready(run) -> bool:
        if run.total is None or run.done < run.total:
            return False
        return time.monotonic() - seen.setdefault("at", time.monotonic()) >= wait_s

    return ready


# --- what the store holds ------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """The store as a reader sees it after a kill."""

    label: str
    count: int
    ids: list[str]
    partial: dict[str, str] = field(default_factory=dict)  # product id -> what is missing
    payloads: dict[str, dict] = field(default_factory=dict)
    reported_written: int = 0  # products the killed run had reported as written, plus those before it


def snapshot(store_path: Path, info, label: str) -> Snapshot:
    with open_store(StoreSettings(path=store_path), info) as store:
        ids = [product_id for product_id, _ in store.scroll_ids()]
        shot = Snapshot(label, store.count(), ids)
        for start in range(0, len(ids), 256):
            chunk = ids[start : start + 256]
            records = store.shard.retrieve([point_id(i) for i in chunk], with_payload=True, with_vector=True)
            for record in records:
                payload = dict(record.payload or {})
                product_id = payload.get("product_id", str(record.id))
                shot.payloads[product_id] = payload
                if problem := _incomplete(record.vector, payload, store.info.dim):
                    shot.partial[product_id] = problem
    return shot


def _incomplete(vector, payload: dict, dim: int) -> str | None:
    if not isinstance(vector, dict):
        return "no named vectors"
    image = np.asarray(vector.get(IMAGE_VECTOR) or [], dtype=np.float32)
    if image.ndim != 2 or image.shape[1] != dim or image.shape[0] < 1:
        return f"image vector {image.shape}"
    for name, size in ((CAPTION_VECTOR, dim), (SENTENCE_VECTOR, 384)):
        if len(vector.get(name) or []) != size:
            return f"{name} vector missing or of the wrong size"
    if vector.get(BM25_VECTOR) is None or not vector[BM25_VECTOR].indices:
        return "bm25 vector missing"
    if missing := PAYLOAD_KEYS - set(payload):
        return f"payload without {sorted(missing)}"
    return None


def assert_whole(shot: Snapshot, catalog_ids: set[str]) -> None:
    assert not shot.partial, f"{shot.label}: half-written products {dict(list(shot.partial.items())[:5])}"
    assert shot.count == len(shot.ids) == len(set(shot.ids)), f"{shot.label}: duplicates or a wrong count"
    assert set(shot.ids) <= catalog_ids, f"{shot.label}: products that are not in the catalog"
    assert shot.count >= shot.reported_written, (
        f"{shot.label}: the run had reported {shot.reported_written} products written, "
        f"the store holds {shot.count}")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rng() -> random.Random:
    print(f"crash test seed: {SEED} (SNAPSHOP_CRASH_SEED={SEED} replays these kill points)")
    return random.Random(SEED)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A catalog of PRODUCTS real products from all categories, photos copied next to it."""
    frame = pd.read_csv(require(FASHION) / "catalog.csv")
    frame = frame.sample(n=min(PRODUCTS, len(frame)), random_state=7).reset_index(drop=True)
    folder = tmp_path_factory.mktemp("crash") / "shop"
    (folder / "images").mkdir(parents=True)
    for source in frame.image:
        shutil.copy(FASHION / source, folder / "images")
    frame["image"] = ["images/" + Path(source).name for source in frame.image]
    frame.to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


@pytest.fixture(scope="module")
def crashed_ingest(shop, encoder, rng):
    """Ingest killed three times at random points, then run to completion; the store after each."""
    store_path = shop.parent.parent / "store"
    catalog_ids = set(pd.read_csv(shop).id.astype(str))
    shots, held = [], 0
    kill_points = [
        ("after some batches", after_products(rng.randint(BATCH, 5 * BATCH))),
        ("mid-run", after_share(rng.uniform(0.3, 0.7))),
        # The last batch is written: the kill lands while the index is built and the store closed.
        ("after the last batch", after_last_batch(rng.uniform(0.0, 0.6))),
    ]
    timings = {}
    for label, ready in kill_points:
        run = IngestProcess(shop, store_path)
        killed = run.kill_when(ready)
        timings.setdefault("first_bar_s", run.first_bar_s)
        shot = snapshot(store_path, encoder.info, f"killed {label}" if killed else f"{label} (ended first)")
        shot.reported_written = held + (run.done if killed else 0)
        shots.append(shot)
        held = shot.count
    run = IngestProcess(shop, store_path)
    code, out = run.finish()
    final = snapshot(store_path, encoder.info, "completed")
    print("; ".join(f"{shot.label}: {shot.count} stored" for shot in [*shots, final]))
    return {"store": store_path, "catalog_ids": catalog_ids, "frame": pd.read_csv(shop), "kills": shots,
            "final": final,
            "exit": (code, out, run.tail()), "timings": timings}


# --- tests ------------------------------------------------------------------------------------------
def test_a_killed_ingest_resumes_and_ends_with_every_product_once_and_whole(crashed_ingest, shop, encoder, rng):
    catalog_ids = crashed_ingest["catalog_ids"]
    kills = crashed_ingest["kills"]
    assert sum(shot.label.startswith("killed") for shot in kills) >= 2, [shot.label for shot in kills]
    assert 0 < kills[0].count < len(catalog_ids), "the first kill should land after some, not all, batches"
    for shot in kills:
        assert_whole(shot, catalog_ids)

    code, out, tail = crashed_ingest["exit"]
    assert code == 0, f"the completing run failed: {out} {tail}"
    final = crashed_ingest["final"]
    assert_whole(final, catalog_ids)
    assert set(final.ids) == catalog_ids and final.count == len(catalog_ids)

    # Payloads are the catalog's, vectors are what the model makes of the photo and the title.
    original = crashed_ingest["frame"]
    frame = original.set_index(original.id.astype(str))
    for product_id in catalog_ids:
        payload = final.payloads[product_id]
        assert payload["title"] == frame.at[product_id, "title"]
        assert payload["price"] == pytest.approx(frame.at[product_id, "price"])
        assert payload["category"] == frame.at[product_id, "category"]
    checked = rng.sample(sorted(catalog_ids), 6)
    with open_store(StoreSettings(path=crashed_ingest["store"]), encoder.info) as store:
        stored = store.get(checked, with_vectors=True)
        photos = [load_image_file(shop.parent / frame.at[pid, "image"]) for pid in checked]
        fresh_images = encoder.encode_images(photos)
        fresh_titles = encoder.encode_texts([frame.at[pid, "title"] for pid in checked])
        for product_id, image_vector, title_vector in zip(checked, fresh_images, fresh_titles):
            assert stored[product_id].image_vectors.shape == (1, encoder.info.dim)
            assert cosine(stored[product_id].image_vectors[0], image_vector) > 0.999
            assert cosine(stored[product_id].caption_vector, title_vector) > 0.999
            # Searching with the photo finds the product, whole. The catalog sells some products
            # under one photo (11145 and 11146 share a file), so the product only has to tie the best.
            hits = store.query(image_vector, IMAGE_VECTOR, _no_filters(), 5, with_vectors=True)
            tied = [hit for hit in hits if hit.score >= hits[0].score - 1e-4]
            hit = next((hit for hit in tied if hit.product_id == product_id), None)
            assert hit is not None, (product_id, [(h.product_id, h.score) for h in hits])
            assert hit.payload["title"] == frame.at[product_id, "title"]


def test_a_killed_price_update_ends_with_every_new_price(crashed_ingest, shop, encoder, rng):
    store_path, catalog_ids = crashed_ingest["store"], crashed_ingest["catalog_ids"]
    frame = crashed_ingest["frame"].copy()
    frame["price"] = (frame.price * 1.1 + 1).round(2)
    retitled = frame.index % 16 == 0  # these are re-embedded too: the update run takes a while
    frame.loc[retitled, "title"] = frame.loc[retitled, "title"] + " Limited Edition"
    frame.to_csv(shop, index=False)
    before = crashed_ingest["final"]

    load_s = crashed_ingest["timings"]["first_bar_s"] or 10.0
    kill_points = [
        # Around the end of model loading: the payload-only updates happen right after it.
        ("while prices are rewritten", after_seconds(rng.uniform(0.8, 1.3) * load_s)),
        ("while titles are re-embedded", after_share(rng.uniform(0.2, 0.8))),
    ]
    for label, ready in kill_points:
        run = IngestProcess(shop, store_path)
        killed = run.kill_when(ready)
        assert_whole(snapshot(store_path, encoder.info, f"killed {label}" if killed else label), catalog_ids)
    code, out = IngestProcess(shop, store_path).finish()
    assert code == 0, out

    after = snapshot(store_path, encoder.info, "update completed")
    assert_whole(after, catalog_ids)
    assert set(after.ids) == catalog_ids
    expected = frame.set_index(frame.id.astype(str))
    for product_id in catalog_ids:
        assert after.payloads[product_id]["price"] == pytest.approx(expected.at[product_id, "price"]), product_id
        assert after.payloads[product_id]["title"] == expected.at[product_id, "title"]
    changed = rng.sample(sorted(expected.index[retitled]), 4)
    unchanged = rng.sample(sorted(expected.index[~retitled]), 4)
    with open_store(StoreSettings(path=store_path), encoder.info) as store:
        stored = store.get(changed + unchanged, with_vectors=True)
        fresh = encoder.encode_texts([expected.at[pid, "title"] for pid in changed])
        for product_id, title_vector in zip(changed, fresh):
            assert cosine(stored[product_id].caption_vector, title_vector) > 0.999
        for product_id in unchanged:  # a price change kept the vectors (payload-only update)
            assert after.payloads[product_id]["content_hash"] == before.payloads[product_id]["content_hash"]


def _no_filters():
    from engine.store import SearchFilters

    return SearchFilters()


# --- a store killed while it is being created -----------------------------------------------------
CREATOR = """
import sys
from pathlib import Path
from engine.model_info import ModelInfo
from engine.store.edge import EdgeStore

root, first = Path(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
for number in range(first, first + 1000):
    EdgeStore(root / f"store-{number}", "products", ModelInfo("crash-model", "1", 8)).close()
"""


def test_a_store_killed_while_being_created_opens_again(tmp_path, rng):
    """Kill a process that creates stores one after another: whatever state the last one is in,
    opening it again works (an unfinished creation is finished; nothing was stored in it yet)."""
    from engine.model_info import ModelInfo
    from engine.store import ProductPoint

    info = ModelInfo("crash-model", "1", 8)
    for run in range(3):
        process = subprocess.Popen([sys.executable, "-c", CREATOR, str(tmp_path), str(run * 1000)], cwd=REPO,
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    stores = sorted(tmp_path.glob("store-*"))
    assert len(stores) >= 3
    for root in stores:
        with open_store(StoreSettings(path=root), info) as store:
            assert store.count() == 0
            store.upsert([ProductPoint("p", np.ones((1, 8), np.float32), np.ones(8, np.float32), {"title": "t"})])
        with open_store(StoreSettings(path=root), info) as store:
            assert store.count() == 1


def test_a_store_with_products_but_no_model_record_is_never_discarded(tmp_path):
    from engine.errors import StoreError
    from engine.model_info import ModelInfo
    from engine.store import ProductPoint

    info, settings = ModelInfo("crash-model", "1", 8), StoreSettings(path=tmp_path / "store")
    with open_store(settings, info) as store:
        store.upsert([ProductPoint("p", np.ones((1, 8), np.float32), np.ones(8, np.float32), {"title": "t"})])
    record = tmp_path / "store" / "products" / "snapshop.json"
    record.write_text('{"model": "crash-mo')  # cut short
    with pytest.raises(StoreError, match="snapshop.json cannot be read"):
        open_store(settings, info)
    record.unlink()
    with pytest.raises(StoreError, match="holds 1 products but no snapshop.json"):
        open_store(settings, info)
