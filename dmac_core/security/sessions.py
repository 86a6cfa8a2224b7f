"""When a signed-in browser session ends by itself: after a time without use, and at the latest
some hours after signing in (a shared or forgotten browser does not stay signed in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionPolicy:
    idle_s: float = 60 * 60
    max_s: float = 12 * 60 * 60


def session_expiry(signed_in_at: float, last_seen: float, now: float, policy: SessionPolicy) -> str | None:
    """Why the session is over (shown on the sign-in page), or None while it is valid."""
    if now - signed_in_at >= policy.max_s:
        return f"Your session ended after {policy.max_s / 3600:g} hours; please sign in again."
    if now - last_seen >= policy.idle_s:
        return f"You were signed out after {policy.idle_s / 60:g} minutes without activity."
    return None
