"""Failed-login limits per identity and per client address (a sliding window, bounded memory).

Once a key has ``limit`` failures within ``window`` seconds, every attempt for it is answered 429 without
checking the password, until the oldest failure leaves the window: a burst of guesses costs the
guesser time and the service no bcrypt work. Counts are per process (each replica counts its own).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable

MAX_TRACKED_KEYS = 50_000


class FailureLimiter:
    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: it may now)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(key, now)
            if len(failures) < self.limit:
                return 0.0
            return max(0.0, failures[len(failures) - self.limit] + self.window - now)

    def record_failure(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            failures = self._failures.setdefault(key, deque())
            failures.append(now)
            self._failures.move_to_end(key)
            while len(failures) > self.limit:
                failures.popleft()
            while len(self._failures) > MAX_TRACKED_KEYS:
                self._failures.popitem(last=False)

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
