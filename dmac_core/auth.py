"""Password sign-in: PBKDF2-SHA256 hashes in ``.streamlit/secrets.toml``, checked in constant time.

``secrets.toml``::

    [auth.users]
    alice = "pbkdf2_sha256$600000$<salt hex>$<hash hex>"

Add a user with ``python -m dmac_core add-user alice`` (asks for the password twice).
Sign-in is required whenever users are configured, and the workbench refuses to listen on a
non-loopback address without it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import secrets as _random
import tomllib
from pathlib import Path

from .config import PROJECT_ROOT
from .fsio import atomic_write_text

DEFAULT_SECRETS_PATH = PROJECT_ROOT / ".streamlit" / "secrets.toml"
ITERATIONS = 600_000
_SCHEME = "pbkdf2_sha256"


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """A self-describing PBKDF2 hash of ``password`` (never store the password itself)."""
    if not password:
        raise ValueError("The password must not be empty")
    salt = salt or _random.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; compared with ``hmac.compare_digest``."""
    try:
        scheme, iterations, salt_hex, digest_hex = stored.split("$")
        if scheme != _SCHEME:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt_hex), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def load_users(secrets_path: Path | None = None) -> dict[str, str]:
    """User name → password hash from ``[auth.users]`` of secrets.toml (empty when none)."""
    path = Path(secrets_path or os.environ.get("DMAC_SECRETS") or DEFAULT_SECRETS_PATH)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    users = data.get("auth", {}).get("users", {})
    return {str(name): str(value) for name, value in users.items()} if isinstance(users, dict) else {}


def oidc_configured(secrets_path: Path | None = None) -> bool:
    """True when secrets.toml has Streamlit's OIDC settings (``[auth]`` with
    ``server_metadata_url`` and ``client_id``), so ``st.login`` can be offered."""
    path = Path(secrets_path or os.environ.get("DMAC_SECRETS") or DEFAULT_SECRETS_PATH)
    try:
        auth = tomllib.loads(path.read_text(encoding="utf-8")).get("auth", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    providers = [auth] + [v for v in auth.values() if isinstance(v, dict)]
    return any("server_metadata_url" in p and "client_id" in p for p in providers)


def sign_in_configured(secrets_path: Path | None = None) -> bool:
    """Password users or OIDC: either one makes it safe to listen beyond loopback."""
    return bool(load_users(secrets_path)) or oidc_configured(secrets_path)


@functools.lru_cache(maxsize=1)
def _stand_in_hash() -> str:
    """A hash no password matches in practice, made once: what an unknown name is checked against."""
    return hash_password(_random.token_hex(16), iterations=ITERATIONS)


def check_credentials(user: str, password: str, users: dict[str, str]) -> bool:
    """Constant-time check: an unknown name costs one key derivation, as a known one does, so
    the time of an answer does not tell which names exist."""
    stored = users.get(user)
    if stored is None:
        verify_password(password, _stand_in_hash())
        return False
    return verify_password(password, stored)


def is_loopback(address: str) -> bool:
    """Whether listening on ``address`` reaches this machine only. An empty address is not:
    the web server then listens on every interface."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def add_user(name: str, password: str, secrets_path: Path | None = None) -> Path:
    """Add or replace ``name`` in ``[auth.users]`` of secrets.toml, keeping everything else."""
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError("User names may contain letters, digits, '-', '_' and '.' only")
    path = Path(secrets_path or os.environ.get("DMAC_SECRETS") or DEFAULT_SECRETS_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    # a quoted key: a bare "a.b" would be read back as the table a with the key b
    entry = f'"{name}" = "{hash_password(password)}"'
    out, in_users, placed = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if in_users and not placed:
                out.append(entry)
                placed = True
            in_users = stripped == "[auth.users]"
        elif in_users and stripped.split("=")[0].strip().strip('"') == name:
            continue  # replaced below
        out.append(line)
    if in_users and not placed:
        out.append(entry)
        placed = True
    if not placed:
        out += ["", "[auth.users]", entry]
    atomic_write_text(path, "\n".join(out).strip() + "\n", mode=0o600)
    return path
