"""DMac Learning Workbench — Streamlit entry point: sign-in gate, roles, page registry.

Run with ``make run`` (or ``python -m dmac_core serve``). Pages are thin; the logic lives in
``dmac_core``. Sign-in is required whenever password users or single sign-on are configured
in ``.streamlit/secrets.toml``; a session ends after a while without use, at the latest some
hours after signing in, and "Sign out" ends it (and the single-sign-on login) at once.
"""

from __future__ import annotations

import time

import streamlit as st

from dmac_core.config import ConfigError

st.set_page_config(page_title="DMac Learning Workbench", page_icon="🧠", layout="wide")

_SESSION_KEYS = ("dmac_user", "dmac_signed_in_at", "dmac_last_seen", "dmac_via")


def _start_session(user: str, via: str) -> None:
    now = time.time()
    st.session_state.update(dmac_user=user, dmac_signed_in_at=now, dmac_last_seen=now, dmac_via=via)


def _end_session(notice: str | None = None) -> None:
    """Forget the signed-in user; a single-sign-on login is ended too (its cookie removed),
    so the identity provider's session does not sign the browser straight back in."""
    via = st.session_state.get("dmac_via")
    for key in _SESSION_KEYS:
        st.session_state.pop(key, None)
    if notice:
        st.session_state["dmac_notice"] = notice
    if via == "sso":
        st.session_state["dmac_sso_signed_out"] = True
        st.logout()


def sign_in_page() -> None:
    from pages.common import services

    security = services().security
    st.title("🔐 Sign in")
    st.caption("DMac Learning Workbench — your ratings are saved under your name.")
    notice = st.session_state.pop("dmac_notice", None)
    if notice:
        st.info(notice, icon="⏱️")
    if security.password_sign_in():
        with st.form("sign_in"):
            user = st.text_input("User name", key="sign_in_user")
            password = st.text_input("Password", type="password", key="sign_in_password")
            submitted = st.form_submit_button("Sign in")
        if submitted:
            address = st.context.ip_address  # None behind some proxies and in tests: one shared bucket
            result = security.sign_in(user, password, address if isinstance(address, str) and address else "unknown")
            if result.user:
                _start_session(result.user, "password")
                st.rerun()
            st.error(result.message or "Sign-in failed.")
    if security.single_sign_on():
        label = "Sign in with single sign-on" + (" instead" if security.password_sign_in() else "")
        if st.button(label, key="sso_login"):
            st.session_state.pop("dmac_sso_signed_out", None)
            st.login()


def _signed_in_user() -> str | None:
    """The signed-in user after the session checks, or None (the sign-in page is shown)."""
    from pages.common import services

    security = services().security
    if st.session_state.get("dmac_user"):
        now = time.time()
        expired = security.session_expiry(st.session_state["dmac_signed_in_at"],
                                          st.session_state["dmac_last_seen"], now)
        if expired:
            _end_session(expired)
            return None
        st.session_state["dmac_last_seen"] = now
        return str(st.session_state["dmac_user"])
    if security.single_sign_on() and st.user.is_logged_in and not st.session_state.get("dmac_sso_signed_out"):
        email = str(st.user.get("email") or "")
        refusal = security.sso_refusal(email) if email else "Your identity provider sent no e-mail address."
        if refusal:
            st.error(refusal, icon="⛔")
            if st.button("Sign out", key="sso_refused_sign_out"):
                st.logout()
            st.stop()
        _start_session(email, "sso")
        return email
    return None


def main() -> None:
    try:
        from pages.common import services

        system = services()
        security = system.security
        required = security.sign_in_required()
    except (ConfigError, ValueError) as exc:  # a broken config or secrets file: say which, start nothing
        st.error(f"The workbench cannot start: {exc}")
        st.stop()
    user = _signed_in_user() if required else None
    if required and user is None:
        st.navigation([st.Page(sign_in_page, title="Sign in", icon="🔐")]).run()
        return
    user = user or "local"
    role = security.role_of(user)
    if role is None:
        st.error(f"{user} has no role on this workbench any more. Ask an admin.", icon="⛔")
        if st.button("Sign out", key="sign_out_no_role"):
            _end_session()
            st.rerun()
        st.stop()
    pages = [
        st.Page("pages/chat.py", title="Chat", icon="💬", default=True),
        st.Page("pages/feedback.py", title="Feedback", icon="⭐"),
        st.Page("pages/training.py", title="Training", icon="🏋️"),
        st.Page("pages/metrics.py", title="Metrics", icon="📈"),
        st.Page("pages/insights.py", title="Insights", icon="🔎"),
    ]
    if security.can(user, "manage_users"):
        pages.append(st.Page("pages/admin.py", title="Admin", icon="🛡️"))
    page = st.navigation(pages)  # before the sidebar: elements drawn ahead of it go when the page changes
    with st.sidebar:
        st.caption(f"Signed in as **{user}** · role **{role.label}**")
        served = system.served_version()
        st.caption(f"Serving DeepSeek-RL version `{served}`")
        problem = system.version_problem(served)
        if problem:
            st.error(f"Version {served} cannot be loaded ({problem}): DeepSeek-RL is off until it is rolled "
                     "back or another version is served (Training page).", icon="⛔")
        if required and st.button("Sign out", key="sign_out"):
            _end_session("You are signed out.")
            st.rerun()
    page.run()


main()
