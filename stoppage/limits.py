"""Fixed-window rate limits, in memory only.

Client addresses are used as dictionary keys for the current window and nothing else: they are
never written to disk, logged or exported, and the whole table is dropped when the window turns.
Memory is bounded: past `max_keys` distinct keys in one window, new keys share one counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

_OVERFLOW = object()


class WindowLimit:
    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._epoch = -1
        self._counts: dict[Hashable, int] = {}

    def _roll(self) -> None:
        epoch = int(self.clock() // self.window)
        if epoch != self._epoch:
            self._epoch = epoch
            self._counts = {}

    def _key(self, key: Hashable) -> Hashable:
        if key in self._counts or len(self._counts) < self.max_keys:
            return key
        return _OVERFLOW

    def allowed(self, key: Hashable = None) -> bool:
        self._roll()
        return self._counts.get(self._key(key), 0) < self.limit

    def hit(self, key: Hashable = None) -> None:
        self._roll()
        k = self._key(key)
        self._counts[k] = self._counts.get(k, 0) + 1

    def retry_after(self) -> int:
        """Seconds until the current window ends."""
        now = self.clock()
        return max(1, int((self._epoch + 1) * self.window - now) + 1)

    def __len__(self) -> int:
        self._roll()
        return len(self._counts)
