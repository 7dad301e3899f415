"""A shopper-photo centre learnt as the photos come, as a serving shop learns it from its query log
(SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto): the photos are searched one after another in a seeded
shuffled order, each with the centre learnt from the photos searched before it, learnt again when
``engine.shopper_centre.learning_due`` says so; the first photos, before there are enough, are
searched without one. No photo is in its own centre, and no label is read.
"""

from __future__ import annotations

import numpy as np

from engine.shopper_centre import LEARN_FROM, ShopperCentre, learning_due


def centres_as_they_come(looks: np.ndarray, model: str, seed: int = 0) -> list[ShopperCentre | None]:
    """For each photo (rows of ``looks``, its appearance vector as searched), the centre the serving
    shop would have searched it with had the photos come in a seeded shuffled order."""
    order = np.random.default_rng(seed).permutation(len(looks))
    centres: list[ShopperCentre | None] = [None] * len(looks)
    centre, learnt_at = None, None
    for seen, row in enumerate(order):  # ``seen`` photos were searched (and logged) before this one
        if learning_due(seen, learnt_at):
            centre, learnt_at = ShopperCentre.of(looks[order[max(0, seen - LEARN_FROM):seen]], model), seen
        centres[row] = centre
    return centres
