"""The user directory, kept in ``.streamlit/secrets.toml`` (the file Streamlit reads too)::

    [auth.users]                      # password sign-in: name = PBKDF2 hash
    "alice" = "pbkdf2_sha256$600000$…"
    [auth.roles]                      # name = admin | trainer | analyst | viewer
    "alice" = "admin"
    [auth.allow]                      # single sign-on: e-mail or "@domain" = role
    "bob@example.com" = "trainer"
    "@example.com" = "analyst"

A password user without a role entry is an analyst; the first user ever added is an admin.
A single-sign-on account gets the role of its exact e-mail, else of its domain; an account
matching neither is refused. With no sign-in configured at all (loopback only) the one local
user is an admin. The file is rewritten atomically with mode 0600 from its creation.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from pathlib import Path
from typing import Any

from ..config import PROJECT_ROOT
from ..fsio import atomic_write_text
from .passwords import hash_password
from .roles import Role

DEFAULT_SECRETS_PATH = PROJECT_ROOT / ".streamlit" / "secrets.toml"
LOCAL_USER = "local"
"""Who works when no sign-in is configured (the workbench then listens on loopback only)."""

_USERS, _ROLES, _ALLOW = "auth.users", "auth.roles", "auth.allow"


def secrets_path(path: Path | str | None = None) -> Path:
    """``path``, else ``$DMAC_SECRETS``, else ``.streamlit/secrets.toml`` in the project."""
    return Path(path or os.environ.get("DMAC_SECRETS") or DEFAULT_SECRETS_PATH)


# The parsed secrets file per path, with the (inode, mtime, size) it was parsed at. A page render
# and every API request ask for roles several times; each asks the file system whether the file
# changed (one stat) instead of parsing it again. Edits replace the file (a new inode), so a
# change is never missed. Callers only read the parsed data.
_parsed: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_parsed_lock = threading.Lock()


def _read(path: Path) -> dict[str, Any]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    with _parsed_lock:
        cached = _parsed.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    with _parsed_lock:
        _parsed[str(path)] = (stamp, data)
    return data


def _table(data: dict[str, Any], dotted: str) -> dict[str, str]:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return {str(k): str(v) for k, v in node.items() if not isinstance(v, dict)} if isinstance(node, dict) else {}


def load_users(path: Path | str | None = None) -> dict[str, str]:
    """User name → password hash from ``[auth.users]`` (empty when none)."""
    return _table(_read(secrets_path(path)), _USERS)


def oidc_configured(path: Path | str | None = None) -> bool:
    """True when secrets.toml has Streamlit's OIDC settings (``[auth]`` or a provider table
    under it with ``server_metadata_url`` and ``client_id``), so ``st.login`` can be offered."""
    try:
        auth = _read(secrets_path(path)).get("auth", {})
    except (OSError, ValueError):
        return False
    providers = [auth] + [v for v in auth.values() if isinstance(v, dict)]
    return any("server_metadata_url" in p and "client_id" in p for p in providers)


def sso_allow_list(path: Path | str | None = None) -> dict[str, Role]:
    """E-mail or ``@domain`` → role from ``[auth.allow]``; a bad role is an error naming it."""
    allow = {}
    for key, value in _table(_read(secrets_path(path)), _ALLOW).items():
        try:
            allow[key.strip().lower()] = Role.parse(value)
        except ValueError as exc:
            raise ValueError(f"[auth.allow] {key}: {exc}") from None
    return allow


def sign_in_configured(path: Path | str | None = None) -> bool:
    """Password users, or single sign-on with an allow-list: either makes it safe to listen
    beyond loopback. Single sign-on without an allow-list admits nobody, so it does not count."""
    return bool(load_users(path)) or (oidc_configured(path) and bool(sso_allow_list(path)))


def is_sso_identity(name: str) -> bool:
    """Single-sign-on users are named by their e-mail; password user names cannot hold "@"."""
    return "@" in name


def sso_role(email: str, allow: dict[str, Role]) -> Role | None:
    """The role of a single-sign-on account: its exact e-mail first, then its ``@domain``."""
    email = email.strip().lower()
    if email in allow:
        return allow[email]
    domain = email[email.rfind("@"):] if "@" in email else None
    return allow.get(domain) if domain else None


def role_of(name: str, path: Path | str | None = None) -> Role | None:
    """What ``name`` may do: None when it is no user of this workbench (nothing allowed)."""
    path = secrets_path(path)
    data = _read(path)
    users = _table(data, _USERS)
    sso = oidc_configured(path)
    if not users and not sso:
        return Role.ADMIN if name == LOCAL_USER else None
    if is_sso_identity(name):
        return sso_role(name, sso_allow_list(path)) if sso else None
    if name not in users:
        return None
    text = _table(data, _ROLES).get(name)
    if text is None:
        return Role.ANALYST
    try:
        return Role.parse(text)
    except ValueError:
        return None  # a typo in the file grants nothing; `set-role` repairs it


def roles_table(path: Path | str | None = None) -> list[dict[str, str]]:
    """Every password user and allow-list entry with its role, for the admin page and CLI."""
    rows = []
    for name in load_users(path):
        role = role_of(name, path)
        rows.append({"user": name, "sign_in": "password", "role": role.label if role else "none (invalid role)"})
    for key, role in sso_allow_list(path).items():
        rows.append({"user": key, "sign_in": "single sign-on", "role": role.label})
    return rows


def has_admin(path: Path | str | None = None) -> bool:
    """Whether any password user or allow-list entry is an admin."""
    return any(row["role"] == Role.ADMIN.label for row in roles_table(path))


# -- editing -------------------------------------------------------------------------------
def _validate_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or not name.isascii():
        raise ValueError("User names may contain letters, digits, '-', '_' and '.' only")


def _edit(path: Path, table: str, key: str, value: str | None) -> None:
    """Set (or with None remove) ``key`` in ``[table]``, keeping every other line as it is."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    # a quoted key: a bare "a.b" would be read back as the table a with the key b
    entry = None if value is None else f"{json.dumps(key)} = {json.dumps(value)}"
    out: list[str] = []
    in_table = placed = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_table and not placed and entry:
                out.append(entry)
                placed = True
            in_table = stripped == f"[{table}]"
        elif in_table and stripped.split("=")[0].strip().strip('"') == key:
            continue  # replaced (or removed)
        out.append(line)
    if in_table and not placed and entry:
        out.append(entry)
        placed = True
    if entry and not placed:
        out += ["", f"[{table}]", entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(out).strip() + "\n", mode=0o600)


def add_user(name: str, password: str, path: Path | str | None = None, role: Role | None = None) -> Role:
    """Add or replace ``name`` in ``[auth.users]``, keeping everything else; returns its role.

    The first user of a workbench becomes an admin (someone must be able to manage the others);
    later ones get ``role``, an analyst by default; replacing a password keeps the role."""
    _validate_name(name)
    path = secrets_path(path)
    first = not load_users(path)
    _edit(path, _USERS, name, hash_password(password))
    if first and role is None:
        role = Role.ADMIN
    if role is not None:
        _edit(path, _ROLES, name, role.label)
    return role_of(name, path) or Role.ANALYST


def set_role(name: str, role: Role, path: Path | str | None = None) -> None:
    """Give a password user, or a single-sign-on e-mail or ``@domain``, the role ``role``."""
    path = secrets_path(path)
    if is_sso_identity(name):
        _edit(path, _ALLOW, name.strip().lower(), role.label)
        return
    if name not in load_users(path):
        raise ValueError(f"no password user {name!r} (add-user creates one; e-mails and @domains are for single sign-on)")
    if role != Role.ADMIN and role_of(name, path) == Role.ADMIN and _admins(path) == [name]:
        raise ValueError(f"{name} is the only admin; make another user admin first")
    _edit(path, _ROLES, name, role.label)


def remove_user(name: str, path: Path | str | None = None) -> None:
    """Remove a password user (with its role) or an allow-list entry; the last admin stays."""
    path = secrets_path(path)
    if role_of(name, path) == Role.ADMIN and _admins(path) == [name]:
        raise ValueError(f"{name} is the only admin; make another user admin first")
    if is_sso_identity(name):
        _edit(path, _ALLOW, name.strip().lower(), None)
    else:
        _edit(path, _USERS, name, None)
        _edit(path, _ROLES, name, None)


def _admins(path: Path) -> list[str]:
    return [row["user"] for row in roles_table(path) if row["role"] == Role.ADMIN.label]
