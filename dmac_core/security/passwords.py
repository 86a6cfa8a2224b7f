"""Password hashes: PBKDF2-SHA256, self-describing, checked in constant time.

A stored hash looks like ``pbkdf2_sha256$600000$<salt hex>$<hash hex>``; the password itself is
never stored. :func:`check_credentials` does the same work for an unknown name as for a known
one, so the time of an answer does not tell which names exist.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets as _random

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


@functools.lru_cache(maxsize=1)
def _stand_in_hash() -> str:
    """A hash no password matches in practice, made once: what an unknown name is checked against."""
    return hash_password(_random.token_hex(16), iterations=ITERATIONS)


def prepare() -> None:
    """Make the stand-in hash now, so no sign-in attempt pays for it (which would tell it apart)."""
    _stand_in_hash()


def check_credentials(user: str, password: str, users: dict[str, str]) -> bool:
    """Constant-time check: an unknown name costs one key derivation, as a known one does, so
    the time of an answer does not tell which names exist."""
    stored = users.get(user)
    if stored is None:
        verify_password(password, _stand_in_hash())
        return False
    return verify_password(password, stored)
