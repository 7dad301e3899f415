"""A per-client rate limit for public writes (``POST /events``): a token bucket per address.

Each address may send ``per_minute`` events in a burst and then one every ``60 / per_minute``
seconds. Buckets are kept for the most recent ``max_clients`` addresses only, so a flood of
forged addresses cannot grow memory without bound (a forgotten address starts with a full bucket).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, per_minute: int, max_clients: int = 10_000, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client: (tokens, at)
        self._lock = threading.Lock()

    def allow(self, client: str) -> float:
        """0 when ``client`` may go on now (and a token is taken), else the seconds to wait."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.refill_per_s)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.refill_per_s
            self._buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait
