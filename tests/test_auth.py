"""Sign-in: PBKDF2 hashes, constant-time checks, secrets.toml editing, loopback rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dmac_core.security.directory import add_user, load_users
from dmac_core.security.network import is_loopback
from dmac_core.security.passwords import check_credentials, hash_password, verify_password
from dmac_core.config import PROJECT_ROOT


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("correct horse", "garbage")


def test_add_user_keeps_other_secrets_and_replaces_the_same_name(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('GEMINI_API_KEY = "k"\n', encoding="utf-8")
    add_user("alice", "password-1", secrets)
    add_user("bob", "password-2", secrets)
    add_user("alice", "password-3", secrets)
    users = load_users(secrets)
    assert set(users) == {"alice", "bob"}
    assert check_credentials("alice", "password-3", users)
    assert not check_credentials("alice", "password-1", users)
    assert not check_credentials("mallory", "password-3", users)
    assert 'GEMINI_API_KEY = "k"' in secrets.read_text()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("")  # an empty address makes the server listen on every interface


def test_serve_refuses_a_public_address_without_users(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DMAC_SECRETS": str(tmp_path / "none.toml"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dmac_core", "serve", "--address", "0.0.0.0"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Refusing to listen on 0.0.0.0" in result.stderr
    assert "add-user" in result.stderr


def test_oidc_settings_count_as_sign_in_only_with_an_allow_list(tmp_path: Path) -> None:
    from dmac_core.security.directory import oidc_configured, sign_in_configured

    secrets = tmp_path / "secrets.toml"
    assert not sign_in_configured(secrets)
    secrets.write_text(
        '[auth]\nredirect_uri = "http://x/oauth2callback"\ncookie_secret = "s"\nclient_id = "id"\n'
        'client_secret = "c"\nserver_metadata_url = "https://idp/.well-known/openid-configuration"\n'
    )
    # single sign-on without an allow-list admits nobody, so it does not make listening publicly safe
    assert oidc_configured(secrets) and not sign_in_configured(secrets)
    with secrets.open("a") as handle:
        handle.write('[auth.allow]\n"@example.com" = "analyst"\n')
    assert sign_in_configured(secrets)


def test_a_user_name_with_a_dot_can_sign_in(tmp_path) -> None:
    secrets = tmp_path / "secrets.toml"
    add_user("jane.doe", "a-long-password-1", secrets)
    add_user("bob", "another-password-2", secrets)
    add_user("jane.doe", "a-new-password-3", secrets)  # replaced, not added twice
    users = load_users(secrets)
    assert sorted(users) == ["bob", "jane.doe"]
    assert verify_password("a-new-password-3", users["jane.doe"])


def test_an_unknown_name_costs_the_same_key_derivations_as_a_known_one(monkeypatch) -> None:
    import hashlib

    users = {"alice": hash_password("right-password-1")}
    check_credentials("nobody", "warm-up", users)  # the stand-in hash is made once, up front
    calls = []
    real = hashlib.pbkdf2_hmac
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert not check_credentials("nobody", "guess", users)
    unknown = len(calls)
    assert not check_credentials("alice", "wrong", users)
    assert check_credentials("alice", "right-password-1", users)
    assert unknown == 1 and len(calls) == 3
