"""Ranker weights learnt from shoppers' clicks, offline.

The query log keeps, for every result shown, the ranker's evidence per signal; the fused score
is the weighted mean of that evidence (``engine.ranking.fused_evidence``). So any weights can
re-rank every logged search without touching the store, and the weights that put what shoppers
chose on top can be fitted directly: a listwise softmax loss over each search's results (a
purchase counts 3, an add-to-cart 2, a click 1), in log-weights so they stay positive, pulled
gently toward the current weights so a signal the log says little about keeps its value.

Searches are split by session: a held-back fifth of the sessions is never fitted, and the
before/after figures on it (MRR of the chosen result) say whether the new weights generalise.
Caveat: the log shows only what the current weights put on top, and shoppers click high places
more; the fit learns within those lists, it cannot see products never shown.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

from engine.analytics.log import QueryLog
from engine.errors import InvalidQuery
from engine.ranking import fused_evidence
from engine.signals import SIGNALS, RankerWeights

GAIN = {"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}
HELD_BACK_SHARE = 0.2
MIN_WEIGHT = 0.01  # a fitted weight at this floor is written as 0: the log says the signal does not help
PULL = 0.02  # strength of the pull toward the current log-weights
MIN_SEARCHES = 20


@dataclass
class Searches:
    """Logged searches with a chosen result: evidence (searches, results, SIGNALS), NaN where a
    signal did not apply or a search had fewer results; gains (searches, results)."""

    evidence: np.ndarray
    gains: np.ndarray
    sessions: list[str]


@dataclass
class TuneResult:
    before: dict[str, float]
    after: dict[str, float]
    train_searches: int
    held_back_searches: int
    train_mrr_before: float
    train_mrr_after: float
    held_back_mrr_before: float
    held_back_mrr_after: float

    @property
    def improved(self) -> bool:
        return self.held_back_mrr_after > self.held_back_mrr_before

    def as_dict(self) -> dict:
        return {**asdict(self), "improved": self.improved}


def chosen_searches(log: QueryLog, since: float = 0.0) -> Searches:
    """The logged searches whose results a shopper acted on, as arrays."""
    gains_of: dict[str, dict[int, float]] = {}
    for event in log.events(since):
        best = gains_of.setdefault(event.query_id, {})
        best[event.position] = max(best.get(event.position, 0.0), GAIN[event.kind])
    rows = [q for q in log.queries(since) if q.id in gains_of and q.evidence]
    width = max((len(q.evidence) for q in rows), default=0)
    evidence = np.full((len(rows), width, len(SIGNALS.names)), np.nan)
    gains = np.zeros((len(rows), width))
    column = {name: i for i, name in enumerate(SIGNALS.names)}
    for s, query in enumerate(rows):
        for r, values in enumerate(query.evidence):
            for name, value in values.items():
                if name in column:  # a signal since retired is left out
                    evidence[s, r, column[name]] = value
        for position, gain in gains_of[query.id].items():
            if position <= width:
                gains[s, position - 1] = gain
    return Searches(evidence, gains, [q.session or q.id for q in rows])


def mrr(evidence: np.ndarray, gains: np.ndarray, weights: np.ndarray) -> float:
    """Mean reciprocal rank of each search's most valued result when re-ranked by ``weights``."""
    if not len(evidence):
        return 0.0
    scores = _scores(evidence, weights)
    target = np.argmax(gains, axis=1)
    mine = scores[np.arange(len(scores)), target]
    ranks = 1 + (scores > mine[:, None]).sum(axis=1)
    return float(np.mean(1.0 / ranks))


def _scores(evidence: np.ndarray, weights: np.ndarray) -> np.ndarray:
    fused, applies = fused_evidence(evidence, weights)
    # A padding row (a search with fewer results) or one no weighted signal applies to ranks last.
    return np.where(applies, fused, -1e9)


def fit(searches: Searches, current: RankerWeights) -> np.ndarray:
    """Weights (in SIGNALS order) that rank the chosen results first; signals never seen keep theirs."""
    start = np.array([getattr(current, name) for name in SIGNALS.names], dtype=np.float64)
    seen = ~np.all(np.isnan(searches.evidence), axis=(0, 1))
    free = np.flatnonzero(seen)
    theta0 = np.log(np.maximum(start[free], MIN_WEIGHT))
    bounds = [(math.log(MIN_WEIGHT), math.log(_upper(SIGNALS.names[i]))) for i in free]
    targets = searches.gains / searches.gains.sum(axis=1, keepdims=True)

    def loss(theta: np.ndarray) -> float:
        weights = start.copy()
        weights[free] = np.exp(theta)
        scores = _scores(searches.evidence, weights)
        scores = scores - scores.max(axis=1, keepdims=True)
        log_softmax = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        return float(-(targets * log_softmax).sum(axis=1).mean() + PULL * ((theta - theta0) ** 2).sum())

    theta = minimize(loss, theta0, method="L-BFGS-B", bounds=bounds).x
    weights = start.copy()
    weights[free] = np.where(theta <= math.log(MIN_WEIGHT) + 1e-6, 0.0, np.exp(theta))
    return weights


def tune(log: QueryLog, current: RankerWeights, since: float = 0.0) -> TuneResult:
    """Fit on four fifths of the sessions; report before/after on the fifth held back."""
    searches = chosen_searches(log, since)
    if len(searches.sessions) < MIN_SEARCHES:
        raise InvalidQuery(f"the log holds {len(searches.sessions)} searches with a click, add-to-cart or "
                           f"purchase; at least {MIN_SEARCHES} are needed to fit weights")
    held = np.array([_held_back(session) for session in searches.sessions])
    train = Searches(searches.evidence[~held], searches.gains[~held], [])
    before = np.array([getattr(current, name) for name in SIGNALS.names], dtype=np.float64)
    after = fit(train, current)
    return TuneResult(
        before=dict(zip(SIGNALS.names, before.round(4).tolist())), after=dict(zip(SIGNALS.names, after.round(4).tolist())),
        train_searches=int((~held).sum()), held_back_searches=int(held.sum()),
        train_mrr_before=round(mrr(train.evidence, train.gains, before), 4),
        train_mrr_after=round(mrr(train.evidence, train.gains, after), 4),
        held_back_mrr_before=round(mrr(searches.evidence[held], searches.gains[held], before), 4),
        held_back_mrr_after=round(mrr(searches.evidence[held], searches.gains[held], after), 4),
    )


def _held_back(session: str) -> bool:
    """A fixed fifth of the sessions, whatever the order or the date range of the log."""
    return int(hashlib.sha1(session.encode()).hexdigest()[:8], 16) % 100 < 100 * HELD_BACK_SHARE


def _upper(name: str) -> float:
    """The largest weight settings accept for a signal (its registry entry's bound)."""
    return float(SIGNALS[name].maximum)
