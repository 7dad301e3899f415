"""How a store indexes its vectors, for both stores (Qdrant Edge in-process, a Qdrant server):
which vectors get HNSW graphs and how they are built, which are searched on int8 copies and how
wide, and when the embedded store builds its graphs while products are written.

Measured on the bench's synthetic-from-real catalogs (`snapshop bench`, docs/scale.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import StoreSettings
from engine.signals import SIGNALS
from engine.store.base import LOCAL_VECTOR

# The graphs of the vectors that gather candidates: Qdrant's m, and a narrower construction search
# than its 100: building 50k bench products' graphs took 46 s at 64 against 76 s at 100 (int8,
# category links; 2 shared cores), and the int8 searches, rescored, and segments of 100k products
# make up the recall (docs/scale.md).
HNSW_M = 16
EF_CONSTRUCT = 64
FULL_SCAN_KB = 10_000  # below this many KB of vectors under a filter, a search is exact
# int8 per dimension between the 0.99 quantile's bounds: the rare outlying values are clipped
# rather than stretching the scale of all the others.
INT8_QUANTILE = 0.99


def graphed(vector: str) -> bool:
    """Whether the named vector gets an HNSW graph: not one that only scores candidates
    (engine.signals: its searches are exact over a few hundred ids), nor the local features."""
    return vector != LOCAL_VECTOR and vector not in SIGNALS.score_only_vectors


@dataclass(frozen=True)
class Indexing:
    """A store's indexing settings (StoreSettings' slice of them)."""

    int8: bool = True  # graphed vectors searched on int8 copies kept in memory, then rescored
    oversampling: float = 2.0  # candidates found on the int8 copies per result wanted
    segment_products: int = 100_000  # embedded store: graphs built for each this many products written
    # A segment whose vectors (the biggest kind's) take less is searched exactly, without a graph:
    # Qdrant's default, where a graph starts to pay.
    indexing_threshold_kb: int = 10_000

    @classmethod
    def of(cls, settings: StoreSettings) -> Indexing:
        return cls(settings.quantization == "int8", settings.oversampling, settings.segment_products)

    def quantized(self, vector: str) -> bool:
        """Whether the named vector has int8 copies: the graphed ones, when quantisation is on."""
        return self.int8 and graphed(vector)
