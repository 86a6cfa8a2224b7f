"""One password sign-in attempt: throttled, equal work for known and unknown names, lockouts
written to the audit log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .audit import AuditLog
from .directory import load_users, role_of
from .passwords import check_credentials, prepare
from .throttle import Lockout, SignInThrottle

WRONG = "Wrong user name or password."
BUSY = "The workbench is checking other sign-ins right now; try again in a moment."


@dataclass
class SignInResult:
    """``user`` is set when the attempt succeeded; ``message`` says why not otherwise."""

    user: str | None = None
    message: str | None = None
    lockouts: list[Lockout] = field(default_factory=list)


def attempt_sign_in(name: str, password: str, client: str, throttle: SignInThrottle, audit: AuditLog,
                    secrets: Path | str | None = None) -> SignInResult:
    """Check a password sign-in of ``name`` from the address ``client``.

    A locked name or client is refused before any password is checked; otherwise exactly one
    key derivation runs, whether the name exists or not. A failure counts towards the name's
    and the client's lockouts; a lockout it starts is recorded in the audit log."""
    name = name.strip()
    refusal = throttle.refusal(name, client)
    if refusal:
        return SignInResult(message=refusal)
    prepare()  # the stand-in hash is made once per process, before timing could tell names apart
    with throttle.slot() as taken:
        if not taken:
            return SignInResult(message=BUSY)
        ok = check_credentials(name, password, load_users(secrets))
    if ok and role_of(name, secrets) is not None:
        throttle.record_success(name)
        return SignInResult(user=name)
    started = throttle.record_failure(name, client)
    for lockout in started:
        audit.record("sign-in", "lockout", kind=lockout.kind, target=lockout.key, failures=lockout.failures)
    return SignInResult(message=WRONG, lockouts=started)
