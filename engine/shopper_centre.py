"""Shoppers' photos centred on their own mean: a store's correction of the appearance vector.

Every phone photo taken in a shop shares something with every other: the shop's light, crates,
shelves, price labels, a hand. In the appearance space that common part points at the few
catalog photos that already look like a shop (three satsumas together, a net of onions), which
then come first for photos of quite other products. On the 800 grocery shopper photos, appearance
alone, 61 of the 334 fruit photos went first to Satsumas (oranges, lemons, grapefruit, Golden
Delicious). Subtracting the mean of the shop's own shoppers' photos' appearance vectors takes that
part out. It reads photos only, never which product a photo showed: a shop calibrates with the
photos its shoppers have searched with (or any photos taken in its aisles).

Measured on the grocery photos, each half centred on the other half's mean (docs/quality.md):
appearance alone R@1 / R@5 0.436 / 0.751 -> 0.521 / 0.828; fused 0.515 / 0.769 -> 0.564 / 0.835.
A mean of 10 photos already gave most of it (report half R@1 0.513 against 0.528 with 419).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import CalibrationError
from engine.model_info import ModelInfo

# Fewer photos than this make a noisy mean: 5 photos gave report-half R@1 0.480 at worst of 10
# draws, 10 photos 0.501, 25 photos 0.499 (uncentred: 0.444).
MIN_PHOTOS = 10
# A centre learnt from the query log (SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto) is learnt again after
# this many more photo searches: one SQLite read of at most LEARN_FROM vectors, a few ms.
LEARN_EVERY = 10
# It is the mean of the most recent this many distinct photos searched: from 100 photos on the
# report half's R@1 was within 0.004 of all 419 (0.524 against 0.528), and the newest photos follow
# the shop's light and shelves as they change. The log keeps appearance vectors for these only.
LEARN_FROM = 1000


def learning_due(photos_seen: int, learnt_at: int | None) -> bool:
    """Whether a centre learnt from the log when it had seen ``learnt_at`` photo searches (None:
    not learnt yet) is to be learnt again now that ``photos_seen`` have been searched."""
    if photos_seen < MIN_PHOTOS:
        return False
    return learnt_at is None or photos_seen - learnt_at >= LEARN_EVERY


@dataclass(frozen=True)
class ShopperCentre:
    """The mean appearance vector of a shop's shoppers' photos, and the model that made them."""

    vector: np.ndarray  # (look_dim,), not unit length: the mean of unit vectors
    model: str  # ModelInfo.tag: another model's appearance space is another space
    photos: int

    @classmethod
    def of(cls, looks: np.ndarray, model: str) -> ShopperCentre:
        """The centre of ``looks`` (photos, look_dim): the photos' appearance vectors as searched."""
        looks = np.asarray(looks, dtype=np.float32)
        if looks.ndim != 2 or len(looks) < MIN_PHOTOS:
            raise CalibrationError(f"a shopper-photo centre needs at least {MIN_PHOTOS} photos, got "
                                   f"{len(looks) if looks.ndim == 2 else 0}")
        return cls(looks.mean(axis=0), model, len(looks))

    def centred(self, look: np.ndarray) -> np.ndarray:
        """``look`` (a unit appearance vector of a shopper's photo) less the centre, at unit length."""
        moved = np.asarray(look, dtype=np.float32) - self.vector
        norm = float(np.linalg.norm(moved))
        return (moved / norm).astype(np.float32) if norm > 1e-6 else np.asarray(look, dtype=np.float32)

    def save(self, path: Path) -> None:
        """Write the centre (an .npz file) for ``SNAPSHOP_SEARCH__SHOPPER_CENTRE``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # np.savez would add ".npz" to any other name
            np.savez(handle, vector=self.vector, model=np.array(self.model), photos=np.array(self.photos))

    @classmethod
    def load(cls, path: Path, info: ModelInfo) -> ShopperCentre:
        """The centre in ``path``, refused unless the loaded model (``info``) made it."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                centre = cls(saved["vector"].astype(np.float32), str(saved["model"]), int(saved["photos"]))
        except (OSError, ValueError, KeyError) as e:
            raise CalibrationError(f"cannot read the shopper-photo centre '{path}': {e}") from e
        if centre.model != info.tag:
            raise CalibrationError(
                f"the shopper-photo centre '{path}' was made by model {centre.model}, the loaded model is "
                f"{info.tag}: run `snapshop calibrate` again with this model")
        if centre.vector.shape != (info.look_dim,):
            raise CalibrationError(f"the shopper-photo centre '{path}' has {centre.vector.shape} numbers, "
                                   f"the model's appearance vectors {info.look_dim}")
        return centre
