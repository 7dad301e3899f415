"""The hybrid ranker: the signals' evidence fused at query time.

Each signal (``engine.signals``, the registry) gives a raw score per candidate product;
calibration maps it to [0, 1] by how far it stands above the same query's scores against a
random sample of the catalog (its background), and the fused score is the weighted mean of the
calibrated signals that apply. Every result carries each signal's share of its score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

# How far above the catalog's background a raw similarity must be to count as a likely match:
# z = (raw - background mean) / background std, then sigmoid((z - Z_CENTER) / Z_SCALE).
# A query's own background makes short queries ("shoes") and long ones (a full title), photos
# and texts comparable, which raw cosines are not.
Z_CENTER = 2.5
Z_SCALE = 1.0
# Bounded signals (BM25 share, category probability, price closeness, popularity) in [0, 1]
# count as up to this many standard deviations of evidence, on the dense signals' scale.
BOUNDED_Z = 5.0


@dataclass(frozen=True)
class Background:
    """Raw scores of one query against a random sample of the catalog."""

    mean: float
    std: float

    @classmethod
    def of(cls, scores: np.ndarray) -> "Background":
        return cls(float(scores.mean()), max(float(scores.std()), 1e-3))

    def z(self, raw: float) -> float:
        """How many standard deviations above this query's background ``raw`` stands."""
        return (raw - self.mean) / self.std

    def calibrate(self, raw: float) -> float:
        return squash(self.z(raw))


def squash(z):
    """Evidence in standard deviations onto [0, 1]: 0.5 at Z_CENTER. One value or an array."""
    out = 1.0 / (1.0 + np.exp(-np.clip((np.asarray(z, dtype=np.float64) - Z_CENTER) / Z_SCALE, -40.0, 40.0)))
    return float(out) if out.ndim == 0 else out


def bounded(value: float) -> float:
    """A [0, 1] signal as evidence on the z scale."""
    return value * BOUNDED_Z


# Geometric verification on the z scale: inliers up to MATCH_FLOOR happen between unrelated photos
# (repeated texture, a few chance matches); above it the evidence grows with their logarithm,
# MATCH_Z_PER_LOG z per e-fold (10 inliers above the floor: about 5 z, a bounded signal's most).
MATCH_FLOOR = 6
MATCH_Z_PER_LOG = 2.0


# A calibrated match this high (about 16 inliers: a label agreeing point by point) shows the
# product itself, whatever the global features say: such an answer is never "nothing close".
VERIFIED_MATCH = 0.9


def match_evidence(inliers: int) -> float:
    """RANSAC inliers of a query photo against a product's photos, as evidence in z units."""
    return MATCH_Z_PER_LOG * math.log1p(max(inliers - MATCH_FLOOR, 0))


def bm25_share(raw: float, best: float) -> float:
    """BM25 relative to the best title match of this query: 1 for the best, 0 for no shared word."""
    return raw / best if best > 0 else 0.0


def fuse(evidence: dict[str, float], weights: BaseModel) -> tuple[float, dict[str, float]]:
    """The weighted mean of the signals' evidence (z units), squashed to [0, 1], and each signal's
    share of the positive evidence.

    Fusing z-scores rather than squashed values keeps a strong signal's margins: two candidates
    10 and 6 standard deviations above the background both squash to ~1, yet differ a lot.
    """
    active = {name: value for name, value in evidence.items() if getattr(weights, name) > 0}
    total_weight = sum(getattr(weights, name) for name in active)
    if total_weight == 0:
        return 0.0, {}
    fused = sum(getattr(weights, name) * value for name, value in active.items()) / total_weight
    positive = {name: getattr(weights, name) * max(value, 0.0) for name, value in active.items()}
    total = sum(positive.values())
    shares = {name: (part / total if total > 0 else 1.0 / len(positive)) for name, part in positive.items()}
    return squash(fused), shares


def fused_scores(evidence: np.ndarray, weights: BaseModel) -> np.ndarray:
    """``fuse``'s score for many candidates at once: ``evidence`` is (candidates, signals) in the
    weights' order, NaN where a signal does not apply to a candidate. Ranking a few hundred
    candidates this way costs what explaining ten of them costs one by one."""
    w = np.array(list(weights.model_dump().values()), dtype=np.float64)
    fused, applies = fused_evidence(evidence, w)
    return np.where(applies, squash(fused), 0.0)


def fused_evidence(evidence: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mean of each candidate's evidence over the signals that apply to it (before
    the squash, which keeps the order), and whether any weighted signal applies at all. The last
    axis of ``evidence`` (NaN: does not apply) lines up with the weights ``w``; any leading axes
    are candidates (or searches and their candidates, as when weights are fitted to clicks)."""
    present = ~np.isnan(evidence) & (w > 0)
    total = (present * w).sum(axis=-1)
    fused = np.where(present, evidence, 0.0) @ w / np.where(total > 0, total, 1.0)
    return fused, total > 0


def price_closeness(price: float | None, target: float) -> float:
    """1 at the target price, 0.5 at a factor of about 1.4 away, falling off on a log scale."""
    if price is None or price <= 0 or target <= 0:
        return 0.0
    return math.exp(-abs(math.log(price / target)) / 0.5)


def softmax(values: np.ndarray, temperature: float) -> np.ndarray:
    z = values / temperature
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()
