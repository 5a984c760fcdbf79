"""Failed-authentication counting per client IP: a fixed one-minute window."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..expiring import Expiring


class FailedAuthLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        # One mutable cell per IP, counted in place, until 60 s after its first failure: a
        # fixed window, which further failures do not push back.
        self._counts: Expiring[str, list[int]] = Expiring(100_000, clock)

    def blocked(self, ip: str) -> bool:
        if self.per_minute <= 0:
            return False
        cell = self._counts.get(ip)
        return cell is not None and cell[0] >= self.per_minute

    def failed(self, ip: str) -> None:
        if self.per_minute > 0:
            # The count lives until the first failure ages out: a fixed one-minute window.
            cell = self._counts.get(ip)
            if cell is None:
                self._counts.set(ip, [1], self._clock() + 60)
            else:
                cell[0] += 1
