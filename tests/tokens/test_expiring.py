"""The bounded expiring map behind the token cache, the revocation memory, the negative cache,
the idle-use memory and the failed-authentication counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.expiring import Expiring


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 5), st.floats(-5, 20)),
        st.tuples(st.just("get"), st.integers(0, 5), st.just(0.0)),
        st.tuples(st.just("pop"), st.integers(0, 5), st.just(0.0)),
        st.tuples(st.just("tick"), st.just(0), st.floats(0, 10)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_answers_as_a_plain_map_of_deadlines_does(ops: list[tuple[str, int, float]]) -> None:
    # Room for every key, so no live entry is ever dropped: every live answer is the model's.
    clock = Clock()
    cache: Expiring[int, str] = Expiring(10, clock)
    model: dict[int, tuple[str, float]] = {}
    for step, (op, key, x) in enumerate(ops):
        if op == "set":
            cache.set(key, f"v{step}", clock.now + x)
            model[key] = (f"v{step}", clock.now + x)
        elif op == "get":
            want = model[key][0] if key in model and clock.now < model[key][1] else None
            assert cache.get(key) == want
            assert (key in cache) is (want is not None)
            assert cache.get(key, clock.now) == want
        elif op == "pop":
            got, held = cache.pop(key), model.pop(key, None)
            if held is not None and clock.now < held[1]:
                assert got == held[0]
            else:  # a dead entry may already be gone
                assert got in (None, held[0] if held else None)
        else:
            clock.now += x  # forward only: an entry once dead may be gone for good
    assert len(cache) <= len(model)


def test_an_entry_ends_at_its_deadline_not_after() -> None:
    clock = Clock()
    cache: Expiring[str, int] = Expiring(4, clock)
    cache.set("a", 1, clock.now + 5)
    clock.now += 4.999
    assert cache.get("a") == 1
    clock.now += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0  # dropped when found dead


def test_a_time_given_is_the_time_judged() -> None:
    clock = Clock()
    cache: Expiring[str, int] = Expiring(4, clock)
    cache.set("a", 1, clock.now + 5)
    assert cache.get("a", clock.now + 6) is None
    cache.set("a", 1, clock.now + 5)
    assert cache.get("a", clock.now - 100) == 1


def test_an_entry_dead_when_set_is_not_kept() -> None:
    clock = Clock()
    cache: Expiring[str, int] = Expiring(4, clock)
    cache.set("a", 1, clock.now + 5)
    cache.set("a", 2, clock.now)  # a TTL of 0: dead at once, and the old value goes too
    cache.set("b", 3, clock.now - 1)
    assert len(cache) == 0 and cache.get("a") is None and cache.get("b") is None


def test_dead_entries_at_the_least_recently_used_end_go_as_new_ones_come() -> None:
    # A churn of keys that each live one second: the map stays near its live size, without a
    # sweep, however large it may grow.
    clock = Clock()
    cache: Expiring[int, int] = Expiring(100_000, clock)
    for key in range(10_000):
        cache.set(key, key, clock.now + 1)
        clock.now += 0.01  # about 100 keys live at any time
    assert len(cache) <= 110
    assert cache.get(9_999) == 9_999


def test_a_full_map_drops_dead_entries_first_at_its_least_recently_used_end() -> None:
    clock = Clock()
    cache: Expiring[int, int] = Expiring(4, clock)
    cache.set(0, 0, clock.now + 1)
    cache.set(1, 1, clock.now + 1)
    cache.set(2, 2, clock.now + 100)
    cache.set(3, 3, clock.now + 100)
    clock.now += 2
    cache.set(4, 4, clock.now + 100)  # 0 and 1 are dead: both go, nothing live does
    assert len(cache) == 3
    assert [cache.get(k) for k in range(5)] == [None, None, 2, 3, 4]


def test_a_full_map_drops_the_entry_least_recently_set_or_found() -> None:
    clock = Clock()
    cache: Expiring[int, int] = Expiring(16, clock)
    for key in range(16):
        cache.set(key, key, clock.now + 100)
    assert cache.get(0) == 0  # found: now the most recently used
    cache.set(16, 16, clock.now + 100)
    assert len(cache) == 16
    assert cache.get(1) is None
    assert [k for k in range(17) if cache.get(k) is not None] == [0, *range(2, 17)]


def test_replacing_a_key_in_a_full_map_evicts_nothing() -> None:
    clock = Clock()
    cache: Expiring[int, int] = Expiring(4, clock)
    for key in range(4):
        cache.set(key, key, clock.now + 100)
    cache.set(0, 10, clock.now + 100)
    assert [cache.get(k) for k in range(4)] == [10, 1, 2, 3]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(0, 100), max_size=200))
def test_never_holds_more_than_its_size(size: int, keys: list[int]) -> None:
    cache: Expiring[int, int] = Expiring(size, Clock())
    for key in keys:
        cache.set(key, key, 2000.0)
        assert len(cache) <= size
        assert cache.get(key) == key  # the newest entry is always kept


def test_a_map_of_no_entries_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Expiring(0, Clock())
