"""Roles, the user directory, sign-in throttling and lockouts, sessions and the audit log."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.security import directory
from dmac_core.security.roles import PermissionDenied, Role, allowed
from dmac_core.security.service import SecurityService
from dmac_core.security.sessions import SessionPolicy, session_expiry
from dmac_core.security.signin import BUSY, WRONG
from dmac_core.security.throttle import SignInThrottle, ThrottlePolicy

SSO = ('[auth]\nredirect_uri = "http://x/oauth2callback"\ncookie_secret = "s"\nclient_id = "id"\n'
       'client_secret = "c"\nserver_metadata_url = "https://idp/.well-known/openid-configuration"\n')


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "secrets.toml"
    monkeypatch.setenv("DMAC_SECRETS", str(path))
    return path


@pytest.fixture
def security(tiny_config: Config, secrets: Path) -> SecurityService:
    return SecurityService(tiny_config)


# -- roles ---------------------------------------------------------------------------------------
def test_each_role_may_do_what_it_is_for_and_no_more() -> None:
    assert allowed(Role.VIEWER, "view") and not allowed(Role.VIEWER, "chat") and not allowed(Role.VIEWER, "rate")
    assert allowed(Role.ANALYST, "chat") and allowed(Role.ANALYST, "review") and not allowed(Role.ANALYST, "train")
    assert allowed(Role.TRAINER, "train") and allowed(Role.TRAINER, "evaluate") and not allowed(Role.TRAINER, "promote")
    assert all(allowed(Role.ADMIN, a) for a in ("promote", "rollback", "manage_users", "delete_user_data"))
    assert not allowed(None, "view")
    with pytest.raises(ValueError, match="use one of viewer, analyst, trainer, admin"):
        Role.parse("root")


def test_the_first_user_is_admin_later_ones_analysts_and_roles_apply(security: SecurityService, secrets: Path) -> None:
    assert security.role_of("local") == Role.ADMIN and not security.sign_in_required()  # loopback, no users
    assert security.add_user("local", "ann", "password-ann-1") == Role.ADMIN
    assert security.role_of("local") is None  # once users exist, nobody is "local"
    with pytest.raises(PermissionDenied):
        security.add_user("local", "bob", "password-bob-1")
    assert security.add_user("ann", "bob", "password-bob-1") == Role.ANALYST
    assert security.add_user("ann", "viv", "password-viv-1", Role.VIEWER) == Role.VIEWER
    assert security.can("bob", "rate") and not security.can("bob", "train")
    with pytest.raises(PermissionDenied, match="bob has the role analyst; manage users needs admin"):
        security.set_role("bob", "bob", "admin")
    security.set_role("ann", "bob", "trainer")
    assert security.role_of("bob") == Role.TRAINER and security.can("bob", "train")
    assert not security.can("viv", "chat") and security.can("viv", "view")
    assert security.role_of("mallory") is None
    with pytest.raises(ValueError, match="only admin"):
        security.set_role("ann", "ann", "analyst")
    with pytest.raises(ValueError, match="yourself"):
        security.remove_user("ann", "ann")
    security.remove_user("ann", "viv")
    assert security.role_of("viv") is None
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    actions = [(e["actor"], e["action"], e.get("target")) for e in security.audit_entries("ann", limit=None)]
    assert actions == [("ann", "remove_user", "viv"), ("ann", "set_role", "bob"), ("ann", "add_user", "viv"),
                       ("ann", "add_user", "bob"), ("local", "add_user", "ann")]


def test_single_sign_on_accounts_need_the_allow_list(security: SecurityService, secrets: Path) -> None:
    secrets.write_text(SSO, encoding="utf-8")
    assert security.sign_in_required()
    assert security.role_of("eve@elsewhere.org") is None  # no allow-list: nobody
    assert "not on this workbench's allow-list" in security.sso_refusal("eve@elsewhere.org")
    security.set_role("shell", "@Example.com", "analyst")  # no admin yet: the shell names the first roles
    security.set_role("shell", "boss@example.com", "admin")
    assert security.role_of("boss@example.com") == Role.ADMIN  # exact e-mail before the domain
    assert security.role_of("someone@example.com") == Role.ANALYST
    assert security.role_of("someone@example.com.evil.org") is None
    assert security.sso_refusal("someone@example.com") is None
    with pytest.raises(PermissionDenied):  # now there is an admin: an analyst cannot change roles
        security.set_role("someone@example.com", "someone@example.com", "admin")


def test_a_typo_in_a_role_grants_nothing(security: SecurityService, secrets: Path) -> None:
    security.add_user("local", "ann", "password-ann-1")
    security.add_user("ann", "bob", "password-bob-1")
    secrets.write_text(secrets.read_text().replace('"bob" = "analyst"', "") + '\n', encoding="utf-8")
    directory._edit(secrets, "auth.roles", "bob", "superuser")
    assert security.role_of("bob") is None


# -- the facade checks roles on every verb that changes something --------------------------------
def test_learning_system_verbs_refuse_roles_below_what_they_need(tiny_config: Config, secrets: Path) -> None:
    from dmac_core.system import LearningSystem

    system = LearningSystem(tiny_config)
    system.security.add_user("local", "ann", "password-ann-1")
    system.security.add_user("ann", "viv", "password-viv-1", Role.VIEWER)
    system.security.add_user("ann", "bob", "password-bob-1", Role.ANALYST)
    with pytest.raises(PermissionDenied):
        system.chat_stream([{"role": "user", "content": "hi"}], user="viv")
    with pytest.raises(PermissionDenied):
        system.rate("some-id", 5, user="viv")
    with pytest.raises(PermissionDenied):
        system.start_training(user="bob")
    with pytest.raises(PermissionDenied):
        system.cancel_training(user="bob")
    with pytest.raises(PermissionDenied):
        system.promote("base", user="bob")
    with pytest.raises(PermissionDenied):
        system.roll_back(user="bob")
    with pytest.raises(PermissionDenied):  # the default user of the seed's API is nobody once users exist
        system.roll_back()
    assert system.security.audit_entries("ann", limit=None)[0]["action"] == "add_user"  # refusals change nothing


# -- sign-in -------------------------------------------------------------------------------------
def test_wrong_passwords_lock_the_name_and_an_admin_lifts_it(security: SecurityService) -> None:
    security.add_user("local", "ann", "password-ann-1")
    security.add_user("ann", "bob", "password-bob-1")
    for _ in range(4):
        assert security.sign_in("bob", "guess", "10.0.0.9").message == WRONG
    fifth = security.sign_in("bob", "guess", "10.0.0.9")
    assert fifth.message == WRONG and [(x.kind, x.key) for x in fifth.lockouts] == [("name", "bob")]
    locked = security.sign_in("bob", "password-bob-1", "10.0.0.8")  # even the right password, from elsewhere
    assert locked.user is None and "locked after too many failed sign-ins" in locked.message
    assert [row["locked"] for row in security.users_table("ann") if row["user"] == "bob"] == [True]
    assert security.audit_entries("ann")[0] | {"ts": ""} == {
        "ts": "", "actor": "sign-in", "action": "lockout", "via": "web", "kind": "name", "target": "bob", "failures": 5}
    with pytest.raises(PermissionDenied):
        security.unlock("bob", "bob")
    assert security.unlock("ann", "bob")
    assert security.sign_in("bob", "password-bob-1", "10.0.0.8").user == "bob"


def test_unknown_names_lock_too_so_a_lockout_tells_nothing(security: SecurityService) -> None:
    security.add_user("local", "ann", "password-ann-1")
    results = [security.sign_in("nobody", "guess", "10.0.0.9") for _ in range(6)]
    assert "locked after too many" in results[-1].message


def test_a_client_that_guesses_many_names_is_locked_out(tiny_config: Config, secrets: Path) -> None:
    tiny_config.security.max_failures_per_client = 3
    security = SecurityService(tiny_config)
    security.add_user("local", "ann", "password-ann-1")
    for name in ("a1", "a2", "a3"):
        security.sign_in(name, "guess", "10.0.0.66")
    refused = security.sign_in("ann", "password-ann-1", "10.0.0.66")
    assert refused.user is None and refused.message.startswith("Your address is locked")
    assert security.sign_in("ann", "password-ann-1", "10.0.0.7").user == "ann"  # another client is not


def test_lockouts_expire_and_failures_outside_the_window_are_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    throttle = SignInThrottle(tmp_path / "s.json", ThrottlePolicy(max_name_failures=2, window_s=60, lockout_s=300),
                              clock=clock)
    throttle.record_failure("bob", "c")
    clock.now += 61  # the first failure left the window
    assert throttle.record_failure("bob", "c") == []
    assert throttle.refusal("bob", "c") is None
    assert throttle.record_failure("bob", "c")[0].locked_until == clock.now + 300
    assert throttle.refusal("bob", "c") is not None
    clock.now += 301
    assert throttle.refusal("bob", "c") is None and throttle.lockouts() == []


def test_parallel_sign_ins_beyond_the_limit_are_told_to_retry_not_queued(tmp_path: Path) -> None:
    throttle = SignInThrottle(tmp_path / "s.json", ThrottlePolicy(max_parallel=2))
    release = threading.Event()
    taken: list[bool] = []

    def hold() -> None:
        with throttle.slot(wait_s=0.1) as ok:
            taken.append(ok)
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    with throttle.slot(wait_s=0.1) as third:
        assert third is False
    release.set()
    for thread in threads:
        thread.join()
    assert taken == [True, True]
    with throttle.slot(wait_s=0.1) as again:
        assert again is True
    assert BUSY.startswith("The workbench is checking other sign-ins")


def test_a_known_and_an_unknown_name_cost_one_key_derivation_each(security: SecurityService,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    security.add_user("local", "ann", "password-ann-1")
    security.sign_in("warm", "up", "c0")  # the stand-in hash is made before any attempt is timed
    calls: list[str] = []
    real = hashlib.pbkdf2_hmac
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    security.sign_in("nobody", "guess", "c1")
    unknown = len(calls)
    security.sign_in("ann", "guess", "c2")
    assert unknown == 1 and len(calls) == 2


# -- sessions ------------------------------------------------------------------------------------
def test_sessions_end_when_idle_and_at_the_latest_after_the_maximum() -> None:
    policy = SessionPolicy(idle_s=600, max_s=3600)
    assert session_expiry(0, 0, 599, policy) is None
    assert "10 minutes without activity" in session_expiry(0, 0, 600, policy)
    assert session_expiry(0, 3000, 3500, policy) is None
    assert "after 1 hours" in session_expiry(0, 3599, 3600, policy)


# -- the audit log -------------------------------------------------------------------------------
def test_the_audit_log_survives_a_torn_line_and_never_becomes_training_data(tiny_config: Config,
                                                                             secrets: Path) -> None:
    from dmac_core.logs.store import KINDS
    from dmac_core.system import LearningSystem

    system = LearningSystem(tiny_config)
    log = system.security.audit
    log.record("ann", "promote", version="v0001")
    path = next(log.directory.glob("*.jsonl"))
    with path.open("ab") as handle:
        handle.write(b'{"ts": "2026-01-01", "actor": "ki')  # a writer killed mid-line
    log.record("ann", "rollback", version="base")
    assert [e["action"] for e in log.entries()] == ["rollback", "promote"]
    assert log.directory == tiny_config.data_path / "audit" and "audit" not in KINDS
    assert system.store.interactions().empty and system.store.feedback().empty


# -- command line --------------------------------------------------------------------------------
def _cli(args: list[str], tiny_config: Config, secrets: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmac_core", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(secrets.parent), "DMAC_CONFIG": tiny_config.source,
             "DMAC_SECRETS": str(secrets), "DMAC_NEW_PASSWORD": "password-123", **env})


def test_cli_commands_check_the_acting_users_role_and_are_audited(tiny_config: Config, secrets: Path) -> None:
    assert "as admin" in _cli(["add-user", "ann"], tiny_config, secrets).stdout
    refused = _cli(["add-user", "bob"], tiny_config, secrets)  # users exist now: who is asking?
    assert refused.returncode == 2 and "Not allowed: local has no role" in refused.stderr
    assert "as analyst" in _cli(["add-user", "bob", "--as", "ann"], tiny_config, secrets).stdout
    denied = _cli(["rollback", "--as", "bob"], tiny_config, secrets)
    assert denied.returncode == 2 and "rollback needs admin or above" in denied.stderr
    assert _cli(["set-role", "bob", "trainer"], tiny_config, secrets, DMAC_USER="ann").returncode == 0
    users = _cli(["users", "--as", "ann"], tiny_config, secrets).stdout
    assert "bob" in users and "trainer" in users
    audit = _cli(["audit", "--as", "ann"], tiny_config, secrets).stdout
    assert '"action": "set_role"' in audit and '"via": "cli"' in audit and '"target": "bob"' in audit


def test_a_chat_without_a_session_id_is_logged(tiny_config: Config, secrets: Path) -> None:
    from dmac_core.system import ChatResult, LearningSystem

    system = LearningSystem(tiny_config)
    items = list(system.chat_stream([{"role": "user", "content": "Say hello"}], model="deepseek"))
    result = items[-1]
    assert isinstance(result, ChatResult) and result.interaction_id
    logged = system.store.interactions()
    assert list(logged["id"]) == [result.interaction_id] and list(logged["user"]) == ["local"]
