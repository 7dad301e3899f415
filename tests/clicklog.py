"""A generated click log with known answers, for the report and tune tests.

Shoppers run searches of a few known texts; some find nothing, some find nothing close; photo
searches that find nothing close come from two kinds of thing the shop does not sell (photos
near two directions). Each shown result has ranker evidence; shoppers click the result that a
hidden ranker (``TRUE_WEIGHTS``: words matter far more than the shop's defaults say) ranks first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.analytics.log import LoggedQuery, QueryLog
from engine.signals import SIGNALS

# The ranker shoppers behave as if they had: BM25 and the title's sentence carry the choice.
TRUE_WEIGHTS = {"image": 0.2, "caption": 0.1, "text": 2.0, "bm25": 3.0, "category": 0.2}
TEXT_SIGNALS = ("image", "caption", "text", "bm25", "category")


@dataclass
class Expected:
    texts: dict[str, int]
    zero_result: dict[str, int]
    nothing_close: dict[str, int]
    clicks_at: dict[int, int]  # position: searches clicked there
    shown_at: dict[int, int]  # position: searches that showed a result there
    photo_groups: list[int]  # sizes of the two unmet photo groups, largest first


def _evidence(rng: np.random.Generator, results: int) -> list[dict[str, float]]:
    return [{name: round(float(rng.normal(2.0, 1.5)), 4) for name in TEXT_SIGNALS} for _ in range(results)]


def _true_best(evidence: list[dict[str, float]]) -> int:
    def score(row):
        return sum(TRUE_WEIGHTS[n] * v for n, v in row.items()) / sum(TRUE_WEIGHTS[n] for n in row)

    return int(np.argmax([score(row) for row in evidence]))


def generate(log: QueryLog, seed: int = 7, sessions: int = 120, dim: int = 32) -> Expected:
    """Fill ``log`` with searches and clicks; returns what a report of it must say."""
    rng = np.random.default_rng(seed)
    now = time.time()
    texts = {"red dress": 0, "black watch": 0, "sneakers": 0}
    expected = Expected(texts, {"unicorn saddle": 0}, {"vintage typewriter": 0}, {}, {}, [])
    groups = [rng.normal(size=dim), rng.normal(size=dim)]
    group_sizes = [0, 0]
    for session in range(sessions):
        at = now - 3600 + session
        text = list(texts)[session % 3]
        results = [f"p{session}-{i}" for i in range(10)]
        evidence = _evidence(rng, len(results))
        query = LoggedQuery("text", text.upper() if session % 2 else text, {}, results, evidence, False, 12.0,
                            session=f"s{session}", at=at)
        log.record_query(query)
        texts[text] += 1
        for position in range(1, 11):
            expected.shown_at[position] = expected.shown_at.get(position, 0) + 1
        best = _true_best(evidence)
        log.record_event(query.id, results[best], "click", at=at + 1)
        expected.clicks_at[best + 1] = expected.clicks_at.get(best + 1, 0) + 1
        if session % 10 == 0:
            log.record_event(query.id, results[best], "purchase", at=at + 2)
        if session % 6 == 0:
            log.record_query(LoggedQuery("text", "unicorn saddle", {}, [], [], True, 9.0, session=f"s{session}",
                                         at=at))
            expected.zero_result["unicorn saddle"] += 1
        if session % 4 == 0:
            log.record_query(LoggedQuery("text", "vintage typewriter", {}, ["p0-0"], _evidence(rng, 1), True, 9.0,
                                         session=f"s{session}", at=at))
            expected.nothing_close["vintage typewriter"] += 1
            for position in (1,):
                expected.shown_at[position] += 1
        if session % 3 == 0:
            group = 0 if session % 9 else 1  # a third of them are the second, smaller kind
            vector = groups[group] + rng.normal(scale=0.15, size=dim)
            vector = (vector / np.linalg.norm(vector)).astype(np.float32)
            log.record_query(LoggedQuery("photo", None, {}, ["p0-1"], _evidence(rng, 1), True, 40.0,
                                         photo_sha256=f"{group}-{session:04d}", photo_vector=vector,
                                         session=f"s{session}", at=at))
            group_sizes[group] += 1
            expected.shown_at[1] += 1
    expected.photo_groups = sorted(group_sizes, reverse=True)
    assert set(TEXT_SIGNALS) <= set(SIGNALS.names)
    return expected
