"""``python -m dmac_core train``: train the local learner from the command line.

Shows a progress bar fed by the run's events and prints the run's summary. Also runnable as
``python -m dmac_core.cli.training`` on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import Config
from ..training.dataset import NotEnoughData
from ..training.job import JobAlreadyRunning, LearningDisabled, NothingToResume
from ..training.scheduler import TrainingScheduler
from ..training.transfer import StartError
from .common import authorize, run_subcommands


def register(subparsers: Any) -> None:
    """Add the ``train`` sub-command to an argparse sub-parser group."""
    parser = subparsers.add_parser("train", help="train the local learner on the rated answers")
    parser.add_argument("--resume", action="store_true", help="continue the latest cancelled or interrupted run")
    parser.add_argument("--method", choices=["sft", "dpo", "kto", "auto"], default=None, help="override models.deepseek.method")
    parser.add_argument("--epochs", type=int, default=None, help="override models.deepseek.epochs")
    parser.add_argument(
        "--from", dest="start_from", default=None, metavar="START",
        help="where the run starts (transfer learning): base (a fresh adapter, default), served, a version "
             "id such as v0003 (continue it), or the path of another model directory; "
             "overrides models.deepseek.start_from",
    )
    parser.add_argument("--if-due", action="store_true",
                        help="train only if models.deepseek.schedule says a run is due (for cron); exit 0 otherwise")
    parser.set_defaults(handler=train_command)


def train_command(args: argparse.Namespace, config: Config) -> int:
    """Run one training job in the foreground; return the process exit code."""
    from tqdm import tqdm

    # here, not at the top, for start-up time: `--help` answers without loading torch
    from ..system import LearningSystem

    # The workbench's own services: the same gate (through the served runtime), teacher and
    # warm-up as "Train now" on the Training page.
    security = authorize(args, config, "train")
    system = LearningSystem(config)
    store, jobs = system.store, system.jobs
    trigger = "cli"
    if getattr(args, "if_due", False):
        scheduler = TrainingScheduler(jobs, store, config)
        reason = scheduler.due()
        if reason is None:
            print(f"Not due: {scheduler.last_reason}")
            return 0
        print(f"Due: {reason}")
        trigger = "schedule"
    try:
        info = jobs.start(trigger=trigger, method=args.method, epochs=args.epochs, resume=args.resume,
                          start_from=getattr(args, "start_from", None))
    except (NotEnoughData, JobAlreadyRunning, LearningDisabled, NothingToResume, StartError) as exc:
        print(f"Not training: {exc}", file=sys.stderr)
        return 2
    security.audit.record(args.acting_user, "train", via="cli", run=info.run_id, trigger=trigger)
    print(f"Run {info.run_id} ({info.method}) in {info.run_dir}" + (f", resumed from {info.resumed_from}" if info.resumed_from else ""))
    bar = tqdm(total=0, unit="step", dynamic_ncols=True)
    seen = 0
    try:
        while True:
            snap = jobs.wait(timeout=0.5)
            if snap.total_steps and bar.total != snap.total_steps:
                bar.total = snap.total_steps
                bar.refresh()
            if snap.step > seen:
                bar.update(snap.step - seen)
                seen = snap.step
                bar.set_postfix(loss=snap.train_loss, eval_loss=snap.eval_loss, refresh=False)
            if not jobs.is_running():
                break
    except KeyboardInterrupt:
        jobs.cancel()
        print("\nCancelling after the current step (Ctrl-C again to abort without a checkpoint)…", file=sys.stderr)
        jobs.wait()
    finally:
        bar.close()
    summary = jobs.run_summary(info.run_id)
    print(json.dumps({k: summary.get(k) for k in ("run_id", "state", "method", "metrics", "version", "promoted", "gate", "message")}, indent=2, default=str))
    return 0 if summary.get("state") in ("completed", "cancelled") else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m dmac_core.cli.training [--config FILE] <command> ...``."""

    return run_subcommands("python -m dmac_core.cli.training", [register], argv)


if __name__ == "__main__":
    sys.exit(main())
