"""The second-opinion queue: send answers rated by one analyst to another, blind.

Agreement between analysts can only be measured on answers two of them rated, and in day-to-day
use almost every answer is rated once. A trainer picks an analyst and a sample size; that many
answers rated by exactly one *other* analyst (and not already waiting for a second opinion) are
drawn at random and assigned. The assignee sees them on the Feedback page without the first
rating, rates them as usual, and the assignment is done once they have.

Assignments are lines of ``<data_dir>/signals/second_opinions.jsonl`` (ids and user names
only, no texts), written under a lock so two trainers never assign the same answer twice.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd

from ..fsio import append_jsonl, exclusive_lock, read_jsonl
from ..logs.records import format_ts, new_id, utc_now
from ..logs.store import LearningStore
from .agreement import ratings_by_analyst

ASSIGNMENTS = Path("signals") / "second_opinions.jsonl"


def assignments_path(store: LearningStore) -> Path:
    return store.data_dir / ASSIGNMENTS


def assignments(store: LearningStore) -> list[dict[str, Any]]:
    """Every assignment ever made, oldest first."""
    return read_jsonl(assignments_path(store))


def _open(rows: list[dict[str, Any]], ratings: pd.DataFrame) -> list[dict[str, Any]]:
    """Assignments whose assignee has not rated the answer yet."""
    done = set(zip(ratings["item"], ratings["user"])) if len(ratings) else set()
    return [r for r in rows if (r["interaction_id"], r["assignee"]) not in done]


def candidates(store: LearningStore, assignee: str) -> list[tuple[str, str]]:
    """(interaction id, first rater) of answers rated by exactly one analyst other than
    ``assignee`` and not waiting for a second opinion already."""
    ratings = ratings_by_analyst(store)
    if ratings.empty:
        return []
    waiting = {r["interaction_id"] for r in _open(assignments(store), ratings)}
    linked = ratings[~ratings["item"].str.contains("\x00", regex=False)]  # only logged answers can be shown again
    per_item = linked.groupby("item")["user"].agg(list)
    return [(str(item), users[0]) for item, users in per_item.items()
            if len(users) == 1 and users[0] != assignee and item not in waiting]


def assign(store: LearningStore, assignee: str, assigned_by: str, n: int,
           seed: int | None = None) -> list[dict[str, Any]]:
    """Assign up to ``n`` random candidates (see :func:`candidates`) to ``assignee``; the
    assignments written (fewer than ``n`` when fewer answers qualify). Raises ``ValueError``
    for ``n`` < 1; nothing is written then."""
    if n < 1:
        raise ValueError("assign at least one answer")
    path = assignments_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / ".second_opinions.lock"):
        pool = candidates(store, assignee)
        picked = random.Random(seed).sample(pool, min(n, len(pool)))
        rows = [{"id": new_id(), "ts": format_ts(utc_now()), "interaction_id": iid, "assignee": assignee,
                 "assigned_by": assigned_by, "first_rater": first} for iid, first in picked]
        if rows:
            append_jsonl(path, rows)
    return rows


def waiting_for(store: LearningStore, user: str) -> list[dict[str, Any]]:
    """The answers waiting for ``user``'s second opinion: interaction id, prompt and answer —
    never the first rating (it would anchor theirs)."""
    mine = [r for r in _open(assignments(store), ratings_by_analyst(store)) if r["assignee"] == user]
    out = []
    for row in mine:
        interaction = store.get_interaction(row["interaction_id"])
        if interaction is not None:
            out.append({"interaction_id": row["interaction_id"], "prompt": interaction["prompt"],
                        "response": interaction["response"], "assigned_by": row["assigned_by"]})
    return out


def queue_summary(store: LearningStore) -> pd.DataFrame:
    """Per assignee: answers assigned, rated, still waiting."""
    rows = assignments(store)
    if not rows:
        return pd.DataFrame(columns=["assignee", "assigned", "rated", "waiting"])
    ratings = ratings_by_analyst(store)
    waiting = {r["id"] for r in _open(rows, ratings)}
    frame = pd.DataFrame(rows).assign(waiting=lambda f: f["id"].isin(waiting))
    summary = frame.groupby("assignee").agg(assigned=("id", "count"), waiting=("waiting", "sum")).reset_index()
    summary["rated"] = summary["assigned"] - summary["waiting"]
    return summary[["assignee", "assigned", "rated", "waiting"]]
