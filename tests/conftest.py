"""Shared fixtures: the real offline model (loaded once) and small catalogs made from ../shared/data."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from engine.model_loading import load_encoder
from engine.settings import ModelSettings

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SNAPSHOP_DATA", REPO.parent / "shared" / "data"))
FASHION = DATA / "fashion"
GROCERY = DATA / "grocery"


def checkerboard_features():
    """Local features of one made-up photo with plenty of corners (seeded random blocks)."""
    import numpy as np
    from PIL import Image

    from engine.local_features import extract_local_features

    blocks = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    photo = Image.fromarray(blocks).resize((240, 240), Image.Resampling.NEAREST)
    return [extract_local_features(photo)]


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"development data not found at {path} (set SNAPSHOP_DATA)")
    return path


@pytest.fixture(scope="session")
def encoder():
    """The real offline default model, loaded through the registry like in production."""
    return load_encoder(ModelSettings(batch_size=32))


@pytest.fixture(scope="session")
def fashion_frame() -> pd.DataFrame:
    return pd.read_csv(require(FASHION) / "catalog.csv")


def pick_products(frame: pd.DataFrame, per_category: int, categories: list[str]) -> pd.DataFrame:
    parts = [frame[frame.category == c].head(per_category) for c in categories]
    return pd.concat(parts).reset_index(drop=True)


def write_catalog(rows: pd.DataFrame, folder: Path, name: str = "catalog.csv") -> Path:
    """Copy the rows' photos next to a new catalog, with paths relative to it (as a shop would)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    out = rows.copy()
    for index, row in out.iterrows():
        source = FASHION / row["image"]
        shutil.copy(source, images / source.name)
        out.at[index, "image"] = f"images/{source.name}"
    path = folder / name
    out.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
    return path


SMALL_CATEGORIES = ["Shirts", "Watches", "Sports Shoes", "Handbags", "Sunglasses", "Jeans"]


@pytest.fixture(scope="session")
def small_rows(fashion_frame) -> pd.DataFrame:
    """36 real products, six categories."""
    return pick_products(fashion_frame, 6, SMALL_CATEGORIES)


@pytest.fixture()
def small_catalog(tmp_path, small_rows) -> Path:
    return write_catalog(small_rows, tmp_path / "shop")
