"""API key lookup: environment first, then ``.streamlit/secrets.toml``.

Keys are never typed into text boxes and never logged: this module returns the
value to the caller and says nothing about it anywhere else.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from dmac_core.config import PROJECT_ROOT

DEFAULT_SECRETS_PATH = PROJECT_ROOT / ".streamlit" / "secrets.toml"


class SecretsError(ValueError):
    """``secrets.toml`` exists but cannot be read; the message names the file, never a value."""


def resolve_api_key(env_name: str | None, secrets_path: Path | None = None) -> str | None:
    """Return the API key named ``env_name``, or ``None`` when it is not set anywhere.

    Looks in ``os.environ[env_name]`` first (deployments set keys there), then in the
    top-level key ``env_name`` of the TOML file ``secrets_path`` (default
    ``PROJECT_ROOT/.streamlit/secrets.toml``, the file Streamlit reads too). Empty values
    count as not set. ``env_name=None`` (a keyless local server) gives ``None``.
    Raises :class:`SecretsError` when the secrets file is present but is not valid TOML.
    """
    if not env_name:
        return None
    value = os.environ.get(env_name, "").strip()
    if value:
        return value
    path = Path(secrets_path) if secrets_path is not None else DEFAULT_SECRETS_PATH
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message gives line and column only, never the file's content.
        raise SecretsError(f"{path} is not valid TOML ({exc}); fix or remove it") from None
    except OSError as exc:
        raise SecretsError(f"{path} cannot be read ({exc.strerror})") from None
    found = data.get(env_name)
    if isinstance(found, str) and found.strip():
        return found.strip()
    return None


def missing_key_reason(env_name: str) -> str:
    """The sentence shown when a backend has no key: names the variable, never a value."""
    return f"{env_name} is not set (environment or .streamlit/secrets.toml)"
