"""Periodic training: start a run when enough new feedback arrived and/or enough time passed.

Config (``models.deepseek.schedule``): ``enabled``, ``min_new_feedback``, ``every_hours``.
A check starts a run when every condition that is set holds:

- at least ``min_new_feedback`` feedback records (default 1) have a timestamp after the
  start of the last run (any run, whoever started it: a manual run resets the count too);
- at least ``every_hours`` hours passed since the start of the last run (unset: no spacing).

"The last run" is read from ``<data_dir>/runs/*/run.json`` each time, so several processes
(several app workers, a cron'd CLI) agree on it; only one of them trains at a time because
:meth:`TrainingJobManager.start` holds the cross-process ``flock``, and the others get
:class:`JobAlreadyRunning` and do nothing. Refusals (too little data, learning disabled,
another run in progress) are not errors for a scheduler: the check returns None and says why
in :attr:`TrainingScheduler.last_reason`.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..config import Config
from ..logs.records import parse_ts, utc_now
from ..logs.store import LearningStore
from .dataset import NotEnoughData
from .job import JobAlreadyRunning, LearningDisabled, TrainingJobManager

log = logging.getLogger(__name__)


class TrainingScheduler:
    """Decides when to start a scheduled training run; :meth:`check` is one decision."""

    def __init__(
        self,
        jobs: TrainingJobManager,
        store: LearningStore,
        config: Config,
        clock: Callable[[], datetime] = utc_now,
        on_started: Callable[[str], None] | None = None,
    ) -> None:
        """``on_started(reason)`` is called after each run it starts (the workbench audits it)."""
        self.jobs = jobs
        self.on_started = on_started
        self.store = store
        self.config = config
        self.clock = clock
        self.last_reason: str = "not checked yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def last_run_started(self) -> datetime | None:
        """When the newest run (of any trigger and state) was created; None if there is none."""
        newest: datetime | None = None
        for record in self.jobs.runs():
            try:
                created = parse_ts(str(record.get("created")))
            except (TypeError, ValueError):
                continue
            newest = created if newest is None or created > newest else newest
        return newest

    def new_feedback_since(self, since: datetime | None) -> int:
        """Feedback records (every record, edits included) newer than ``since``."""
        count = 0
        for row in self.store.records("feedback"):
            if since is None:
                count += 1
                continue
            try:
                if parse_ts(str(row.get("ts"))) > since:
                    count += 1
            except ValueError:
                continue
        return count

    def due(self) -> str | None:
        """Why a run is due now, or None (with the reason in :attr:`last_reason`)."""
        schedule = self.config.learner.schedule
        if not schedule.enabled:
            self.last_reason = "periodic training is off (models.deepseek.schedule.enabled)"
            return None
        now = self.clock().astimezone(timezone.utc)
        last = self.last_run_started()
        reasons = []
        if schedule.every_hours is not None and last is not None:
            next_at = last + timedelta(hours=schedule.every_hours)
            if now < next_at:
                self.last_reason = f"next run not before {next_at.isoformat(timespec='seconds')}"
                return None
            reasons.append(f"{(now - last).total_seconds() / 3600:.1f} h since the last run")
        need = schedule.min_new_feedback or 1
        new = self.new_feedback_since(last)
        if new < need:
            self.last_reason = f"{new} new feedback record{'s' if new != 1 else ''} since the last run; waiting for {need}"
            return None
        reasons.append(f"{new} new feedback records" + (" since the last run" if last else ", no run yet"))
        return "; ".join(reasons)

    def check(self) -> str | None:
        """Start a run if one is due; return the reason it started, or None."""
        if self.jobs.is_running():
            self.last_reason = "a run is in progress"
            return None
        reason = self.due()
        if reason is None:
            return None
        try:
            self.jobs.start(trigger="schedule", user="scheduler")
        except (JobAlreadyRunning, NotEnoughData, LearningDisabled) as exc:
            self.last_reason = f"due ({reason}) but not started: {exc}"
            return None
        self.last_reason = f"started: {reason}"
        if self.on_started is not None:
            self.on_started(reason)
        log.info("scheduled training run started: %s", reason)
        return reason

    def start_background(self, interval_s: float = 300.0) -> threading.Thread:
        """Check every ``interval_s`` seconds in a daemon thread (idempotent; returns the thread)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check()
                except Exception as exc:  # a bad check must not kill the loop; the next one retries
                    self.last_reason = f"check failed: {type(exc).__name__}: {exc}"
                    log.exception("scheduled training check failed")

        self._thread = threading.Thread(target=loop, name="training-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop the background loop (a run already started keeps going)."""
        self._stop.set()

    def describe(self) -> dict[str, Any]:
        """For the Training page: the schedule, the last decision and the last run's start."""
        last = self.last_run_started()
        return {
            "schedule": self.config.learner.schedule.model_dump(),
            "last_reason": self.last_reason,
            "last_run_started": last.isoformat(timespec="seconds") if last else None,
            "background": bool(self._thread and self._thread.is_alive()),
        }
