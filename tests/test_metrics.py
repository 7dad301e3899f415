"""Metric code against a tiny brute-force reference."""

import itertools
import math
import random

import pytest

from eval.metrics import first_relevant_ranks, mrr, ndcg_at, recall_at


def brute_ndcg(ranking, gains, k):
    dcg = sum(gains.get(pid, 0) / math.log2(i + 2) for i, pid in enumerate(ranking[:k]))
    best = max(  # the ideal ordering found by trying every permutation of the relevant items
        sum(gains[pid] / math.log2(i + 2) for i, pid in enumerate(order[:k]))
        for order in itertools.permutations(list(gains))
    )
    return dcg / best if best else 0.0


def test_recall_and_mrr_on_a_hand_computed_case():
    rankings = [["a", "b", "c"], ["x", "y", "z"], ["q", "r", "s"]]
    relevant = [{"a"}, {"z"}, {"nope"}]
    ranks = first_relevant_ranks(rankings, relevant)
    assert ranks == [1, 3, None]
    assert recall_at(ranks, 1) == pytest.approx(1 / 3) and recall_at(ranks, 3) == pytest.approx(2 / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_ndcg_matches_brute_force_on_random_cases():
    rng = random.Random(0)
    ids = [f"p{i}" for i in range(8)]
    for _ in range(50):
        ranking = rng.sample(ids, 6)
        gains = {pid: float(rng.choice([1, 2])) for pid in rng.sample(ids, rng.randint(1, 5))}
        assert ndcg_at([ranking], [gains], 5) == pytest.approx(brute_ndcg(ranking, gains, 5))
