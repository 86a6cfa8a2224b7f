"""Periodic training: new-feedback and every-H-hours triggers, one run at a time, controlled clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Callable

from dmac_core.config import Config
from dmac_core.logs.records import format_ts
from dmac_core.training.job import TrainingJobManager
from dmac_core.training.scheduler import TrainingScheduler

from .test_training import FACTS, services


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def rate(store, n: int, start: int = 0, ts: datetime | None = None) -> None:
    for i in range(start, start + n):
        prompt, answer = FACTS[i % len(FACTS)]
        store.append_feedback(prompt=f"{prompt} ({i})", response=answer, rating=5,
                              ts=format_ts(ts) if ts else None)


def fake_run(jobs: TrainingJobManager, created: datetime) -> None:
    """A finished run record as another process would leave it (no training needed)."""
    run_dir = jobs.runs_dir / "20260101-000000-abcd"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "state": "completed",
                                                  "created": format_ts(created)}))


def test_off_by_default_and_every_hours_spacing(make_config: Callable[..., Config]) -> None:
    config = make_config()
    store, _, jobs = services(config)
    assert config.learner.schedule.enabled is False
    assert TrainingScheduler(jobs, store, config).check() is None

    config = make_config(schedule={"enabled": True, "every_hours": 2})
    store, _, jobs = services(config)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    fake_run(jobs, t0)
    clock = Clock(t0 + timedelta(hours=3))
    scheduler = TrainingScheduler(jobs, store, config, clock)
    assert scheduler.due() is None and "0 new feedback" in scheduler.last_reason  # nothing new to learn from
    rate(store, 1, ts=t0 + timedelta(minutes=5))
    rate(store, 1, ts=t0 - timedelta(minutes=5))  # older than the last run: not new
    clock.now = t0 + timedelta(hours=1, minutes=59)
    assert scheduler.due() is None and "not before" in scheduler.last_reason
    clock.now = t0 + timedelta(hours=2)
    assert scheduler.due() == "2.0 h since the last run; 1 new feedback records since the last run"


def test_new_feedback_starts_one_run_across_managers(make_config: Callable[..., Config]) -> None:
    config = make_config(epochs=100, validation_fraction=0.0, schedule={"enabled": True, "min_new_feedback": 5})
    store, registry, jobs = services(config)
    clock = Clock(datetime.now(timezone.utc))
    scheduler = TrainingScheduler(jobs, store, config, clock)
    rate(store, 4)
    assert scheduler.check() is None and "4 new feedback records since the last run; waiting for 5" in scheduler.last_reason
    rate(store, 1, start=4)
    assert scheduler.check() == "5 new feedback records, no run yet"
    # while it runs, this process starts nothing; the run reset the count of new feedback
    assert scheduler.check() is None and scheduler.last_reason == "a run is in progress"
    other = TrainingScheduler(TrainingJobManager(config, store, registry), store, config, clock)
    assert other.due() is None and "0 new feedback" in other.last_reason
    # enough new feedback arrives during the run: another process's scheduler is refused by the lock
    rate(store, 5, start=10)
    assert other.check() is None and "not started" in other.last_reason and "Another process" in other.last_reason
    assert jobs.cancel()
    assert jobs.wait(timeout=300).state == "cancelled"
    assert [r["trigger"] for r in jobs.runs()] == ["schedule"]
    assert scheduler.due() == "5 new feedback records since the last run"


def test_background_thread_checks_periodically(make_config: Callable[..., Config]) -> None:
    config = make_config(schedule={"enabled": True, "min_new_feedback": 100})
    store, _, jobs = services(config)
    scheduler = TrainingScheduler(jobs, store, config)
    thread = scheduler.start_background(interval_s=0.01)
    assert scheduler.start_background(interval_s=0.01) is thread  # idempotent
    deadline = datetime.now() + timedelta(seconds=10)
    while scheduler.last_reason == "not checked yet" and datetime.now() < deadline:
        thread.join(0.01)
    scheduler.stop()
    thread.join(5)
    assert not thread.is_alive() and "waiting for 100" in scheduler.last_reason
    assert scheduler.describe()["schedule"]["min_new_feedback"] == 100


def test_cli_if_due_for_cron(make_config: Callable[..., Config], tmp_path, capsys) -> None:
    from dmac_core.cli import training as cli

    config = make_config(schedule={"enabled": True, "min_new_feedback": 3})
    store, _, _ = services(config)
    rate(store, 2)
    assert cli.main(["--config", str(tmp_path / "config.yaml"), "train", "--if-due"]) == 0
    assert "Not due: 2 new feedback records since the last run; waiting for 3" in capsys.readouterr().out
    assert not list((config.data_path / "runs").glob("*/run.json"))
