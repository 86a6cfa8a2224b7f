"""``add-user``, ``set-role``, ``remove-user``, ``users``, ``unlock`` and ``audit``: who may
sign in and do what, from the command line (the Admin page does the same in the browser).

Each changes ``.streamlit/secrets.toml`` (or ``$DMAC_SECRETS``) or the sign-in lockouts as the
acting user (``--as NAME``), checks that user's role, and is recorded in the audit log. While a
workbench has no admin yet, ``add-user`` and ``set-role`` need no role: the first user added
becomes the admin.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

from ..config import Config
from ..security.roles import ROLE_NAMES, Role
from ..security.service import SecurityService
from .common import authorize, report_change


def _cmd_add_user(args: argparse.Namespace, config: Config) -> int:
    password = os.environ.get("DMAC_NEW_PASSWORD") or getpass.getpass(f"Password for {args.name}: ")
    if not os.environ.get("DMAC_NEW_PASSWORD") and getpass.getpass("Repeat it: ") != password:
        print("The passwords differ; nothing changed.", file=sys.stderr)
        return 2
    role = Role.parse(args.role) if args.role else None

    def add() -> str:
        granted = SecurityService(config).add_user(args.acting_user, args.name, password, role, via="cli")
        return f"User {args.name!r} can sign in now, as {granted.label}."

    return report_change(add)


def _cmd_set_role(args: argparse.Namespace, config: Config) -> int:
    return report_change(lambda: SecurityService(config).set_role(args.acting_user, args.name, args.role, via="cli")
                   or f"{args.name} is now {args.role}.")


def _cmd_remove_user(args: argparse.Namespace, config: Config) -> int:
    return report_change(lambda: SecurityService(config).remove_user(args.acting_user, args.name, via="cli")
                   or f"{args.name} can no longer sign in (their logged data stays: see delete-user).")


def _cmd_users(args: argparse.Namespace, config: Config) -> int:
    security = SecurityService(config)
    rows = security.users_table(args.acting_user)
    if not rows:
        print("No users: sign-in is off and the workbench listens on this machine only.")
    for row in rows:
        print(f"{row['user']:<32} {row['sign_in']:<15} {row['role']:<8}{'  LOCKED' if row['locked'] else ''}")
    for lock in security.lockouts(args.acting_user):
        until = datetime.fromtimestamp(lock.locked_until, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(f"locked {lock.kind} {lock.key} after {lock.failures} failed sign-ins, until {until}")
    return 0


def _cmd_unlock(args: argparse.Namespace, config: Config) -> int:
    lifted = SecurityService(config).unlock(args.acting_user, args.key, via="cli")
    print(f"{args.key} may sign in again." if lifted else f"{args.key} was not locked.")
    return 0


def _cmd_audit(args: argparse.Namespace, config: Config) -> int:
    security = authorize(args, config, "manage_users")
    for event in reversed(security.audit_entries(args.acting_user, limit=args.limit)):
        print(json.dumps(event, ensure_ascii=False))
    return 0


def register(subparsers: Any) -> None:
    """Add the user-management commands to an argparse sub-parser group."""
    roles = ", ".join(ROLE_NAMES)
    p = subparsers.add_parser("add-user", help="add a sign-in user (or reset a password) in .streamlit/secrets.toml")
    p.add_argument("name", help="user name (letters, digits, - _ .)")
    p.add_argument("--role", choices=ROLE_NAMES, default=None,
                   help="role of a new user (default: admin for the first user, else analyst)")
    p.set_defaults(handler=_cmd_add_user)

    p = subparsers.add_parser("set-role", help=f"give a user, an SSO e-mail or an @domain a role ({roles})")
    p.add_argument("name", help="password user name, or an e-mail / @domain for single sign-on")
    p.add_argument("role", choices=ROLE_NAMES)
    p.set_defaults(handler=_cmd_set_role)

    p = subparsers.add_parser("remove-user", help="stop a user (or allow-list entry) from signing in")
    p.add_argument("name")
    p.set_defaults(handler=_cmd_remove_user)

    p = subparsers.add_parser("users", help="list users, roles and sign-in lockouts")
    p.set_defaults(handler=_cmd_users)

    p = subparsers.add_parser("unlock", help="lift the sign-in lockout of a user name or client address")
    p.add_argument("key", help="the locked user name or client address (see `users`)")
    p.set_defaults(handler=_cmd_unlock)

    p = subparsers.add_parser("audit", help="print the audit log (who trained, promoted, deleted, changed users)")
    p.add_argument("--limit", type=int, default=100, help="newest N events (default 100)")
    p.set_defaults(handler=_cmd_audit)
