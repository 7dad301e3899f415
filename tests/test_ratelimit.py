"""The per-address token bucket of POST /events, on a clock the test moves."""

from __future__ import annotations

from api.ratelimit import RateLimiter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_event_per_share_of_the_minute():
    clock = Clock()
    limiter = RateLimiter(per_minute=6, clock=clock)  # a burst of 6, then one every 10 s
    assert [limiter.allow("1.2.3.4") for _ in range(6)] == [0.0] * 6
    wait = limiter.allow("1.2.3.4")
    assert 9.9 < wait <= 10.0
    assert limiter.allow("5.6.7.8") == 0.0  # another address has its own bucket
    clock.now += 10.0
    assert limiter.allow("1.2.3.4") == 0.0
    assert limiter.allow("1.2.3.4") > 0


def test_refused_events_do_not_push_the_wait_further():
    clock = Clock()
    limiter = RateLimiter(per_minute=60, clock=clock)
    for _ in range(60):
        limiter.allow("a")
    waits = [limiter.allow("a") for _ in range(100)]
    assert max(waits) <= 1.0  # hammering while refused costs nothing more
    clock.now += 1.0
    assert limiter.allow("a") == 0.0


def test_only_the_most_recent_addresses_are_remembered():
    clock = Clock()
    limiter = RateLimiter(per_minute=1, max_clients=3, clock=clock)
    for address in ("a", "b", "c", "d"):
        assert limiter.allow(address) == 0.0
    assert limiter.allow("d") > 0  # still remembered
    assert limiter.allow("a") == 0.0  # forgotten, so a full bucket again
