"""``python -m dmac_core judge`` and ``leaderboard``: the LLM judge and the blind-vote board.

``judge`` asks the configured judge (``judge.model``) to score answers by ``judge.rubric``
through the router — the unrated ones (labels), the rated ones (to measure its agreement with
analysts) or the voted pairs — then prints each judge's agreement and whether its labels are
trained on. ``leaderboard`` prints the Bradley–Terry strengths from the blind votes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Config
from .common import authorize


def register(subparsers: Any) -> None:
    """Add the ``judge`` and ``leaderboard`` commands to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "judge", help="have the LLM judge score answers (judge.model, judge.rubric) and show its agreement",
        description="Score answers 1-5 by the rubric with the configured judge, through the router (caps "
        "counted, each call logged with purpose judge); each label is a judgments record. Then print the "
        "judge's agreement with analysts (weighted kappa, Spearman, pairwise accuracy, each with n).")
    p.add_argument("--what", choices=["unrated", "rated", "pairs"], default="unrated",
                   help="unrated: label answers no analyst rated; rated: score rated answers to measure agreement; "
                        "pairs: compare the two answers of voted pairs (default: unrated)")
    p.add_argument("--limit", type=int, default=None, help="answers to judge at most (default: judge.max_items)")
    p.add_argument("--agreement-only", action="store_true", help="judge nothing, print the agreement table")
    p.set_defaults(handler=judge_command)

    p = subparsers.add_parser("leaderboard", help="Bradley-Terry strengths from the blind side-by-side votes")
    p.add_argument("--pair", nargs=2, metavar=("A", "B"),
                   help="also print P(A beats B), e.g. deepseek@v0004 deepseek@v0003")
    p.set_defaults(handler=leaderboard_command)


def _system(config: Config) -> Any:
    from ..system import LearningSystem  # lazily, for start-up time: `--help` builds no services

    return LearningSystem(config)


def judge_command(args: argparse.Namespace, config: Config) -> int:
    """Handler of ``judge``; returns the process exit code."""
    import pandas as pd

    if args.agreement_only:
        authorize(args, config, "view")
        system = _system(config)
    else:
        authorize(args, config, "judge")
        system = _system(config)
        try:
            run = system.run_judge(args.acting_user, args.what, args.limit, via="cli")
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{len(run.judgments)} label(s) written, {run.unparsed} without a readable score or verdict.")
        if run.stopped:
            print(f"Stopped early: {run.stopped}", file=sys.stderr)
    table = system.judge_agreement()
    if table.empty:
        print("No judge labels yet.")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"A judge's labels are trained on when kappa >= {config.judge.agreement_bar} on at least "
              f"{config.judge.min_items} rated answers (column qualifies).")
    return 0 if args.agreement_only or not run.stopped else 1


def leaderboard_command(args: argparse.Namespace, config: Config) -> int:
    """Handler of ``leaderboard``; returns the process exit code."""
    authorize(args, config, "view")
    board = _system(config).vote_leaderboard()
    if board.table.empty:
        print("No votes yet.")
        return 0
    print(board.table.to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
    print(f"{board.n_votes} votes fitted; entries with fewer than {board.min_votes} votes are too few to act on.")
    if args.pair:
        try:
            h2h = board.head_to_head(*args.pair)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"P({h2h['a']} beats {h2h['b']}) = {h2h['p_a_beats_b']:.2f} "
              f"[95 % {h2h['low']:.2f}, {h2h['high']:.2f}]: {h2h['verdict']}")
    return 0
