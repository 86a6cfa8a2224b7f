"""Per-key request limits of the gateway: a sliding one-minute window per API key.

Kept in memory: a limit protects the server from one client's burst, so it need not survive a
restart (usage caps, which do, are counted from the logs by the router). Refused requests are
not counted, so a client that backs off as told gets through.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Callable

WINDOW_S = 60.0


class KeyRateLimiter:
    """Admits at most ``limit`` requests per key in any 60 seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = defaultdict(deque)

    def admit(self, key_id: str, limit: int | None) -> float | None:
        """Count one request of ``key_id``; None when admitted, else seconds until it would be."""
        if limit is None:
            return None
        now = self.clock()
        with self._lock:
            window = self._seen[key_id]
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= limit:
                return max(0.001, window[0] + WINDOW_S - now)
            window.append(now)
            return None
