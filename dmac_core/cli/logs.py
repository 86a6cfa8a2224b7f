"""Commands for the learning logs: ``doctor``, ``import``, ``export``, ``delete-user``.

Wired into ``python -m dmac_core`` by :func:`register`; also runnable on its own as
``python -m dmac_core.cli.logs <command>`` (with ``--config FILE``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..logs.maintenance import doctor, export, import_conversations
from ..logs.store import LearningStore
from ..privacy.deletion import DeletionRefused
from .common import authorize, run_subcommands


def _store(config: Config) -> LearningStore:
    """The workbench's own learning logs (the same wiring as the pages)."""
    from ..system import LearningSystem  # lazily, for start-up time: `--help` builds no services

    return LearningSystem(config).store


def _bar(description: str, unit: str = "it") -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm progress callback (on stderr) and a function that closes the bar."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit=unit, unit_scale=True, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    """Check every log file; with ``--fix`` quarantine unreadable lines. Exit 1 if any remain."""
    authorize(args, config, "configure" if args.fix else "view")
    update, close = _bar("checking logs", "B")
    try:
        checks = doctor(_store(config), fix=args.fix, progress=update)
    finally:
        close()
    if not checks:
        print(f"No log files under {config.data_path}.")
        return 0
    problems = 0
    for check in checks:
        state = "ok" if check.healthy else f"{check.unreadable} unreadable line(s)"
        if check.partial_tail:
            state += ", unterminated last line"
        if check.quarantined:
            state += f" -> {check.quarantined} moved to {check.path}.quarantine.jsonl"
        elif not check.healthy:
            problems += 1
        print(f"{check.path}: {check.records} records, {state}")
    if problems and not args.fix:
        print("Run again with --fix to move the unreadable lines to quarantine files (readable records are kept).")
    return 1 if problems and not args.fix else 0


def cmd_import(args: argparse.Namespace, config: Config) -> int:
    """Import past conversations (JSONL or CSV) into the logs."""
    authorize(args, config, "import")
    if not Path(args.file).is_file():
        print(f"No such file: {args.file}", file=sys.stderr)
        return 2
    update, close = _bar(f"importing {Path(args.file).name}", "rows")
    try:
        report = import_conversations(_store(config), args.file, progress=update, model=args.model)
    finally:
        close()
    print(f"Imported {report.interactions} interactions and {report.feedback} ratings from {args.file}.")
    for reason in report.refused[:20]:
        print(f"  refused {reason}")
    if len(report.refused) > 20:
        print(f"  ... and {len(report.refused) - 20} more refused rows")
    return 0 if not report.refused else 1


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    """Export the logs as Parquet tables or as TRL-ready JSONL datasets."""
    authorize(args, config, "export")
    out = Path(args.out) if args.out else config.data_path / "exports"
    learner = config.learner
    update, close = _bar(f"exporting {args.format}")
    try:
        written = export(_store(config), out, args.format, progress=update,
                         min_rating=learner.min_rating_for_sft, max_negative=learner.max_rating_for_negative)
    finally:
        close()
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def cmd_delete_user(args: argparse.Namespace, config: Config) -> int:
    """Remove one user's data from everywhere under the data directory (a privacy request)."""
    from ..system import LearningSystem  # lazily, for start-up time: `--help` builds no services

    system = LearningSystem(config)
    system.security.require(args.acting_user, "delete_user_data")  # before asking anything
    if not args.yes:
        answer = input(f"Delete every record, rating and derived copy of user {args.name!r} from "
                       f"{config.data_path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 1
    update, close = _bar("deleting user data", "steps")
    try:
        report = system.delete_user_data(args.acting_user, args.name, via="cli", progress=update)
    except DeletionRefused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        close()
    if report.resumed:
        print("An interrupted deletion of this user was found and finished.")
    print(f"Deleted {report.total} items of user {args.name!r}:")
    width = max(len(place) for place in report.removed)
    for place, count in report.removed.items():
        print(f"  {place:<{width}}  {count}")
    if report.versions:
        print(f"Model versions trained on their data (retire them; their weights cannot be untrained): "
              f"{', '.join(report.versions)} (runs {', '.join(report.runs)})")
    else:
        print("No model version was trained on their data.")
    return 0


def register(subparsers: Any) -> None:
    """Add ``doctor``, ``import``, ``export`` and ``delete-user`` to an argparse sub-parser set.

    Each sets ``handler`` (called as ``handler(args, config)``, returning the exit code).
    """
    p = subparsers.add_parser(
        "doctor", help="check the learning logs for unreadable lines (and fix them)",
        description="Read every log file and count readable records and unreadable lines (torn writes, "
        "garbage, schema-invalid lines). With --fix, unreadable lines move to <file>.quarantine.jsonl next "
        "to the log and the log is rewritten atomically while writers wait; no readable record is lost.")
    p.add_argument("--fix", action="store_true", help="move unreadable lines to quarantine files")
    p.set_defaults(handler=cmd_doctor)

    p = subparsers.add_parser(
        "import", help="import past conversations from a JSONL or CSV file",
        description="Import past conversations. Columns (CSV header or JSON keys): prompt, response, and "
        "optionally model, ts (ISO-8601; old rows go to their own month files), rating (1..5), feedback, user. "
        "Rows with a rating also get a feedback record. Refused rows are listed; the rest are written.")
    p.add_argument("file", help="a .jsonl or .csv file")
    p.add_argument("--model", default="imported", help="model name for rows without one (default: imported)")
    p.set_defaults(handler=cmd_import)

    p = subparsers.add_parser(
        "export", help="export the logs as Parquet or as TRL-ready JSONL",
        description="parquet: interactions.parquet, feedback.parquet (all versions), evals.parquet. "
        "jsonl: sft.jsonl (prompt/completion), kto.jsonl (prompt/completion/label) and dpo.jsonl "
        "(prompt/chosen/rejected), conversational, as TRL's trainers read them.")
    p.add_argument("--format", required=True, choices=("parquet", "jsonl"), help="output format")
    p.add_argument("--out", help="output directory (default: <data_dir>/exports)")
    p.set_defaults(handler=cmd_export)

    p = subparsers.add_parser(
        "delete-user", help="delete one user's data everywhere under the data directory (privacy request)",
        description="Remove a user's interactions and feedback, feedback by others on them, and every copy of "
        "their text under the data directory: eval items, runs' datasets and gate items, teacher and replay "
        "caches, insights caches, exports, quarantine files, snapshots, and images only they sent. Files are "
        "replaced atomically while writers wait; an interrupted deletion is finished by running it again. "
        "Prints a count per place and the model versions trained on their data.")
    p.add_argument("name", help="the user name as logged")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=cmd_delete_user)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m dmac_core.cli.logs [--config FILE] <command> ...``."""

    return run_subcommands("python -m dmac_core.cli.logs", [register], argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
