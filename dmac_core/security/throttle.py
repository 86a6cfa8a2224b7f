"""Sign-in throttling: per-name and per-client failure counts, lockouts an admin can lift, and
a bound on parallel password checks.

A name (known or not, so a lockout tells nothing about which names exist) that fails
``max_name_failures`` times within the window is locked for ``lockout`` seconds, or until an
admin unlocks it; a client address that fails ``max_client_failures`` times is refused the
same way. The state lives in one small JSON file under the data directory, written
atomically under a file lock, so the web server and the CLI (``unlock``) share it and a
restart keeps it. At most ``max_parallel`` password checks run at once (each is a 600,000-round
key derivation); more attempts at the same moment are told to try again instead of queueing,
so a burst of guesses cannot saturate the CPU.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..fsio import atomic_write_json, exclusive_lock

MAX_TRACKED = 10_000  # entries kept at most (an attacker trying random names cannot grow the file forever)


@dataclass(frozen=True)
class ThrottlePolicy:
    max_name_failures: int = 5
    max_client_failures: int = 20
    window_s: float = 15 * 60
    lockout_s: float = 15 * 60
    max_parallel: int = 2


@dataclass(frozen=True)
class Lockout:
    """A locked name or client address, for the admin page and ``unlock``."""

    kind: str  # "name" | "client"
    key: str
    failures: int
    locked_until: float


class SignInThrottle:
    """Counts failed sign-ins and refuses names and clients that failed too often."""

    def __init__(self, state_path: Path, policy: ThrottlePolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_path = Path(state_path)
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        self._slots = threading.BoundedSemaphore(self.policy.max_parallel)
        self._lock = threading.Lock()  # flock is per open file; threads need their own lock too

    # -- state file ---------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            data = {}  # a damaged file forgets failures rather than lock everyone out
        return {kind: dict(data.get(kind) or {}) for kind in ("name", "client")}

    @contextmanager
    def _state(self) -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, exclusive_lock(self.state_path.with_name(self.state_path.name + ".lock")):
            state = self._load()
            yield state
            self._prune(state)
            atomic_write_json(self.state_path, state, indent=None)

    def _prune(self, state: dict[str, dict[str, dict[str, Any]]]) -> None:
        now = self.clock()
        for kind, entries in state.items():
            for key in [k for k, e in entries.items() if self._stale(e, now)]:
                del entries[key]
            if len(entries) > MAX_TRACKED:
                newest = sorted(entries, key=lambda k: max(entries[k].get("failures") or [0]), reverse=True)
                state[kind] = {k: entries[k] for k in newest[:MAX_TRACKED]}

    def _stale(self, entry: dict[str, Any], now: float) -> bool:
        recent = [t for t in entry.get("failures", []) if t > now - self.policy.window_s]
        entry["failures"] = recent
        return not recent and float(entry.get("locked_until") or 0) <= now

    # -- checks ---------------------------------------------------------------------------
    def refusal(self, name: str, client: str) -> str | None:
        """Why a sign-in as ``name`` from ``client`` is refused before any password check, or None."""
        now = self.clock()
        state = self._load()
        for kind, key, who in (("name", name, "This user name"), ("client", client, "Your address")):
            until = float((state[kind].get(key) or {}).get("locked_until") or 0)
            if until > now:
                minutes = max(1, round((until - now) / 60))
                return (f"{who} is locked after too many failed sign-ins; try again in about {minutes} min "
                        "or ask an admin to unlock it.")
        return None

    def record_failure(self, name: str, client: str) -> list[Lockout]:
        """Count a failed sign-in; returns the lockouts it just started (for the audit log)."""
        now = self.clock()
        started = []
        with self._state() as state:
            for kind, key, limit in (("name", name, self.policy.max_name_failures),
                                     ("client", client, self.policy.max_client_failures)):
                entry = state[kind].setdefault(key, {"failures": []})
                self._stale(entry, now)
                entry["failures"].append(now)
                if len(entry["failures"]) >= limit and float(entry.get("locked_until") or 0) <= now:
                    entry["locked_until"] = now + self.policy.lockout_s
                    started.append(Lockout(kind, key, len(entry["failures"]), entry["locked_until"]))
        return started

    def record_success(self, name: str) -> None:
        """A correct password clears the name's failures (the client's stay counted)."""
        with self._state() as state:
            state["name"].pop(name, None)

    def lockouts(self) -> list[Lockout]:
        """Names and clients locked now."""
        now = self.clock()
        state = self._load()
        return [Lockout(kind, key, len(entry.get("failures") or []), float(entry["locked_until"]))
                for kind, entries in state.items() for key, entry in entries.items()
                if float(entry.get("locked_until") or 0) > now]

    def unlock(self, key: str) -> bool:
        """Lift the lockout (and forget the failures) of a name or client address; True if one was there."""
        with self._state() as state:
            found = [kind for kind in state if key in state[kind]]
            for kind in found:
                del state[kind][key]
        return bool(found)

    @contextmanager
    def slot(self, wait_s: float = 2.0) -> Iterator[bool]:
        """A turn for one password check: True when taken within ``wait_s``, False when the
        workbench is already checking ``max_parallel`` passwords (the caller says "try again")."""
        taken = self._slots.acquire(timeout=wait_s)
        try:
            yield taken
        finally:
            if taken:
                self._slots.release()
