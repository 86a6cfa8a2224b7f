"""The one way every command-line entry parses ``--config``, loads it and dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from ..config import Config, ConfigError, load_config
from ..security.roles import PermissionDenied
from ..security.service import SecurityService

Registrar = Callable[[Any], None]


def config_parser(prog: str, description: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("--config", help="config file (default: $DMAC_CONFIG or config/config.yaml)")
    parser.add_argument(
        "--as", dest="acting_user", metavar="NAME", default=os.environ.get("DMAC_USER") or "local",
        help="who runs the command, when sign-in is configured: a user whose role allows it (also $DMAC_USER; "
             "may be given anywhere on the line). Without sign-in the local user is an admin.")
    return parser


def _hoist_acting_user(argv: list[str]) -> list[str]:
    """Let ``--as NAME`` stand anywhere on the line (people type it after the command)."""
    for index, arg in enumerate(argv):
        if arg == "--as" and index + 1 < len(argv):
            return ["--as", argv[index + 1]] + argv[:index] + argv[index + 2:]
        if arg.startswith("--as="):
            return [arg] + argv[:index] + argv[index + 1:]
    return argv


def authorize(args: argparse.Namespace, config: Config, action: str) -> SecurityService:
    """Check that the acting user (``--as``) may do ``action``; the security service, for the
    audit log. Raises :class:`PermissionDenied` (``dispatch`` prints it and exits with 2).

    The command line trusts the name it is given: whoever holds this shell can read the data
    directory anyway. The check keeps people to their role and puts their name in the audit log."""
    security = SecurityService(config)
    security.require(args.acting_user, action)
    return security


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, load the config (a broken one is a clear message and exit code 2) and
    call the chosen command's ``handler(args, config)``."""
    args = parser.parse_args(_hoist_acting_user(list(sys.argv[1:] if argv is None else argv)))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return int(args.handler(args, config) or 0)
    except PermissionDenied as exc:
        print(f"Not allowed: {exc}. Name a user whose role allows it with --as NAME (or $DMAC_USER).",
              file=sys.stderr)
        return 2


def run_subcommands(prog: str, registrars: list[Registrar], argv: list[str] | None = None,
                    description: str | None = None) -> int:
    """A stand-alone entry for modules that add subcommands with ``register(subparsers)``."""
    parser = config_parser(prog, description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in registrars:
        register(sub)
    return dispatch(parser, argv)


def report_change(change: Callable[[], str]) -> int:
    """Run one change (of users, roles, keys); print what it did, or why nothing changed (exit 2)."""
    try:
        done = change()
    except ValueError as exc:
        print(f"{exc}; nothing changed.", file=sys.stderr)
        return 2
    print(done)
    return 0
