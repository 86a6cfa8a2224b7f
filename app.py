"""DMac Learning Workbench — Streamlit entry point: sign-in gate, page registry, services.

Run with ``make run`` (or ``python -m dmac_core serve``). Pages are thin; the logic lives in
``dmac_core``.
"""

from __future__ import annotations

import streamlit as st

from dmac_core.auth import check_credentials, load_users, oidc_configured
from dmac_core.config import ConfigError

st.set_page_config(page_title="DMac Learning Workbench", page_icon="🧠", layout="wide")


def sign_in_page() -> None:
    st.title("🔐 Sign in")
    st.caption("DMac Learning Workbench — your ratings are saved under your name.")
    with st.form("sign_in"):
        user = st.text_input("User name", key="sign_in_user")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in")
    if oidc_configured() and st.button("Sign in with single sign-on instead", key="sso_login"):
        st.login()
    if submitted:
        if check_credentials(user, password, load_users()):
            st.session_state["dmac_user"] = user
            st.rerun()
        else:
            st.error("Wrong user name or password.")


def sso_page() -> None:
    st.title("🔐 Sign in")
    st.caption("DMac Learning Workbench — sign in with your organisation's account.")
    if st.button("Sign in with single sign-on", key="sso_login"):
        st.login()


def main() -> None:
    try:
        users = load_users()
    except ValueError as exc:
        st.error(f"Sign-in is misconfigured: {exc}")
        st.stop()
    if oidc_configured() and not st.session_state.get("dmac_user"):
        if st.user.is_logged_in:
            st.session_state["dmac_user"] = str(st.user.get("email") or st.user.get("name") or "sso-user")
        elif not users:
            st.navigation([st.Page(sso_page, title="Sign in", icon="🔐")]).run()
            return
    if users and not st.session_state.get("dmac_user"):
        st.navigation([st.Page(sign_in_page, title="Sign in", icon="🔐")]).run()
        return
    try:
        from pages.common import services

        system = services()
    except ConfigError as exc:
        st.error(str(exc))
        st.stop()
    pages = [
        st.Page("pages/chat.py", title="Chat", icon="💬", default=True),
        st.Page("pages/feedback.py", title="Feedback", icon="⭐"),
        st.Page("pages/training.py", title="Training", icon="🏋️"),
        st.Page("pages/metrics.py", title="Metrics", icon="📈"),
        st.Page("pages/insights.py", title="Insights", icon="🔎"),
    ]
    with st.sidebar:
        st.caption(f"Signed in as **{st.session_state.get('dmac_user') or 'local'}**")
        served = system.registry.served_id()
        st.caption(f"Serving DeepSeek-RL version `{served}`")
        problem = system.version_problem(served)
        if problem:
            st.error(f"Version {served} cannot be loaded ({problem}): DeepSeek-RL is off until it is rolled "
                     "back or another version is served (Training page).", icon="⛔")
        if users and st.button("Sign out", key="sign_out"):
            st.session_state.pop("dmac_user", None)
            st.rerun()
    st.navigation(pages).run()


main()
