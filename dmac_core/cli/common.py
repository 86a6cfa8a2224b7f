"""The one way every command-line entry parses ``--config``, loads it and dispatches."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..config import ConfigError, load_config

Registrar = Callable[[Any], None]


def config_parser(prog: str, description: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("--config", help="config file (default: $DMAC_CONFIG or config/config.yaml)")
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, load the config (a broken one is a clear message and exit code 2) and
    call the chosen command's ``handler(args, config)``."""
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return int(args.handler(args, config) or 0)


def run_subcommands(prog: str, registrars: list[Registrar], argv: list[str] | None = None,
                    description: str | None = None) -> int:
    """A stand-alone entry for modules that add subcommands with ``register(subparsers)``."""
    parser = config_parser(prog, description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in registrars:
        register(sub)
    return dispatch(parser, argv)
