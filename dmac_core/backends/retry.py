"""Retrying backend calls, and the shared rules for which failures are worth retrying.

Backends never retry by themselves (their SDKs are built with retries off), so the one
place that retries is :func:`call_with_retries`, used by the router. That keeps the number
of requests a user action can cause predictable: ``1 + max_retries``, never a product of
SDK retries and router retries.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Callable, Mapping, TypeVar

from dmac_core.backends.base import BackendError

T = TypeVar("T")


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_retries: int,
    max_wait_s: float = 30.0,
    sleep: Callable[[float], Any] = time.sleep,
    on_retry: Callable[[BackendError, int, float], Any] | None = None,
) -> T:
    """Call ``fn()`` and retry it on retryable :class:`BackendError`.

    Waits ``retry_after`` (what the server asked for) when the error carries one, else
    exponential backoff 0.5 s, 1 s, 2 s, ...; every wait is capped at ``max_wait_s``.
    Non-retryable errors are raised at once. When attempts are exhausted the last error is
    raised. Every raised :class:`BackendError` gets ``attempts`` = number of calls made.
    ``on_retry(error, attempt, wait_s)`` is called before each wait (for logs/metrics).
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except BackendError as exc:
            exc.attempts = attempt  # type: ignore[attr-defined]
            if not exc.retryable or attempt > max_retries:
                raise
            wait = backoff_wait(exc.retry_after, attempt, max_wait_s)
            if on_retry is not None:
                on_retry(exc, attempt, wait)
            sleep(wait)


def backoff_wait(retry_after: float | None, attempt: int, max_wait_s: float) -> float:
    """Seconds to wait before call ``attempt + 1``: the server's wish, else 0.5 s * 2^(attempt-1)."""
    wait = retry_after if retry_after is not None else 0.5 * 2 ** (attempt - 1)
    return max(0.0, min(float(wait), max_wait_s))


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date (RFC 9110); anything
    unparseable gives ``None`` (the caller then uses its own backoff).
    """
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify_status(status: int) -> tuple[str, bool]:
    """Map an HTTP status to ``(kind, retryable)`` — the same rules for every API backend."""
    if status == 429:
        return "rate_limit", True
    if status in (401, 403):
        return "auth", False  # a wrong key stays wrong: retrying only burns quota
    if status == 408:
        return "timeout", True
    if status >= 500:
        return "server", True
    if status in (400, 404, 413, 422):
        return "bad_request", False
    return "error", False


def error_from_status(
    backend: str, status: int, detail: str, retry_after: float | None = None
) -> BackendError:
    """Build the :class:`BackendError` for an HTTP error answer."""
    kind, retryable = classify_status(status)
    return BackendError(
        f"{backend}: HTTP {status} ({kind}): {detail}",
        retryable=retryable,
        status=status,
        retry_after=retry_after if retryable else None,
        kind=kind,
    )
