"""``versions``, ``promote`` and ``rollback``: the Training page's version controls on the
command line (for a headless server, or a script after an offline evaluation).

A running workbench picks the change up on its next answer (the served version is read from
``models/served.json`` for every request), without a restart.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Config
from ..review import versions_table
from .registry import ModelRegistry, RegistryError


def register(subparsers: Any) -> None:
    """Add the ``versions``, ``promote`` and ``rollback`` sub-commands."""
    parser = subparsers.add_parser("versions", help="list the local learner's versions and which one is served")
    parser.set_defaults(handler=versions_command)
    parser = subparsers.add_parser("promote", help="serve a version (v0003, or base) from now on")
    parser.add_argument("version", help="a version id from `versions`, or base")
    parser.add_argument("--reason", default="", help="why (kept in the serving history)")
    parser.set_defaults(handler=promote_command)
    parser = subparsers.add_parser("rollback", help="serve the version that was served before the current one")
    parser.set_defaults(handler=rollback_command)


def _registry(config: Config) -> ModelRegistry:
    return ModelRegistry(config.data_path / "models")


def versions_command(args: argparse.Namespace, config: Config) -> int:
    """Print the versions table, newest first; the served one is marked."""
    table = versions_table(_registry(config))
    table["served"] = table["served"].map({True: "*", False: ""})
    print(table.fillna("-").to_string(index=False))
    return 0


def promote_command(args: argparse.Namespace, config: Config) -> int:
    """Serve ``args.version``; exit 2 with the registry's message when it does not exist."""
    registry = _registry(config)
    try:
        version = registry.promote(args.version, reason=args.reason or "promoted from the command line")
    except RegistryError as exc:
        print(f"Not promoted: {exc}", file=sys.stderr)
        return 2
    print(f"{version.id} is now served.")
    return 0


def rollback_command(args: argparse.Namespace, config: Config) -> int:
    """Serve the previously served version; exit 2 when there is nothing to roll back to."""
    try:
        version = _registry(config).rollback()
    except RegistryError as exc:
        print(f"Not rolled back: {exc}", file=sys.stderr)
        return 2
    print(f"Rolled back: {version.id} is now served.")
    return 0
