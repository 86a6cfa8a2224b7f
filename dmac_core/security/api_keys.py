"""Per-user API keys for the OpenAI-compatible gateway: created and revoked by an admin, stored
hashed, shown once.

A key is ``dmac-<id>-<secret>``: the id (8 hex characters) names the key in lists and the audit
log; the secret is 32 random bytes. Only the SHA-256 of the whole key is kept: a key carries 256
bits of chance, so a slow password hash would add nothing but latency to every request, and a
stolen key file gives no key back. A key acts for its user with that user's role *now* (read
from the secrets file on each request), so demoting or removing the user takes effect on the
next call. The file lives under the data directory (``security/api-keys.json``, mode 0600),
written atomically under a file lock so the web server and the CLI share it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..fsio import atomic_write_bytes, exclusive_lock

KEY_PREFIX = "dmac-"
_KEY_SHAPE = re.compile(r"^dmac-([0-9a-f]{8})-[A-Za-z0-9_-]{43}$")


class ApiKeyError(ValueError):
    """A key operation was refused (unknown key, bad limit...); the message says why."""


@dataclass(frozen=True)
class ApiKey:
    """What is stored about a key (never the key itself)."""

    id: str
    user: str
    label: str
    sha256: str
    created: float
    requests_per_minute: int | None = None  # None: the gateway's default limit per key
    revoked: float | None = None

    def public(self) -> dict[str, Any]:
        """The key's description for lists: no hash."""
        row = asdict(self)
        row.pop("sha256")
        return row


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    """The API keys of one data directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # flock is per open file; threads need their own lock too
        self._cache: tuple[float, int, dict[str, ApiKey]] | None = None  # (mtime, size, keys) of the last read

    def _read(self) -> dict[str, ApiKey]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        if self._cache is not None and self._cache[:2] == (stat.st_mtime, stat.st_size):
            return self._cache[2]
        try:
            rows = json.loads(self.path.read_text(encoding="utf-8")).get("keys", [])
            keys = {row["id"]: ApiKey(**row) for row in rows}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # refusing every key is safer than guessing; the message says which file to look at
            raise ApiKeyError(f"{self.path} is unreadable ({exc}); restore it or remove it and create new keys") from None
        self._cache = (stat.st_mtime, stat.st_size, keys)
        return keys

    def _write(self, keys: dict[str, ApiKey]) -> None:
        data = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2).encode("utf-8")
        atomic_write_bytes(self.path, data, mode=0o600)

    def _locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(self.path.with_name(self.path.name + ".lock"))

    def create(self, user: str, label: str = "", requests_per_minute: int | None = None) -> tuple[str, ApiKey]:
        """A new key for ``user``: ``(key, record)``. The key is returned this once and never stored."""
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ApiKeyError("A key's limit must be at least 1 request a minute")
        with self._lock, self._locked():
            keys = self._read()
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
            record = ApiKey(id=key_id, user=user, label=label.strip(), sha256=_digest(key), created=time.time(),
                            requests_per_minute=requests_per_minute)
            self._write({**keys, key_id: record})
        return key, record

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by id; it is refused from the next request on."""
        with self._lock, self._locked():
            keys = self._read()
            if key_id not in keys:
                raise ApiKeyError(f"No API key with id {key_id!r}")
            record = keys[key_id]
            if record.revoked is None:
                record = ApiKey(**{**asdict(record), "revoked": time.time()})
                self._write({**keys, key_id: record})
        return record

    def revoke_all(self, user: str) -> list[str]:
        """Revoke every key of ``user`` (when the user is removed); the ids revoked."""
        with self._lock, self._locked():
            keys = self._read()
            now = time.time()
            ids = [k.id for k in keys.values() if k.user == user and k.revoked is None]
            if ids:
                self._write({i: ApiKey(**{**asdict(k), "revoked": now}) if i in ids else k for i, k in keys.items()})
        return ids

    def keys(self) -> list[ApiKey]:
        """Every key, newest first (revoked ones included, marked)."""
        with self._lock:
            return sorted(self._read().values(), key=lambda k: -k.created)

    def check(self, presented: str) -> ApiKey | None:
        """The live key ``presented`` is, or None (unknown, malformed or revoked)."""
        match = _KEY_SHAPE.match(presented or "")
        if match is None:
            return None
        with self._lock:
            record = self._read().get(match.group(1))
        if record is None or record.revoked is not None:
            return None
        # constant-time: the comparison does not tell how much of a guessed key was right
        return record if hmac.compare_digest(record.sha256, _digest(presented)) else None
