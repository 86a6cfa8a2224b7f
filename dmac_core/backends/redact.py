"""Keep API keys out of error messages.

Error bodies from an API (or a misbehaving proxy) may echo request data back, and those
bodies end up in :class:`~dmac_core.backends.base.BackendError` messages, which the UI shows
and the interaction log stores. Backends pass every message they build through
:func:`redact`.

No logging filter is installed: with DEBUG logging on for ``openai``, ``httpx2``,
``httpcore2``, ``google_genai`` and ``google``, the pinned SDKs were checked (see
``tests/test_backends_api.py``, the canary test) and none of them logs the key.
"""

from __future__ import annotations

from typing import Iterable

MASK = "***"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each given secret with ``***``.

    Secrets shorter than 4 characters are ignored: masking them would mangle ordinary text
    and they are not real keys anyway.
    """
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
