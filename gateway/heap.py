"""A started worker's heap, kept out of the cycle collector's full passes.

CPython's cycle collector visits every tracked object of its oldest generation on a full pass,
and makes one whenever the objects promoted there since the last pass reach a quarter of those
it already holds. A started worker holds about 47,000 tracked objects (modules, classes, the
compiled surface, the config), none of them ever garbage while it runs, and a full pass over
them is a pause of 16 to 26 ms on the 2-core machine that every request in flight waits out
(bench/gcpause.py measures it on `scopegate serve`).

`settle()` collects what start-up left behind, then moves everything that survives to the
permanent generation (gc.freeze), so that later passes visit only what was made since: the
connections, the caches. Frozen objects are still freed by reference counting; only a cycle
among them would never be collected, which is why every freeze follows a full collection, and why
a surface reload, which lets go of the old surface, settles again (`resettle`).
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then freeze what is left: call once the worker has started."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def resettle() -> None:
    """After a reload: settle again, if this process settled at all (a test's does not)."""
    if gc.get_freeze_count():
        settle()
