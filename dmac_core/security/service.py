"""The security facade the workbench's pages and CLI use: roles, users, sign-in, sessions,
lockouts and the audit log, over one data directory and one secrets file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from . import directory
from .directory import LOCAL_USER
from .api_keys import ApiKey, ApiKeyError, ApiKeyStore
from .audit import AuditLog
from .roles import REQUIRED_ROLE, PermissionDenied, Role, allowed, require
from .sessions import SessionPolicy, session_expiry
from .signin import SignInResult, attempt_sign_in
from .throttle import Lockout, SignInThrottle, ThrottlePolicy


class SecurityService:
    """Who may do what, and the record of who did."""

    def __init__(self, config: Config, secrets: Path | str | None = None) -> None:
        self.secrets = secrets  # None: $DMAC_SECRETS or .streamlit/secrets.toml, read on each use
        policy = config.security
        self.audit = AuditLog(config.data_path / "audit", durable=config.storage.fsync)
        self.throttle = SignInThrottle(
            config.data_path / "security" / "sign-in.json",
            ThrottlePolicy(max_name_failures=policy.max_failures_per_name,
                           max_client_failures=policy.max_failures_per_client,
                           window_s=policy.failure_window_minutes * 60, lockout_s=policy.lockout_minutes * 60,
                           max_parallel=policy.max_parallel_sign_ins))
        self.api_keys = ApiKeyStore(config.data_path / "security" / "api-keys.json")
        self.session_policy = SessionPolicy(idle_s=policy.session_idle_minutes * 60,
                                            max_s=policy.session_max_hours * 3600)

    # -- roles --------------------------------------------------------------------------------
    def sign_in_required(self) -> bool:
        """Whether anyone must sign in (password users or single sign-on are configured)."""
        return bool(directory.load_users(self.secrets)) or directory.oidc_configured(self.secrets)

    def password_sign_in(self) -> bool:
        return bool(directory.load_users(self.secrets))

    def single_sign_on(self) -> bool:
        return directory.oidc_configured(self.secrets)

    def role_of(self, user: str) -> Role | None:
        """The user's role now (roles are read from the secrets file on each call, so a change
        applies to signed-in sessions at their next click); None: the user may do nothing."""
        return directory.role_of(user, self.secrets)

    def can(self, user: str, action: str) -> bool:
        return allowed(self.role_of(user), action)

    def required_role(self, action: str) -> str:
        """The lowest role allowed ``action``, by name (for "needs trainer or above")."""
        return REQUIRED_ROLE[action].label

    def require(self, user: str, action: str) -> None:
        """Raise :class:`PermissionDenied` unless ``user``'s role allows ``action``."""
        require(user, self.role_of(user), action)

    # -- sign-in and sessions ---------------------------------------------------------------
    def sign_in(self, name: str, password: str, client: str) -> SignInResult:
        """A throttled password sign-in (see :func:`~.signin.attempt_sign_in`)."""
        return attempt_sign_in(name, password, client or "unknown", self.throttle, self.audit, self.secrets)

    def sso_refusal(self, email: str) -> str | None:
        """Why a single-sign-on account may not use the workbench, or None when it has a role."""
        if directory.role_of(email, self.secrets) is not None:
            return None
        return (f"{email} is not on this workbench's allow-list. Ask an admin to add your e-mail or domain "
                "(Admin page, or `python -m dmac_core set-role EMAIL ROLE`).")

    def session_expiry(self, signed_in_at: float, last_seen: float, now: float) -> str | None:
        """Why a browser session is over (idle too long, or signed in too long ago), or None."""
        return session_expiry(signed_in_at, last_seen, now, self.session_policy)

    # -- administration (each checks the actor's role and is audited) ------------------------
    def users_table(self, actor: str) -> list[dict[str, Any]]:
        """Users and allow-list entries with their roles and lockouts (admin only)."""
        self.require(actor, "manage_users")
        locked = {lock.key for lock in self.throttle.lockouts() if lock.kind == "name"}
        return [{**row, "locked": row["user"] in locked} for row in directory.roles_table(self.secrets)]

    def add_user(self, actor: str, name: str, password: str, role: Role | None = None, via: str = "web") -> Role:
        """Add (or reset the password of) a password user. While the workbench has no admin, no
        role is needed: someone has to be first, and the first user becomes the admin."""
        if directory.has_admin(self.secrets):
            self.require(actor, "manage_users")
        if len(password) < 8:
            raise ValueError("Use at least 8 characters for a password")
        granted = directory.add_user(name, password, self.secrets, role)
        self.audit.record(actor, "add_user", via=via, target=name, role=granted.label)
        return granted

    def set_role(self, actor: str, name: str, role: Role | str, via: str = "web") -> None:
        """Give a user, or a single-sign-on e-mail or @domain, a role (admin only; while the
        workbench has no admin, whoever runs the command names the first one)."""
        role = role if isinstance(role, Role) else Role.parse(role)
        if directory.has_admin(self.secrets):
            self.require(actor, "manage_users")
        directory.set_role(name, role, self.secrets)
        self.audit.record(actor, "set_role", via=via, target=name, role=role.label)

    def remove_user(self, actor: str, name: str, via: str = "web") -> None:
        """Remove a password user or an allow-list entry (their logged data stays: see delete-user)."""
        self.require(actor, "manage_users")
        if name == actor:
            raise ValueError("You cannot remove yourself; another admin can")
        directory.remove_user(name, self.secrets)
        revoked = self.api_keys.revoke_all(name)
        self.audit.record(actor, "remove_user", via=via, target=name, **({"api_keys_revoked": revoked} if revoked else {}))

    def lockouts(self, actor: str) -> list[Lockout]:
        self.require(actor, "manage_users")
        return self.throttle.lockouts()

    def unlock(self, actor: str, key: str, via: str = "web") -> bool:
        """Lift a lockout of a user name or client address (admin only)."""
        self.require(actor, "manage_users")
        lifted = self.throttle.unlock(key)
        self.audit.record(actor, "unlock", via=via, target=key, lifted=lifted)
        return lifted

    # -- API keys (the gateway's credentials) ------------------------------------------------
    def create_api_key(self, actor: str, user: str, label: str = "", requests_per_minute: int | None = None,
                       via: str = "web") -> tuple[str, ApiKey]:
        """A new API key acting for ``user`` (admin only): ``(key, record)``; the key is shown this once."""
        self.require(actor, "manage_users")
        if self.role_of(user) is None:
            raise ApiKeyError(f"{user!r} has no role here; add the user first (add-user, or the Admin page)"
                              + ("" if self.sign_in_required() else f"; without users, keys act for {LOCAL_USER!r}"))
        key, record = self.api_keys.create(user, label, requests_per_minute)
        self.audit.record(actor, "create_api_key", via=via, target=user, key_id=record.id)
        return key, record

    def revoke_api_key(self, actor: str, key_id: str, via: str = "web") -> ApiKey:
        """Revoke an API key by id (admin only)."""
        self.require(actor, "manage_users")
        record = self.api_keys.revoke(key_id)
        self.audit.record(actor, "revoke_api_key", via=via, target=record.user, key_id=key_id)
        return record

    def api_key_table(self, actor: str) -> list[dict[str, Any]]:
        """Every API key's id, user, label, limit, creation and revocation (admin only; no secrets)."""
        self.require(actor, "manage_users")
        return [key.public() for key in self.api_keys.keys()]

    def key_user(self, presented: str) -> ApiKey | None:
        """The live API key ``presented`` is (None: unknown, malformed or revoked)."""
        return self.api_keys.check(presented)

    def audit_entries(self, actor: str, limit: int | None = 500) -> list[dict[str, Any]]:
        """The audit log, newest first (admin only)."""
        self.require(actor, "manage_users")
        return self.audit.entries(limit)


__all__ = ["ApiKey", "ApiKeyError", "PermissionDenied", "Role", "SecurityService", "SignInResult"]
