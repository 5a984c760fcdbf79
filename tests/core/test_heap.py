"""gateway/heap.py: a started worker's heap frozen out of full collections, its cycles collected first."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cycle collector frees it


@pytest.fixture
def thawed() -> Iterator[None]:
    """Only the test's own passes run (an automatic one could free the garbage for it), and the
    test process's heap is never left frozen."""
    assert gc.get_freeze_count() == 0
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def cyclic_garbage() -> weakref.ref[Node]:
    return weakref.ref(Node())


def test_settle_collects_the_cycles_left_behind_then_freezes_the_rest(thawed: None) -> None:
    garbage = cyclic_garbage()
    kept = Node()
    heap.settle()
    assert garbage() is None  # collected, not frozen where no pass would ever reach it
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(kept) and not any(o is kept for o in gc.get_objects())


def test_resettle_after_a_reload_collects_what_the_reload_let_go(thawed: None) -> None:
    heap.settle()
    old_surface = cyclic_garbage()
    heap.resettle()
    assert old_surface() is None
    assert gc.get_freeze_count() > 0


def test_resettle_leaves_an_unsettled_process_alone(thawed: None) -> None:
    heap.resettle()
    assert gc.get_freeze_count() == 0
