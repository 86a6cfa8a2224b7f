"""Calls in flight against a model's caps: checked and reserved in one step, across processes.

Caps are counted from the interaction log (:class:`~.usage.UsageCounter`), but a call is
logged only when it ends. Without a reservation every session that checks while others are
still waiting for their answers sees the same count, and 20 sessions at once all pass a cap of
10. So a capped call first *reserves* one request and an estimate of its tokens: the check
against the caps (logged usage plus every reservation) and the reservation happen under one
lock. The reservation is released once the call's record is written (the record then counts
instead), or when the call ends without one.

The lock is both a thread lock and an ``flock`` on ``<data_dir>/usage/reservations.lock``, and
the reservations live in ``reservations.json`` next to it, so processes sharing a data
directory (the Streamlit server and a CLI ``evaluate``) see each other's calls in flight. The
log is read after the lock is taken, and a record is written before its reservation is
released, so a call is counted at least once at every moment (briefly twice, never zero).
Processes are assumed to run on one machine: a reservation whose process is gone (killed
mid-call) is dropped by process id, and any older than :data:`STALE_AFTER_S` regardless.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import CapsConfig
from ..fsio import atomic_write_json, exclusive_lock
from .usage import Usage, UsageCounter, cap_exceeded

log = logging.getLogger(__name__)

# A call holds its reservation at most this long (the slowest call: an API timeout times its
# retries, or a long local answer, is minutes); older ones are a dead process's whose id was reused.
STALE_AFTER_S = 3600.0
# Tells this process's reservations from those a former process with the same id left behind
# (a container restarted under the same pid).
_PROCESS_TOKEN = uuid.uuid4().hex


@dataclass(frozen=True)
class Reservation:
    """One admitted call's hold on its model's caps until :meth:`ReservationBook.release`."""

    id: str
    model: str
    tokens: int


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False  # os.kill(0, ...) would ask about the whole process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


class ReservationBook:
    """The reservations of calls in flight, shared by every process using ``directory``."""

    def __init__(self, usage: UsageCounter, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.usage_counter = usage
        self.directory = Path(directory)
        self.clock = clock
        self._lock = threading.Lock()
        self._mine: set[str] = set()  # ids this process holds

    @property
    def path(self) -> Path:
        return self.directory / "reservations.json"

    # -- the file, read and written under the lock --------------------------------------
    def _load(self) -> list[dict[str, Any]]:
        try:
            rows = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError:
            log.warning("unreadable %s: starting with no reservations", self.path)
            return []
        now = self.clock()
        return [row for row in rows if isinstance(row, dict) and self._live(row, now)]

    def _live(self, row: dict[str, Any], now: float) -> bool:
        if now - float(row.get("ts", 0)) > STALE_AFTER_S:
            return False
        if row.get("owner") == _PROCESS_TOKEN:
            return row.get("id") in self._mine  # ours but not held: a release that failed to write
        pid = int(row.get("pid", 0))
        return pid != os.getpid() and _process_alive(pid)

    def _save(self, rows: list[dict[str, Any]]) -> None:
        # Not fsynced: after a crash the processes that held these reservations are gone too.
        atomic_write_json(self.path, rows, durable=False, indent=None)

    def _locked(self) -> Any:
        self.directory.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(self.directory / "reservations.lock")

    @staticmethod
    def _with_in_flight(usage: Usage, rows: list[dict[str, Any]], model: str) -> Usage:
        held = [row for row in rows if row.get("model") == model]
        usage.requests_in_flight = len(held)
        usage.tokens_in_flight = sum(int(row.get("tokens", 0)) for row in held)
        return usage

    # -- the API ------------------------------------------------------------------------
    def usage(self, model: str) -> Usage:
        """``model``'s logged usage plus its calls in flight (what the caps are checked against)."""
        with self._lock, self._locked():
            return self._with_in_flight(self.usage_counter.usage(model), self._load(), model)

    def reserve(self, model: str, caps: CapsConfig | None, tokens: int) -> Reservation | str:
        """Admit one call of ``model`` that may use up to ``tokens`` tokens and hold its place,
        or return why it is not admitted (the cap reached, with the numbers)."""
        with self._lock, self._locked():
            rows = self._load()
            refused = cap_exceeded(model, self._with_in_flight(self.usage_counter.usage(model), rows, model),
                                   caps, tokens)
            if refused:
                return refused
            reservation = Reservation(uuid.uuid4().hex, model, tokens)
            rows.append({"id": reservation.id, "model": model, "tokens": tokens, "ts": self.clock(),
                         "pid": os.getpid(), "owner": _PROCESS_TOKEN})
            self._mine.add(reservation.id)
            self._save(rows)
            return reservation

    def release(self, reservation: Reservation | None) -> None:
        """Drop ``reservation`` (once the call's record is written, or the call ended without
        one). Releasing twice, or None, does nothing. A file that cannot be written is logged,
        not raised: the answer is already there, and the entry is dropped on the next write."""
        if reservation is None:
            return
        with self._lock:
            if reservation.id not in self._mine:
                return
            self._mine.discard(reservation.id)
            try:
                with self._locked():
                    self._save(self._load())  # _load keeps only reservations still held
            except OSError as exc:
                log.warning("could not release a reservation of %s: %s", reservation.model, exc)
