"""The blind arena: two contestants answer one question side by side, an analyst votes.

A contestant is a model name as the router takes it: an API model (``"gemini"``) or one version
of the local learner (``"deepseek@v0003"``), so the served version and the one served before
it compete as two contestants. Both answers go through the router like any chat answer
(caps and usage count, each is an ordinary interaction record); the vote names the two
interactions and is checked against them (:func:`record_vote`): the models and versions on the
record are read from the interaction log, never taken from the page that shows them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from ..learner.registry import ModelRegistry
from ..logs.records import RecordError, Vote
from ..logs.store import LearningStore
from .router import ChatResult, ModelManager, split_model


class ArenaError(ValueError):
    """A comparison cannot be run as asked (too few contestants, the same one twice)."""


@dataclass
class ArenaRound:
    """One blind comparison: the question and the answers shown as A and B."""

    prompt: str
    contestant_a: str
    contestant_b: str
    a: ChatResult
    b: ChatResult


def contestants(manager: ModelManager, registry: ModelRegistry, learner: str,
                problem: Callable[[str], str | None], every_version: bool = False) -> list[str]:
    """Who can answer a comparison now: each API model that is on, not cooling down and under
    its caps, and the learner as its served version and the version served before it
    (``every_version``: every loadable version and the base, for an analyst who picks the two).
    Versions whose files cannot be loaded are left out."""
    available = [name for name in manager.backends if manager.why_not(name) is None]
    out = [name for name in available if name != learner]
    if learner not in available:
        return out
    served = registry.served_id()
    if every_version:
        versions = [served] + [v.id for v in reversed(registry.versions())] + ["base"]
    else:
        versions = [served, registry.previous_id() or served]
    learner_sides = [f"{learner}@{v}" for v in dict.fromkeys(versions) if not problem(v)]
    return learner_sides + out


def pick_pair(pool: list[str], rng: random.Random) -> tuple[str, str]:
    """Two different contestants at random, in random order (which is A is random too)."""
    if len(set(pool)) < 2:
        raise ArenaError("A comparison needs two models that can answer now; only "
                         f"{', '.join(pool) or 'none'} can. Switch on an API model or train a second version.")
    a, b = rng.sample(sorted(set(pool)), 2)
    return a, b


def answer_both(manager: ModelManager, prompt: str, pair: tuple[str, str], user: str,
                session_id: str) -> ArenaRound:
    """Ask both contestants the same single-turn question through the router (each answer is
    logged as a chat interaction). Raises :class:`ArenaError` for a pair that is one contestant
    twice, the router's ``RoutingError`` or a ``ValueError`` when a side cannot answer (the side
    that did answer stays logged, as any chat answer)."""
    if pair[0] == pair[1]:
        raise ArenaError(f"Pick two different contestants (both are {pair[0]}).")
    results = [manager.respond(prompt, model=side, user=user, session_id=session_id) for side in pair]
    return ArenaRound(prompt=prompt, contestant_a=pair[0], contestant_b=pair[1], a=results[0], b=results[1])


def contestant_label(manager: ModelManager, contestant: str, served: str) -> str:
    """How a contestant is named once the vote is in, e.g. "DeepSeek-RL v0003 (served)"."""
    name, version = split_model(contestant)
    label = manager.display_name(name)
    if version is None:
        return label
    return f"{label} {version}" + (" (served)" if version == served else "")


def record_vote(store: LearningStore, interaction_a: str, interaction_b: str, choice: str, note: str,
                user: str, learner: str) -> Vote:
    """Append a vote on two logged answers to one prompt; returns the record.

    The prompt, the models and (for the learner) the versions are read from the two
    interaction records. Raises :class:`RecordError`, writing nothing, for an unknown id, a
    side that failed or answered nothing, two answers to different prompts, or a choice other
    than a / b / tie / both_bad.
    """
    sides: list[dict[str, Any]] = []
    for iid in (interaction_a, interaction_b):
        row = store.get_interaction(iid) if isinstance(iid, str) and iid else None
        if row is None:
            raise RecordError(f"Refused vote, nothing written: no interaction with id {iid!r}")
        if row.get("error") or not str(row.get("response") or "").strip():
            raise RecordError(f"Refused vote, nothing written: interaction {iid} has no answer to judge")
        sides.append(row)

    def version(row: dict[str, Any]) -> str | None:
        return str(row["model_version"]) if row.get("model") == learner and row.get("model_version") else None

    return store.append_vote(
        user=user, prompt=sides[0]["prompt"], interaction_a=interaction_a, interaction_b=interaction_b,
        model_a=sides[0]["model"], model_b=sides[1]["model"], version_a=version(sides[0]),
        version_b=version(sides[1]), choice=choice, note=note,
    )


__all__ = ["ArenaError", "ArenaRound", "answer_both", "contestant_label", "contestants", "pick_pair", "record_vote"]
