"""Two halves of a set of shopper photos: settings are picked on one (tune) and reported on the
other, and a shopper-photo centre (engine.shopper_centre) measured on one half is used on the other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def halves(product_ids: Sequence, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The photos' positions in two halves, each product's photos dealt alternately after a seeded
    shuffle (products in numeric order where the ids are numbers, as the grocery study's split)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for position, product_id in enumerate(product_ids):
        groups[str(product_id)].append(position)
    numeric = all(key.lstrip("-").isdigit() for key in groups)
    rng = np.random.default_rng(seed)
    tune: list[int] = []
    report: list[int] = []
    for key in sorted(groups, key=(lambda k: int(k)) if numeric else None):
        order = rng.permutation(np.array(groups[key]))
        tune.extend(order[::2].tolist())
        report.extend(order[1::2].tolist())
    return np.array(sorted(tune), dtype=int), np.array(sorted(report), dtype=int)
