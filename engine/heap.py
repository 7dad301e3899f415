"""The Python heap of a long-running search process, settled once it has loaded.

A server holds millions of long-lived Python objects after start (the model's modules and
tensors' wrappers, the tokenizer, the catalog's caches). CPython's full (generation 2) collection
walks all of them, and one lands inside some request every few hundred searches: measured on the
million-product bench, 7 full collections of 40-250 ms each on a busy machine, each of them one
search's latency (the p99 of a hundred searches is one or two of them). Objects alive at start are
never garbage, so they are moved out of the collector's sight; what searches allocate is still
collected as before.
"""

from __future__ import annotations

import gc


def settle_heap() -> int:
    """Collect what loading left behind, then exempt every object alive now from later collections
    (``gc.freeze``). Call once the model and the store are open; returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
