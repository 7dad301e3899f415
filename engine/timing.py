"""Wall time per stage of one piece of work (a search, an ingest), for metrics and logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Adds up the seconds spent in each named stage; a stage entered twice counts both times."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as part of stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` of work timed elsewhere (another thread) as part of stage ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
