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
        st.tuples(st.just("tick"), st.just(0), st.floats(-2, 10)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_answers_as_a_plain_map_of_deadlines_does(ops: list[tuple[str, int, float]]) -> None:
    # Room for every key: no eviction, so every answer is the model's.
    clock = Clock()
    cache: Expiring[int, str] = Expiring(10, clock)
    model: dict[int, tuple[str, float]] = {}
    for step, (op, key, x) in enumerate(ops):
        if op == "set":
            cache.set(key, f"v{step}", clock.now + x)
            model[key] = (f"v{step}", clock.now + x)
        elif op == "get":
            want = model[key][0] if key in model and clock.now < model[key][1] else None
            if want is None:
                model.pop(key, None)  # a dead entry is dropped when found
            assert cache.get(key) == want
            assert (key in cache) is (want is not None)
            assert cache.get(key, clock.now) == want
        elif op == "pop":
            assert cache.pop(key) == (model.pop(key)[0] if key in model else None)
        else:
            clock.now += x  # a clock may step back, too
    assert len(cache) == len(model)


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


def test_a_full_map_sweeps_out_dead_entries_before_dropping_a_live_one() -> None:
    clock = Clock()
    cache: Expiring[int, int] = Expiring(8, clock)
    for key in range(8):
        cache.set(key, key, clock.now + (1 if key % 2 else 100))  # odd keys die first
    clock.now += 2
    cache.set(99, 99, clock.now + 100)  # the first insert past the size sweeps (8 // 8 = 1)
    assert len(cache) == 5
    assert [k for k in range(8) if cache.get(k) is not None] == [0, 2, 4, 6]
    assert cache.get(99) == 99


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


def test_sweeps_come_once_per_eighth_of_the_size_inserted() -> None:
    clock = Clock()
    cache: Expiring[int, int] = Expiring(16, clock)
    for key in range(16):
        cache.set(key, key, clock.now + (1 if key >= 8 else 100))  # 8..15 die first
    clock.now += 2
    cache.set(100, 0, clock.now + 100)  # the first insert into a full map: no sweep, key 0 goes
    assert len(cache) == 16 and cache.pop(0) is None
    cache.pop(100)
    cache.set(100, 0, clock.now + 100)  # not full: nothing dropped
    cache.set(101, 0, clock.now + 100)  # the second insert into a full map (16 // 8): a sweep
    assert len(cache) == 9  # 1..7, 100, 101


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
