"""Roles and what each may do.

Four roles, each including everything the ones below it may do:

- ``viewer``: read every page (answers, ratings, runs, metrics), change nothing;
- ``analyst``: chat, rate, vote in blind comparisons, review and correct answers, work on the
  learning queue;
- ``trainer``: start and cancel training, evaluate and compare models, import and export logs,
  ask the LLM judge to label answers, send rated answers to a second analyst;
- ``admin``: users and roles, deleting a user's data, promoting and rolling back versions,
  the configuration and the sign-in lockouts.

Every verb of the workbench that changes something names the action it needs
(:data:`Action`); pages and CLI commands check it through :func:`require` before they act.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal


class Role(IntEnum):
    """Ordered: a role may do everything a lower one may."""

    VIEWER = 1
    ANALYST = 2
    TRAINER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Role":
        """The role named ``text`` (case-insensitive); ValueError naming the choices otherwise."""
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: use one of {', '.join(ROLE_NAMES)}") from None


ROLE_NAMES = tuple(role.label for role in Role)

Action = Literal[
    "view", "chat", "rate", "vote", "review", "train", "cancel", "evaluate", "import", "export", "judge",
    "assign_reviews",
    "promote", "rollback", "manage_users", "delete_user_data", "configure",
]

# The lowest role allowed each action.
REQUIRED_ROLE: dict[str, Role] = {
    "view": Role.VIEWER,
    "chat": Role.ANALYST,
    "rate": Role.ANALYST,
    "vote": Role.ANALYST,
    "review": Role.ANALYST,
    "train": Role.TRAINER,
    "cancel": Role.TRAINER,
    "evaluate": Role.TRAINER,
    "import": Role.TRAINER,
    "export": Role.TRAINER,
    "judge": Role.TRAINER,
    "assign_reviews": Role.TRAINER,
    "promote": Role.ADMIN,
    "rollback": Role.ADMIN,
    "manage_users": Role.ADMIN,
    "delete_user_data": Role.ADMIN,
    "configure": Role.ADMIN,
}


class PermissionDenied(PermissionError):
    """A user's role does not allow an action; the message says which role would."""


def allowed(role: Role | None, action: str) -> bool:
    """Whether ``role`` (None: no role at all) may do ``action``."""
    return role is not None and role >= REQUIRED_ROLE[action]


def require(user: str, role: Role | None, action: str) -> None:
    """Raise :class:`PermissionDenied` unless ``role`` may do ``action``."""
    if not allowed(role, action):
        needed = REQUIRED_ROLE[action].label
        have = f"the role {role.label}" if role is not None else "no role"
        raise PermissionDenied(f"{user} has {have}; {action.replace('_', ' ')} needs {needed} or above")
