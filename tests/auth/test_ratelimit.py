"""FailedAuthLimiter on its own: the fixed one-minute window at its exact edges, and its size bound.

Written against the survivors of a mutation run of gateway/auth/ratelimit.py (issue 14). The
limiter is driven through its own clock parameter (the pipeline passes time.monotonic).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.auth.ratelimit import FailedAuthLimiter

from .jwtkit import Clock

WINDOW = 60.0


def test_the_window_ends_exactly_sixty_seconds_after_the_first_failure() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(2, clock=clock)
    limiter.failed("192.0.2.1")
    clock.advance(30.0)
    limiter.failed("192.0.2.1")  # a later failure does not move the window
    assert limiter.blocked("192.0.2.1") and not limiter.blocked("192.0.2.2")
    clock.advance(WINDOW - 30.0 - 0.001)
    assert limiter.blocked("192.0.2.1")
    clock.advance(0.001)
    assert not limiter.blocked("192.0.2.1")
    limiter.failed("192.0.2.1")  # a new window, counted from one
    assert not limiter.blocked("192.0.2.1")


def test_at_most_a_hundred_thousand_addresses_are_remembered() -> None:
    # SECURITY: a flood of failures from fresh addresses costs bounded memory; the address
    # least recently failed or asked about is forgotten first.
    clock = Clock()
    limiter = FailedAuthLimiter(1, clock=clock)
    for i in range(100_000):
        limiter.failed(f"a{i}")
    assert limiter.blocked("a0")  # now the most recently used
    limiter.failed("a100000")
    assert not limiter.blocked("a1")
    assert limiter.blocked("a0") and limiter.blocked("a2") and limiter.blocked("a100000")


# (seconds to wait, then fail (True) or only ask (False)) for one address
_STEPS = st.lists(
    st.tuples(st.sampled_from([0.0, 0.5, 1.0, 29.0, 59.5, 60.0, 61.0]), st.booleans()), max_size=30
)


@given(st.integers(min_value=1, max_value=4), _STEPS)
def test_blocked_once_the_failures_of_one_fixed_window_reach_the_limit(
    per_minute: int, steps: list[tuple[float, bool]]
) -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(per_minute, clock=clock)
    window_start: float | None = None
    count = 0
    for wait, fail in steps:
        clock.advance(wait)
        if window_start is not None and clock.now - window_start >= WINDOW:
            window_start, count = None, 0
        if fail:
            if window_start is None:
                window_start = clock.now
            count += 1
            limiter.failed("198.51.100.7")
        assert limiter.blocked("198.51.100.7") == (count >= per_minute)


def test_a_limit_of_zero_counts_nothing_and_blocks_nobody() -> None:
    limiter = FailedAuthLimiter(0, clock=Clock())
    for _ in range(10):
        limiter.failed("192.0.2.1")
    assert not limiter.blocked("192.0.2.1")
