"""Slowing down whoever keeps getting refused: failures counted per client address and per sender.

Past ``limit`` refusals within ``window`` seconds, a key (``client:<ip>`` or ``sender:<address>``) is cooled
off for ``cooloff`` seconds: its new transactions get ``450 4.7.1`` before any check runs, so guessing numbers,
senders or keys stops there. The counts live in this process only; each instance of a cluster counts its own
clients, which is enough to make guessing slow. Memory is bounded: at most ``max_keys`` keys are tracked, the
least recently failed ones are forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

Clock = Callable[[], float]


class AbuseGuard:
    """Counts refusals per key and tells which keys are cooling off."""

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        cooloff: float,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._window = window
        self._cooloff = cooloff
        self._max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._blocked_until: dict[str, float] = {}

    def record_failure(self, keys: Iterable[str]) -> None:
        """Count one refusal against each key; start a cooling-off time for keys past the limit."""
        now = self._clock()
        for key in keys:
            times = self._failures.pop(key, None) or deque()
            times.append(now)
            while times and times[0] <= now - self._window:
                times.popleft()
            self._failures[key] = times
            if len(times) >= self._limit:
                self._blocked_until[key] = now + self._cooloff
                times.clear()
        while len(self._failures) > self._max_keys:
            oldest, _ = self._failures.popitem(last=False)
            self._blocked_until.pop(oldest, None)

    def blocked(self, key: str) -> bool:
        """Whether ``key`` is cooling off now."""
        until = self._blocked_until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._blocked_until[key]
            return False
        return True
