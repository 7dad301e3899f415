"""Lexical matching of titles: BM25 sparse vectors computed by Qdrant Edge's own BM25 model.

Documents get term-frequency weights, queries one weight per token; the store's sparse vector
has the IDF modifier, so Qdrant scores them as BM25. The same vectors go to a Qdrant server.
"""

from __future__ import annotations

from functools import lru_cache

import qdrant_edge as qe

# Titles are short: BM25's length normalisation needs their real average length, not 256.
TITLE_AVG_TOKENS = 7.0


@lru_cache(maxsize=1)
def _model() -> qe.Bm25:
    return qe.Bm25(qe.Bm25Config(language="english", avg_len=TITLE_AVG_TOKENS, lowercase=True))


def title_terms(title: str) -> tuple[list[int], list[float]]:
    """The sparse vector of a title to store: (indices, values)."""
    vector = _model().embed_document(title)
    return list(vector.indices), list(vector.values)


def query_terms(text: str) -> tuple[list[int], list[float]]:
    vector = _model().embed_query(text)
    return list(vector.indices), list(vector.values)
