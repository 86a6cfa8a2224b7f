"""Shared page helpers: the cached services, the signed-in user and their role, notices. UI only."""

from __future__ import annotations

import streamlit as st

from dmac_core.system import LearningSystem


@st.cache_resource(show_spinner="Starting the workbench…")
def services() -> LearningSystem:
    """One LearningSystem per server process, shared by every browser session."""
    from dmac_core import get_learning_system

    system = get_learning_system()
    system.start_schedule()  # periodic training, when the config switches it on
    return system


def current_user() -> str:
    """The signed-in user, or "local" when sign-in is not configured (loopback only)."""
    return str(st.session_state.get("dmac_user") or "local")


def can(action: str) -> bool:
    """Whether the signed-in user's role allows ``action`` (``"chat"``, ``"train"``, ``"promote"``…)."""
    return services().security.can(current_user(), action)


def role_label() -> str:
    role = services().security.role_of(current_user())
    return role.label if role else "no role"


def not_allowed(what: str, action: str) -> None:
    """Say, in place of a control, that the user's role does not allow it and which role would."""
    needed = services().security.required_role(action)
    st.caption(f"🔒 {what}: your role ({role_label()}) cannot; it needs {needed} or above.")


def show_log_health(system: LearningSystem) -> None:
    """Tell the analyst when unreadable log lines were skipped (nothing is lost silently)."""
    for item in system.log_health():
        if item.skipped:
            st.warning(f"⚠️ {item.notice()}. Run `python -m dmac_core doctor` to inspect or quarantine them.")


def empty_state(message: str) -> None:
    st.info(message, icon="ℹ️")
