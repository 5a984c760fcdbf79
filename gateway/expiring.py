"""A bounded map whose entries end at their own deadline: the caches a request consults.

The request path asks a few such maps on every request: has this address failed too often, was
this token hash revoked, is it cached. cachetools' TTL caches answer in about a dozen Python
calls, and for a key they do not hold (the usual answer: most addresses never fail, most hashes
are never revoked) raise and catch a KeyError. Here a lookup is one dict access and one
comparison with the clock.

Values are never None (None is the answer for "no live entry"). An entry is live while
`clock() < deadline`; a dead one is dropped when it is next looked up, and an entry already dead
when set is not kept. The map is ordered by use, least recently set or found live first: each
insert first drops up to two dead entries from that end, so a map whose keys churn (the negative
cache, a token cache with a short TTL) stays near its live size without a sweep, and a full map
then drops its least recently used entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Expiring(Generic[K, V]):
    __slots__ = ("_data", "clock", "maxsize")

    def __init__(self, maxsize: int, clock: Callable[[], float]) -> None:
        if maxsize < 1:
            raise ValueError("an expiring map holds at least one entry")
        self.maxsize = maxsize
        self.clock = clock
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()  # least recently used first

    def get(self, key: K, now: float | None = None) -> V | None:
        """The live value for `key` (at `now`, or the clock's time), else None."""
        data = self._data
        item = data.get(key)
        if item is None:
            return None
        if (self.clock() if now is None else now) < item[1]:
            data.move_to_end(key)
            return item[0]
        del data[key]
        return None

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def set(self, key: K, value: V, deadline: float) -> None:
        data, now = self._data, self.clock()
        if not now < deadline:
            data.pop(key, None)
            return
        if key in data:
            data.move_to_end(key)
        else:
            self._trim(now)
            if len(data) >= self.maxsize:
                data.popitem(last=False)
        data[key] = (value, deadline)

    def pop(self, key: K) -> V | None:
        """Remove `key`; its value, live or not, else None."""
        item = self._data.pop(key, None)
        return None if item is None else item[0]

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        """Entries held, dead ones not yet dropped included."""
        return len(self._data)

    def _trim(self, now: float) -> None:
        """Drop up to two dead entries from the least recently used end."""
        data = self._data
        for _ in range(2):
            if not data:
                return
            key = next(iter(data))
            if now < data[key][1]:
                return
            del data[key]
