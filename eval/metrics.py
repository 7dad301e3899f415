"""Ranking metrics from the rank of each query's relevant item(s).

Kept deliberately plain: tests check them against a brute-force count on tiny cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def first_relevant_ranks(ranked_ids: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> list[int | None]:
    """1-based rank of the first relevant id in each ranking, None when it is absent."""
    ranks = []
    for ranking, wanted in zip(ranked_ids, relevant):
        ranks.append(next((i + 1 for i, pid in enumerate(ranking) if pid in wanted), None))
    return ranks


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    return float(np.mean([r is not None and r <= k for r in ranks])) if ranks else 0.0


def mrr(ranks: Sequence[int | None]) -> float:
    return float(np.mean([1.0 / r if r else 0.0 for r in ranks])) if ranks else 0.0


def ndcg_at(ranked_ids: Sequence[Sequence[str]], gains: Sequence[dict[str, float]], k: int = 10) -> float:
    """Mean nDCG@k with graded gains per query (id -> gain; missing ids gain 0)."""
    scores = []
    for ranking, gain in zip(ranked_ids, gains):
        dcg = sum(gain.get(pid, 0.0) / math.log2(i + 2) for i, pid in enumerate(ranking[:k]))
        ideal = sorted(gain.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def summary(ranks: Sequence[int | None], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    out = {f"recall@{k}": round(recall_at(ranks, k), 4) for k in ks}
    out["mrr"] = round(mrr(ranks), 4)
    out["queries"] = len(ranks)
    return out
