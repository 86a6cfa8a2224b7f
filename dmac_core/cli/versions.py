"""``versions``, ``promote`` and ``rollback``: the Training page's version controls on the
command line (for a headless server, or a script after an offline evaluation).

A running workbench picks the change up on its next answer (the served version is read from
``models/served.json`` for every request), without a restart.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pandas as pd

from ..config import Config
from ..learner.registry import ModelRegistry, RegistryError
from ..views.review import gate_answer_changes, gate_checks_table, gate_rated_answers, versions_table
from .common import authorize


def register(subparsers: Any) -> None:
    """Add the ``versions``, ``promote`` and ``rollback`` sub-commands."""
    parser = subparsers.add_parser(
        "versions", help="list the local learner's versions, which one is served and the gate's verdicts",
        description="Without VERSION: every version, newest first, with the gate's verdict and numbers. "
                    "With VERSION: the gate's evidence for it — each check before / after, the general "
                    "questions whose answer was lost, and the rated answers asked again.")
    parser.add_argument("version", nargs="?", help="show the gate's evidence for this version (e.g. v0003)")
    parser.set_defaults(handler=versions_command)
    parser = subparsers.add_parser("promote", help="serve a version (v0003, or base) from now on")
    parser.add_argument("version", help="a version id from `versions`, or base")
    parser.add_argument("--reason", default="", help="why (kept in the serving history)")
    parser.set_defaults(handler=promote_command)
    parser = subparsers.add_parser("rollback", help="serve the version that was served before the current one")
    parser.set_defaults(handler=rollback_command)


def _system(config: Config) -> Any:
    """The workbench's own services (the same wiring and checks as the pages)."""
    from ..system import LearningSystem  # lazily, for start-up time: `--help` builds no services

    return LearningSystem(config)


def versions_command(args: argparse.Namespace, config: Config) -> int:
    """Print the versions table, newest first (the served one marked), or one version's gate evidence."""
    authorize(args, config, "view")
    registry = _system(config).registry
    if getattr(args, "version", None):
        return _print_evidence(registry, args.version)
    table = versions_table(registry)
    table["served"] = table["served"].map({True: "*", False: ""})
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        print(table.fillna("-").to_string(index=False))
    return 0


def _print_evidence(registry: ModelRegistry, version_id: str) -> int:
    try:
        gate = registry.get(version_id).metadata.get("gate")
    except RegistryError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not gate:
        print(f"{version_id} has no gate evidence (the base model, or a version registered without a gate).")
        return 0
    verdict = "passed: served" if gate.get("passed") else "not passed"
    print(f"{version_id} against {gate.get('champion')}: {verdict}")
    print(f"Answers from {gate.get('runtime') or '-'} ({gate.get('decoding') or '-'}); losses from transformers.\n")
    with pd.option_context("display.max_colwidth", 120, "display.width", 250):
        print(gate_checks_table(gate).fillna("-").to_string(index=False))
        changes = gate_answer_changes(gate)
        if not changes.empty:
            print("\nGeneral questions whose answer changed:")
            print(changes.to_string(index=False))
        rated = gate_rated_answers(gate)
        if not rated.empty:
            print("\nRated answers, asked again:")
            print(rated[["prompt", "before", "after", "match before", "match after"]].to_string(index=False))
    return 0


def promote_command(args: argparse.Namespace, config: Config) -> int:
    """Serve ``args.version``; exit 2 with the registry's message when it does not exist."""
    system = _system(config)
    try:
        system.promote(args.version, user=args.acting_user, via="cli",
                       reason=args.reason or f"promoted from the command line by {args.acting_user}")
    except RegistryError as exc:
        print(f"Not promoted: {exc}", file=sys.stderr)
        return 2
    print(f"{system.served_version()} is now served.")
    return 0


def rollback_command(args: argparse.Namespace, config: Config) -> int:
    """Serve the previously served version; exit 2 when there is nothing to roll back to."""
    try:
        served = _system(config).roll_back(user=args.acting_user, via="cli")
    except RegistryError as exc:
        print(f"Not rolled back: {exc}", file=sys.stderr)
        return 2
    print(f"Rolled back: {served} is now served.")
    return 0
