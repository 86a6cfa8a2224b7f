"""``api-key create|revoke|list``: the API keys of the OpenAI-compatible gateway (admin only;
the Admin page does the same). A key is printed once, when it is created, and stored hashed."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any

from ..config import Config
from ..security.api_keys import ApiKeyError
from ..security.service import SecurityService
from .common import report_change


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def _cmd_create(args: argparse.Namespace, config: Config) -> int:
    try:
        key, record = SecurityService(config).create_api_key(args.acting_user, args.user, args.label, args.limit,
                                                             via="cli")
    except ApiKeyError as exc:
        print(f"{exc}; no key created.", file=sys.stderr)
        return 2
    limit = f"{record.requests_per_minute}/min" if record.requests_per_minute else \
        f"{config.gateway.requests_per_minute_per_key or 'no'}/min, the default"
    print(f"API key {record.id} for {record.user} (limit {limit}). It is shown this once; store it now:\n\n{key}\n")
    print(f"Use it as: Authorization: Bearer {key[:14]}…   (base URL http://{config.gateway.address}:"
          f"{config.gateway.port}/v1)")
    return 0


def _cmd_revoke(args: argparse.Namespace, config: Config) -> int:
    def revoke() -> str:
        record = SecurityService(config).revoke_api_key(args.acting_user, args.key_id, via="cli")
        return f"API key {record.id} of {record.user} is revoked: it is refused from the next request on."

    return report_change(revoke)


def _cmd_list(args: argparse.Namespace, config: Config) -> int:
    rows = SecurityService(config).api_key_table(args.acting_user)
    if not rows:
        print("No API keys. Create one: python -m dmac_core api-key create USER")
    for row in rows:
        state = f"revoked {_when(row['revoked'])}" if row["revoked"] else "live"
        limit = f"{row['requests_per_minute']}/min" if row["requests_per_minute"] else "default limit"
        print(f"{row['id']}  {row['user']:<24} {row['label'] or '-':<20} {limit:<14} created {_when(row['created'])}  "
              f"{state}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``api-key`` and its actions to an argparse sub-parser group."""
    p = subparsers.add_parser("api-key", help="create, revoke or list API keys of the OpenAI-compatible API")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("create", help="a new key acting for USER with USER's role (shown once)")
    a.add_argument("user", help="the user the key acts for (a password user or an SSO e-mail with a role)")
    a.add_argument("--label", default="", help="what the key is for, e.g. 'notebook' (shown in lists)")
    a.add_argument("--limit", type=int, default=None,
                   help="requests a minute for this key (default: gateway.requests_per_minute_per_key)")
    a.set_defaults(handler=_cmd_create)
    a = actions.add_parser("revoke", help="revoke a key by its id (see `api-key list`)")
    a.add_argument("key_id")
    a.set_defaults(handler=_cmd_revoke)
    a = actions.add_parser("list", help="every key: id, user, label, limit, created, revoked")
    a.set_defaults(handler=_cmd_list)
