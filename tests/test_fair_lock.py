"""FairLock serves waiters in arrival order (sessions queue fairly for the local model)."""

from __future__ import annotations

import threading
import time

from dmac_core.learner.fair_lock import FairLock


def test_waiters_are_served_in_arrival_order() -> None:
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(6):
        thread = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        thread.start()
        threads.append(thread)
        while lock.waiting() < i + 2:  # make sure thread i queued before starting the next
            time.sleep(0.001)
    assert lock.waiting() == 7
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4, 5]
    assert lock.waiting() == 0


def test_context_manager_releases_on_error() -> None:
    lock = FairLock()
    try:
        with lock:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert lock.waiting() == 0
    with lock:
        assert lock.waiting() == 1
