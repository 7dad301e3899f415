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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

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
    searches are logged, each new centre handed to ``use`` (the searcher's ``use_shopper_centre``).
    Learning again reads up to 1,000 vectors (20-50 ms on the loaded 2-core machine), so it runs on
    a thread of its own and no shopper's answer waits for it. Safe to share between threads."""

    def __init__(self, query_log: QueryLog, info: ModelInfo, use: Callable[[ShopperCentre], None]):
        self.query_log, self.info, self.use = query_log, info, use
        self.seen = 0  # photo searches of this model: in the log at start, then logged since
        self.learnt_at: int | None = None  # ``seen`` when it was last learnt
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopper-centre")
        self._pending: Future | None = None
        self._closed = False

    def start(self) -> None:
        """Learn from the photos the log holds already (nothing while they are too few)."""
        with self._lock:
            self.seen = sum(model == self.info.tag for model, _ in self.query_log.photo_looks())
        self._learn()

    def logged(self, model: str | None) -> None:
        """Count one more logged photo search (made by ``model``); learn again, off this thread, when due."""
        if model != self.info.tag:
            return
        with self._lock:
            self.seen += 1
            idle = self._pending is None or self._pending.done()
            if learning_due(self.seen, self.learnt_at) and idle and not self._closed:
                self._pending = self._worker.submit(self._learn)

    def settled(self) -> None:
        """Wait for a learning under way (tests, shutdown)."""
        pending = self._pending
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish a learning under way and stop the thread (before the log closes); a search
        logged after it (one in flight at shutdown) teaches nothing."""
        with self._lock:
            self._closed = True
        self._worker.shutdown(wait=True)

    def _learn(self) -> None:
        with self._lock:
            seen = self.seen
            if not learning_due(seen, self.learnt_at):
                return
        try:  # the log is read outside the lock: searches logged meanwhile are not held up
            centre, _ = centre_from_log(self.query_log, self.info)
        except CalibrationError:  # photos searched again: too few distinct ones yet, tried at the next
            return
        with self._lock:
            self.learnt_at = seen
        self.use(centre)
        log.info("shopper-photo centre learnt from the query log's %d latest photo searches", centre.photos)
