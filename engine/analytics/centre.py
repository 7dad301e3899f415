"""The shopper-photo centre (engine.shopper_centre) learnt from the photos this shop's shoppers
searched with: the mean of their appearance vectors as they come, never the photos and never which
product a photo showed.

A server learns it by default (``SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto``, ``CentreLearner``): from
the query log when search analytics are on (it survives a restart), otherwise from the newest
photos' appearance vectors kept in the server's memory only (``RecentPhotoLooks``: nothing is
written, a restart starts over). `snapshop calibrate --from-log` learns it once into a file. Only
vectors of the loaded model are read: another model's appearance space is another space, so its
logged vectors are left out (and named when too few are left).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engine.analytics.log import QueryLog
from engine.errors import CalibrationError
from engine.model_info import ModelInfo
from engine.shopper_centre import LEARN_FROM, MIN_PHOTOS, ShopperCentre, learning_due

log = logging.getLogger(__name__)


def centre_from_log(query_log: QueryLog, info: ModelInfo, since: float = 0.0) -> tuple[ShopperCentre, Counter]:
    """The centre of the newest distinct photos searched whole from ``since`` on with ``info``'s
    model, and how many logged photos of other models were left out (by model). Fewer than
    ``MIN_PHOTOS`` of this model: a CalibrationError saying how many there were."""
    mine, others = _of_model(query_log.photo_looks(since), info)
    if len(mine) < MIN_PHOTOS:
        left_out = (f"; {sum(others.values())} logged by other models were left out "
                    f"({', '.join(f'{model}: {n}' for model, n in others.most_common())})" if others else "")
        raise CalibrationError(
            f"the query log {query_log.path} holds {len(mine)} photo searches with appearance vectors of model "
            f"{info.tag}{left_out}; a shopper-photo centre needs at least {MIN_PHOTOS}: let shoppers search by "
            "photo with search analytics on (SNAPSHOP_ANALYTICS__ENABLED=true), or calibrate on photos")
    return ShopperCentre.of(np.stack(mine), info.tag), others


def _of_model(looks: list[tuple[str | None, np.ndarray]], info: ModelInfo) -> tuple[list[np.ndarray], Counter]:
    """The appearance vectors of ``info``'s model among ``looks``, and how many of other models (by model)."""
    mine, others = [], Counter()
    for model, look in looks:
        if model == info.tag and look.shape == (info.look_dim,):
            mine.append(look)
        else:
            others[model or "unknown"] += 1
    return mine, others


class RecentPhotoLooks:
    """The appearance vectors of the newest ``LEARN_FROM`` distinct photos searched, in this
    process's memory only (a server without the query log): what the log would keep of them, and
    read the same way (``photo_looks``), but never written anywhere. 1,000 vectors of 1,280
    numbers: 5 MB. Safe to share between threads."""

    def __init__(self, limit: int = LEARN_FROM):
        self.limit = limit
        self._looks: OrderedDict[str, tuple[str | None, np.ndarray]] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def add(self, photo_sha256: str, model: str | None, look: np.ndarray) -> None:
        """Keep one searched photo's vector; a photo searched again (its next page, words added)
        counts once, as its newest search."""
        with self._lock:
            self._looks.pop(photo_sha256, None)
            self._looks[photo_sha256] = (model, np.asarray(look, dtype=np.float32))
            while len(self._looks) > self.limit:
                self._looks.popitem(last=False)

    def photo_looks(self, since: float = 0.0) -> list[tuple[str | None, np.ndarray]]:
        """(model, appearance vector) of the kept photos, newest first (QueryLog.photo_looks)."""
        with self._lock:
            return list(reversed(self._looks.values()))


class CentreLearner:
    """A serving shop's centre (``SNAPSHOP_SEARCH__SHOPPER_CENTRE=auto``), learnt from ``source``
    (its query log, or ``RecentPhotoLooks``): at start from what the source holds, then again
    whenever ``learning_due`` says so as photo searches come, each new centre handed to ``use``
    (the searcher's ``use_shopper_centre``). Learning again reads up to 1,000 vectors (20-50 ms on
    the loaded 2-core machine), so it runs on a thread of its own and no shopper's answer waits for
    it. Safe to share between threads."""

    def __init__(self, source: QueryLog | RecentPhotoLooks, info: ModelInfo, use: Callable[[ShopperCentre], None]):
        self.source, self.info, self.use = source, info, use
        self.seen = 0  # photo searches of this model: in the log at start, then logged since
        self.learnt_at: int | None = None  # ``seen`` when it was last learnt
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopper-centre")
        self._pending: Future | None = None
        self._closed = False

    def start(self) -> None:
        """Learn from the photos the log holds already (nothing while they are too few)."""
        with self._lock:
            self.seen = sum(model == self.info.tag for model, _ in self.source.photo_looks())
        self._learn()

    def photo_searched(self, photo: bytes, model: str | None, look: np.ndarray) -> None:
        """A photo was searched whole (after the query log, when on, recorded it): kept in memory
        when that is the source (by its SHA-256, hashed only then: the log hashed it already),
        counted, and learnt from when due."""
        if isinstance(self.source, RecentPhotoLooks) and model == self.info.tag:
            self.source.add(hashlib.sha256(photo).hexdigest(), model, look)
        self.logged(model)

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
        # The source is read outside the lock: searches logged meanwhile are not held up.
        mine, _ = _of_model(self.source.photo_looks(), self.info)
        if len(mine) < MIN_PHOTOS:  # photos searched again: too few distinct ones yet, tried at the next
            return
        centre = ShopperCentre.of(np.stack(mine), self.info.tag)
        with self._lock:
            self.learnt_at = seen
        self.use(centre)
        where = "the query log's" if isinstance(self.source, QueryLog) else "this server's"
        log.info("shopper-photo centre learnt from %s %d latest photo searches", where, centre.photos)
