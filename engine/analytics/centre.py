"""The shopper-photo centre (engine.shopper_centre) learnt from the query log: the mean appearance
vector of the photos this shop's shoppers searched with, read from the log as they come, never the
photos and never which product a photo showed.

`snapshop calibrate --from-log` learns it once into a file; a server with
``SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto`` learns it at start and again as photo searches come
(``CentreLearner``). Both read only vectors of the loaded model: another model's appearance space
is another space, so its logged vectors are left out (and named when too few are left).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import numpy as np

from engine.analytics.log import QueryLog
from engine.errors import CalibrationError
from engine.model_info import ModelInfo
from engine.shopper_centre import MIN_PHOTOS, ShopperCentre, learning_due

log = logging.getLogger(__name__)


def centre_from_log(query_log: QueryLog, info: ModelInfo, since: float = 0.0) -> tuple[ShopperCentre, Counter]:
    """The centre of the newest distinct photos searched whole from ``since`` on with ``info``'s
    model, and how many logged photos of other models were left out (by model). Fewer than
    ``MIN_PHOTOS`` of this model: a CalibrationError saying how many there were."""
    mine, others = [], Counter()
    for model, look in query_log.photo_looks(since):
        if model == info.tag and look.shape == (info.look_dim,):
            mine.append(look)
        else:
            others[model or "unknown"] += 1
    if len(mine) < MIN_PHOTOS:
        left_out = (f"; {sum(others.values())} logged by other models were left out "
                    f"({', '.join(f'{model}: {n}' for model, n in others.most_common())})" if others else "")
        raise CalibrationError(
            f"the query log {query_log.path} holds {len(mine)} photo searches with appearance vectors of model "
            f"{info.tag}{left_out}; a shopper-photo centre needs at least {MIN_PHOTOS}: let shoppers search by "
            "photo with search analytics on (SNAPSHOP_ANALYTICS__ENABLED=true), or calibrate on photos")
    return ShopperCentre.of(np.stack(mine), info.tag), others


class CentreLearner:
    """A serving shop's centre, learnt from its query log (``SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto``):
    at start from what the log holds, then again whenever ``learning_due`` says so as photo
    searches are logged. Safe to share between threads."""

    def __init__(self, query_log: QueryLog, info: ModelInfo):
        self.query_log, self.info = query_log, info
        self.seen = 0  # photo searches of this model: in the log at start, then logged since
        self.learnt_at: int | None = None  # ``seen`` when it was last learnt
        self._lock = threading.Lock()

    def start(self) -> ShopperCentre | None:
        """The centre of the photos the log holds already; None while they are too few."""
        with self._lock:
            self.seen = sum(model == self.info.tag for model, _ in self.query_log.photo_looks())
            return self._learn_if_due()

    def logged(self, model: str | None) -> ShopperCentre | None:
        """Count one more logged photo search (made by ``model``); a newly learnt centre when due, else None."""
        if model != self.info.tag:
            return None
        with self._lock:
            self.seen += 1
            return self._learn_if_due()

    def _learn_if_due(self) -> ShopperCentre | None:
        if not learning_due(self.seen, self.learnt_at):
            return None
        try:
            centre, _ = centre_from_log(self.query_log, self.info)
        except CalibrationError:  # photos searched again: too few distinct ones yet, tried at the next
            return None
        self.learnt_at = self.seen
        log.info("shopper-photo centre learnt from the query log's %d latest photo searches", centre.photos)
        return centre
