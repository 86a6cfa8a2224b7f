"""Sign-in, roles and the Admin page through Streamlit's AppTest (the real app.py and pages)."""

from __future__ import annotations

import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

import dmac_core
from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.security.directory import add_user, set_role
from dmac_core.security.roles import Role

APP = str(PROJECT_ROOT / "app.py")


def sign_in(name: str, password: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.title[0].value == "🔐 Sign in"
    at.text_input(key="sign_in_user").input(name)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click().run()  # the form's "Sign in"
    assert not at.exception, at.exception
    return at


def users(*entries: tuple[str, Role]) -> Path:
    secrets = Path(os.environ["DMAC_SECRETS"])
    for name, role in entries:
        add_user(name, f"password-{name}-1", secrets, role)
    return secrets


def test_a_viewer_reads_but_gets_no_controls(app_env: Config) -> None:
    users(("ann", Role.ADMIN), ("viv", Role.VIEWER))
    at = sign_in("viv", "password-viv-1")
    assert any("role **viewer**" in c.value for c in at.sidebar.caption)
    assert not at.chat_input and any("🔒 Asking questions" in c.value for c in at.caption)
    at.radio(key="chat_mode").set_value("Compare").run()  # a blind comparison asks too: not for a viewer
    assert not at.chat_input and any("🔒 Comparing answers" in c.value for c in at.caption)
    at.switch_page("pages/training.py").run()
    assert not at.exception, at.exception
    assert "train_start" not in [b.key for b in at.button]
    assert "train_promote" not in [b.key for b in at.button]
    assert any("🔒 Train now: your role (viewer) cannot; it needs trainer or above." == c.value for c in at.caption)
    assert "Admin" not in str(at.get("navigation"))


def test_wrong_passwords_lock_the_name_on_the_sign_in_page(app_env: Config) -> None:
    users(("ann", Role.ADMIN))
    for _ in range(5):
        at = sign_in("ann", "not-her-password")
        assert at.error[0].value == "Wrong user name or password."
    at = sign_in("ann", "password-ann-1")
    assert "locked after too many failed sign-ins" in at.error[0].value
    assert "dmac_user" not in at.session_state


def test_an_admin_changes_a_role_and_sees_the_audit_log(app_env: Config) -> None:
    secrets = users(("ann", Role.ADMIN), ("bob", Role.ANALYST))
    at = sign_in("ann", "password-ann-1")
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    table = [d.value for d in at.dataframe if "sign_in" in d.value.columns][0]
    assert dict(zip(table["user"], table["role"])) == {"ann": "admin", "bob": "analyst"}
    at.text_input(key="admin_role_user").input("bob")
    at.selectbox(key="admin_role_value").select("trainer")
    at.button[0].click().run()  # "Set role"
    assert not at.exception, at.exception
    assert at.success[0].value == "bob is now trainer."
    audit = [d.value for d in at.dataframe if "actor" in d.value.columns][0]
    assert list(audit["action"])[0] == "set_role" and list(audit["target"])[0] == "bob"
    assert 'bob" = "trainer"' in secrets.read_text()
    set_role("bob", Role.VIEWER, secrets)  # changed in the file: applies at the next sign-in or click
    at = sign_in("bob", "password-bob-1")
    assert any("role **viewer**" in c.value for c in at.sidebar.caption)


def test_an_admin_deletes_a_users_data_from_the_admin_page_after_confirming(app_env: Config) -> None:
    from dmac_core.logs.store import LearningStore

    users(("ann", Role.ADMIN))
    store = LearningStore(app_env.data_path, fsync=False)
    gone = store.append_interaction(prompt="Carl's secret plan", response="noted", model="deepseek", user="carl")
    kept = store.append_interaction(prompt="Ann's question", response="fine", model="deepseek", user="ann")
    at = sign_in("ann", "password-ann-1")
    at.switch_page("pages/admin.py").run()
    at.text_input(key="admin_delete_user").input("carl").run()
    at.button(key="admin_delete").click().run()
    assert "This cannot be undone" in at.warning[0].value
    assert [r["id"] for r in store.records("interactions")] == [gone.id, kept.id]  # nothing before the yes
    at.button(key="admin_delete_confirm").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Deleted 1 items of carl")
    assert [r["id"] for r in store.records("interactions")] == [kept.id]
    audit = [d.value for d in at.dataframe if "actor" in d.value.columns][0]
    assert list(audit["action"])[0] == "delete_user_data" and list(audit["target"])[0] == "carl"


def test_an_admin_creates_an_api_key_shown_once_and_revokes_it(app_env: Config) -> None:
    users(("ann", Role.ADMIN), ("bob", Role.ANALYST))
    at = sign_in("ann", "password-ann-1")
    at.switch_page("pages/admin.py").run()
    assert any("No API keys yet" in i.value for i in at.info)
    at.text_input(key="admin_key_user").input("bob")
    at.text_input(key="admin_key_label").input("notebook")
    at.number_input(key="admin_key_limit").set_value(30)
    [b for b in at.button if b.label == "Create key"][0].click().run()
    assert not at.exception, at.exception
    key = at.code[0].value
    security = dmac_core.get_learning_system().security
    record = security.key_user(key)
    assert record is not None and (record.user, record.label, record.requests_per_minute) == ("bob", "notebook", 30)
    table = [d.value for d in at.dataframe if "label" in d.value.columns][0]
    assert list(table["user"]) == ["bob"] and "sha256" not in table.columns and key not in table.to_string()
    at.run()  # the next render no longer shows the key
    assert not at.code
    at.button(key="admin_revoke").click().run()
    assert security.key_user(key) is None
    assert [e["action"] for e in security.audit.entries()][:2] == ["revoke_api_key", "create_api_key"]
