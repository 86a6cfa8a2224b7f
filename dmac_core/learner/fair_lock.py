"""A first-come, first-served lock for the shared local model.

``threading.Lock`` does not promise any order: with several browser sessions waiting for
the one local model, a session could be overtaken again and again. ``FairLock`` serves
waiters strictly in arrival order and can say how many are queued (for the UI).
"""

from __future__ import annotations

import itertools
import threading
import time
from types import TracebackType


class FairLock:
    """A FIFO mutex usable as a context manager (``with lock: ...``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._tickets = itertools.count()
        self._serving = 0
        self._issued = 0
        self.released_at = 0.0  # time.monotonic() of the last release (0: never held)

    def acquire(self) -> bool:
        with self._cond:
            ticket = next(self._tickets)
            self._issued = ticket + 1
            while ticket != self._serving:
                self._cond.wait()
        return True

    def release(self) -> None:
        with self._cond:
            self.released_at = time.monotonic()
            self._serving += 1
            self._cond.notify_all()

    def waiting(self) -> int:
        """How many callers hold or wait for the lock right now."""
        with self._cond:
            return self._issued - self._serving

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
