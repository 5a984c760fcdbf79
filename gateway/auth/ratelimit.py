"""Failed-authentication counting per client IP: a fixed one-minute window."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache


class FailedAuthLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._counts: TTLCache[str, int] = TTLCache(maxsize=100_000, ttl=60, timer=clock)

    def blocked(self, ip: str) -> bool:
        return self.per_minute > 0 and self._counts.get(ip, 0) >= self.per_minute

    def failed(self, ip: str) -> None:
        if self.per_minute > 0:
            # Re-inserting would reset the window; the count lives until the first failure ages out.
            if ip in self._counts:
                self._counts[ip] += 1
            else:
                self._counts[ip] = 1
