"""Topic-aware ``best_rated`` routing: rank models by their ratings *on the prompt's topic*.

Rule: a topic moves to the local learner once the learner is rated there at least
as well as the best other model, and not before.

- A model counts as rated on a topic with at least ``min_samples`` rated answers there.
- The learner is ranked only on its own topic ratings: being good at easy topics must not
  win it the hard ones. Without enough ratings on the topic it goes after every rated model.
- Other models use their topic rating when they have one, else their global rating (the
  premium model's quality is the safe default where it has not been rated on the topic).
- Ties go to the learner: "rated as well as" the premium model is enough (it is free).

With ``routing.rank_by: votes`` the same rule runs on Bradley–Terry strengths fitted on the
topic's blind votes (:mod:`dmac_core.signals.leaderboard`) instead of mean ratings, and a
model counts as rated on a topic with ``min_samples`` votes there.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pandas as pd

from ..config import LEARNER
from ..logs.store import LearningStore
from ..signals.leaderboard import recent, routing_strengths, vote_sides
from .embeddings import Embedder
from .topics import TopicModel, fit_topics, topic_ratings

Ratings = dict[str, tuple[float, int]]


def rank_models(
    order: list[str],
    topic: Ratings,
    overall: Ratings,
    min_samples: int,
    learner: str = LEARNER,
) -> list[str]:
    """Models in routing order for one topic (see the module docstring for the rule).

    ``order`` is the configured order (used for unrated models and equal ratings);
    ``topic`` and ``overall`` map model → (mean rating, count).
    """

    def estimate(name: str) -> float | None:
        mean, n = topic.get(name, (0.0, 0))
        if n >= min_samples:
            return mean
        if name == learner:
            return None
        mean, n = overall.get(name, (0.0, 0))
        return mean if n >= min_samples else None

    scored = [(name, estimate(name)) for name in order]
    rated = [(name, s) for name, s in scored if s is not None]
    rated.sort(key=lambda item: (-item[1], item[0] != learner, order.index(item[0])))
    return [name for name, _ in rated] + [name for name, s in scored if s is None]


class TopicRouter:
    """Per-topic ratings for the router, refreshed at most every ``refresh_s`` seconds.

    ``rank(order, prompt, overall, min_samples)`` → (ranked models, a note for the route reason).
    Any failure (no prompts yet, embedding model missing) falls back to ``overall`` ratings:
    routing must never fail because insights could not be computed.
    """

    def __init__(
        self,
        store: LearningStore,
        embedder: Embedder | Callable[[], Embedder],
        learner: str = LEARNER,
        window_days: float | None = None,
        refresh_s: float = 60.0,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self.learner = learner
        self.window_days = window_days
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._at = -1e18
        self._model: TopicModel | None = None
        self._ratings: dict[int, Ratings] = {}
        self._votes: pd.DataFrame | None = None  # recent votes with their topic, for rank_by votes

    @property
    def embedder(self) -> Embedder:
        if callable(self._embedder) and not hasattr(self._embedder, "embed"):
            self._embedder = self._embedder()  # built lazily: the first topic-aware request pays
        return self._embedder  # type: ignore[return-value]

    def refresh(self, force: bool = False) -> None:
        """Re-read topics and per-topic ratings when stale."""
        with self._lock:
            if not force and time.monotonic() - self._at < self.refresh_s:
                return
            self._model = fit_topics(self.store, self.embedder)
            self._ratings = topic_ratings(self.store, self.embedder, self.window_days) if self._model else {}
            self._votes = None  # topics may have moved: votes are assigned again when asked for
            self._at = time.monotonic()

    def topic_votes(self) -> pd.DataFrame:
        """Recent votes (within ``window_days``) with their sides' entries and prompt's topic."""
        self.refresh()
        with self._lock:
            if self._votes is None:
                votes = vote_sides(recent(self.store.votes(), self.window_days), self.learner)
                topics = self._model.assign(self.embedder.embed(votes["prompt"].tolist())) \
                    if self._model is not None and len(votes) else []
                self._votes = votes.assign(topic=list(topics)) if len(votes) else votes.assign(topic=[])
            return self._votes

    def topic_of(self, prompt: str) -> int | None:
        """The prompt's topic, or None before any prompt was logged."""
        self.refresh()
        return None if self._model is None else self._model.topic_of(prompt, self.embedder)

    def rank(self, order: list[str], prompt: str, overall: Ratings, min_samples: int, by: str = "ratings",
             served_version: str | None = None, both_bad: str = "tie") -> tuple[list[str], str]:
        """Models for ``prompt`` in routing order, and a short note saying why. ``by`` "votes":
        ``overall`` holds vote strengths, and the topic's strengths are fitted on its votes
        (the learner by its ``served_version``)."""
        try:
            topic = self.topic_of(prompt)
        except Exception as exc:  # noqa: BLE001 - a broken insights cache must not stop chat
            return rank_models(order, {}, overall, min_samples, self.learner), f"topic unknown ({type(exc).__name__})"
        if topic is None:
            return rank_models(order, {}, overall, min_samples, self.learner), "no topics yet"
        if by == "votes":
            votes = self.topic_votes()
            ratings = routing_strengths(votes[votes["topic"] == topic], served_version, self.learner, both_bad) \
                if len(votes) else {}
        else:
            ratings = self._ratings.get(topic, {})
        assert self._model is not None
        unit = "strength" if by == "votes" else ""
        shown = ", ".join(f"{m} {unit}{' ' if unit else ''}{mean:.1f} (n={n})"
                          for m, (mean, n) in sorted(ratings.items())) or ("no votes" if by == "votes" else "unrated")
        note = f"topic {topic} «{self._model.label(topic)}»: {shown}"
        return rank_models(order, ratings, overall, min_samples, self.learner), note
