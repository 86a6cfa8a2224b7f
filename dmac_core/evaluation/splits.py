"""The one held-out rule, shared by training and evaluation.

An item is held out when the SHA-256 bucket of its normalised prompt is below
``fraction × 1000``: the same prompt lands on the same side in every run and on every
machine, so training never sees the items that versions are compared on.
"""

from __future__ import annotations

import hashlib


def normalize_prompt(prompt: str) -> str:
    """Whitespace-collapsed, case-folded prompt: the identity of a question for splits and lookups."""
    return " ".join(str(prompt).split()).casefold()


def heldout_bucket(prompt: str) -> int:
    """Stable bucket 0..999 of a prompt (SHA-256 of the normalised prompt): the same on every
    machine and run, unlike Python's salted ``hash``."""
    digest = hashlib.sha256(normalize_prompt(prompt).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000


def is_heldout(prompt: str, fraction: float) -> bool:
    """True when ``prompt`` belongs to the held-out split of size ``fraction`` (0..1)."""
    return heldout_bucket(prompt) < round(fraction * 1000)
