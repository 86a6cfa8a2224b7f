"""Admin: users and roles, API keys, sign-in lockouts, deleting a user's data, and the audit log."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dmac_core.system import ApiKeyError, DeletionRefused, PermissionDenied, Role
from pages.common import can, current_user, services

system = services()
security = system.security
actor = current_user()

# -- title, guard ------------------------------------------------------------------------------
st.title("🛡️ Admin")
st.caption("Who may do what on this workbench, who is locked out after failed sign-ins, and who did what.")
if not can("manage_users"):
    st.error("This page is for admins.", icon="⛔")
    st.stop()
roles = [role.label for role in sorted(Role, reverse=True)]

# -- users and roles ---------------------------------------------------------------------------
st.subheader("Users and roles")
st.caption("viewer: reads every page · analyst: chats, rates, reviews · trainer: trains, cancels, evaluates, "
           "imports and exports · admin: users, deletion, promote and roll back. Single-sign-on accounts get the "
           "role of their e-mail, else of their @domain; accounts matching neither are refused.")
users = pd.DataFrame(security.users_table(actor))
if users.empty:
    st.info("No users yet: sign-in is off and the workbench listens on this machine only.", icon="ℹ️")
else:
    st.dataframe(users, hide_index=True, width="stretch", key="admin_users")
with st.form("admin_set_role"):
    left, right = st.columns(2)
    who = left.text_input("User, e-mail or @domain", key="admin_role_user")
    role = right.selectbox("Role", roles, index=roles.index("analyst"), key="admin_role_value")
    if st.form_submit_button("Set role"):
        try:
            security.set_role(actor, who.strip(), role)
            st.success(f"{who.strip()} is now {role}.")
        except (ValueError, PermissionDenied) as exc:
            st.error(str(exc))
with st.form("admin_add_user", clear_on_submit=True):
    left, middle, right = st.columns(3)
    name = left.text_input("New user name", key="admin_new_user")
    password = middle.text_input("Password (at least 8 characters)", type="password", key="admin_new_password")
    new_role = right.selectbox("Role", roles, index=roles.index("analyst"), key="admin_new_role")
    if st.form_submit_button("Add user"):
        try:
            granted = security.add_user(actor, name.strip(), password, Role.parse(new_role))
            st.success(f"{name.strip()} can sign in now, as {granted.label}.")
        except (ValueError, PermissionDenied) as exc:
            st.error(str(exc))
if not users.empty:
    left, right = st.columns([2, 1])
    gone = left.selectbox("Remove a user or allow-list entry", list(users["user"]), key="admin_remove_pick")
    if right.button("Remove", key="admin_remove"):
        try:
            security.remove_user(actor, gone)
            st.success(f"{gone} removed. Their logged answers and ratings stay until their data is deleted "
                       "(`python -m dmac_core delete-user`).")
            st.rerun()
        except (ValueError, PermissionDenied) as exc:
            st.error(str(exc))

# -- API keys --------------------------------------------------------------------------------
st.subheader("API keys")
gateway = system.config.gateway
st.caption(f"Keys of the OpenAI-compatible API (http://{gateway.address}:{gateway.port}/v1). A key acts for its user "
           "with the user's role at the time of each request; every answer is logged under that user. Shown once "
           "when created, stored hashed.")
created = st.session_state.pop("admin_new_api_key", None)
if created:
    st.success(f"Key {created[0]} for {created[1]}: copy it now, it is not shown again.")
    st.code(created[2], language=None)
with st.form("admin_api_key", clear_on_submit=True):
    left, middle, right = st.columns(3)
    owner = left.text_input("For user", key="admin_key_user")
    label = middle.text_input("Label (what it is for)", key="admin_key_label")
    limit = right.number_input("Requests a minute (0: the default)", min_value=0, value=0, step=10,
                               key="admin_key_limit")
    if st.form_submit_button("Create key"):
        try:
            key, record = security.create_api_key(actor, owner.strip(), label, int(limit) or None)
            st.session_state.admin_new_api_key = (record.id, record.user, key)
            st.rerun()
        except (ApiKeyError, PermissionDenied) as exc:
            st.error(str(exc))
keys = pd.DataFrame(security.api_key_table(actor))
if keys.empty:
    st.info("No API keys yet.", icon="ℹ️")
else:
    for column in ("created", "revoked"):
        keys[column] = keys[column].map(lambda t: pd.Timestamp(t, unit="s").strftime("%Y-%m-%d %H:%M") if t else "")
    st.dataframe(keys, hide_index=True, width="stretch", key="admin_api_keys")
    live = [row["id"] for _, row in keys.iterrows() if not row["revoked"]]
    if live:
        left, right = st.columns([2, 1])
        doomed = left.selectbox("Revoke the key", live, key="admin_revoke_pick")
        if right.button("Revoke", key="admin_revoke"):
            security.revoke_api_key(actor, doomed)
            st.success(f"Key {doomed} is revoked: refused from the next request on.")
            st.rerun()

# -- lockouts ----------------------------------------------------------------------------------
st.subheader("Sign-in lockouts")
lockouts = security.lockouts(actor)
if not lockouts:
    st.info("Nobody is locked out.", icon="✅")
else:
    st.dataframe(pd.DataFrame([{"locked": lock.kind, "who": lock.key, "failures": lock.failures,
                                "until (UTC)": pd.Timestamp(lock.locked_until, unit="s").strftime("%Y-%m-%d %H:%M")}
                               for lock in lockouts]), hide_index=True, key="admin_lockouts")
    left, right = st.columns([2, 1])
    key = left.selectbox("Lift the lockout of", [lock.key for lock in lockouts], key="admin_unlock_pick")
    if right.button("Unlock", key="admin_unlock"):
        security.unlock(actor, key)
        st.success(f"{key} may sign in again.")
        st.rerun()

# -- deleting a user's data -------------------------------------------------------------------
st.subheader("Delete a user's data")
st.caption("A privacy request: their interactions and ratings, others' ratings of their answers, and every copy of "
           "their text under the data directory (evaluations, training runs' data, caches, quarantine, exports, "
           "images only they sent). Safe to repeat: a deletion cut short finishes when run again.")
target = st.text_input("User name (or SSO e-mail) whose data goes", key="admin_delete_user").strip()
if target and st.button(f"Delete every record of {target}", key="admin_delete"):
    st.session_state.admin_delete_pending = target  # asked once more before anything is removed
pending = st.session_state.get("admin_delete_pending")
if pending:
    st.warning(f"Delete everything {pending} wrote, and every copy of it? This cannot be undone.")
    yes, no = st.columns(2)
    if yes.button(f"Yes, delete {pending}'s data", key="admin_delete_confirm"):
        del st.session_state["admin_delete_pending"]
        bar = st.progress(0.0, text="Deleting…")
        try:
            report = system.delete_user_data(actor, pending,
                                             progress=lambda done, total: bar.progress(min(done / max(total, 1), 1.0)))
        except (DeletionRefused, PermissionDenied) as exc:
            st.error(str(exc))
        else:
            st.success(f"Deleted {report.total} items of {pending}.")
            st.dataframe(pd.DataFrame({"place": list(report.removed), "removed": list(report.removed.values())}),
                         hide_index=True, key="admin_delete_report")
            if report.versions:
                st.warning("Model versions trained on their data (weights cannot be untrained; serve another "
                           f"version): {', '.join(report.versions)}")
    if no.button("Cancel", key="admin_delete_cancel"):
        del st.session_state["admin_delete_pending"]
        st.rerun()

# -- audit log -------------------------------------------------------------------------------
st.subheader("Audit log")
entries = security.audit_entries(actor, limit=500)
if not entries:
    st.info("Nothing recorded yet: training, promotions, roll-backs, deletions and user changes appear here.",
            icon="ℹ️")
else:
    st.caption(f"The newest {len(entries)} events. Kept in the data directory's audit/ folder; never training data.")
    st.dataframe(pd.DataFrame(entries), hide_index=True, width="stretch", key="admin_audit")
