"""The active-learning queue: prompts where the learner most needs an analyst.

A prompt enters the queue for any of three reasons, each with a strength in 0..1:

- **uncertain** — the local learner's logged answer has a high mean token entropy (the
  version that wrote it was unsure; see :mod:`.explain` and :mod:`.confidence`);
- **disagree** — different models answered it differently: low similarity (mean of ROUGE-L
  F and embedding cosine) between two models' answers;
- **low rating** — an answer to it was rated ``<= max_rating_for_negative``.

A prompt leaves the queue once it has something good to learn from: an analyst correction
or an answer rated ``>= min_rating_for_sft``. Working an item writes exactly that:

- ``answer``: the analyst's own answer, as feedback with ``correction`` and rating 5;
- ``rate``: a rating (and note) for one logged answer;
- ``teacher``: ask the premium model through the router (its usage caps apply), log it like
  any interaction, and store its answer as a rated reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..config import LEARNER, Config, GeminiModelConfig, LocalModelConfig
from ..logs.records import Feedback
from ..logs.store import LearningStore
from .embeddings import Embedder
from .topics import answer_table

# Mean token entropy (nats) above which a learner answer counts as uncertain. Measured on the
# bundled SmolLM2-135M (fp32, tests/test_insights.py): "The capital of France is Paris." 0.75,
# a nonsense answer to the same question 5.31.
UNCERTAIN_ABOVE = 2.5
DISAGREE_BELOW = 0.5  # similarity (mean of ROUGE-L F and cosine) below which answers disagree
MAX_ENTROPY_ITEMS = 100  # newest learner answers scored per queue build (each is a forward pass)

# an answer row → mean token entropy (nats); None while it is still being computed
EntropyFn = Callable[[dict[str, Any]], "float | None"]


@dataclass
class QueueItem:
    """One prompt waiting for an analyst, with why it is here and the answers it has."""

    prompt: str
    key: str
    score: float
    reasons: dict[str, float] = field(default_factory=dict)  # reason → strength (0..1)
    answers: list[dict[str, Any]] = field(default_factory=list)  # interaction_id, model, response, rating
    details: dict[str, Any] = field(default_factory=dict)  # entropy, similarity, min_rating

    @property
    def reason_text(self) -> str:
        return ", ".join(self.reasons)


def learner_entropy_fn(scorer: Any, store: LearningStore) -> EntropyFn:
    """An :data:`EntropyFn` over a :class:`~dmac_core.insights.confidence.ConfidenceScorer`:
    each answer scored by the version that wrote it, in the background; ``None`` until known."""

    def entropy(row: dict[str, Any]) -> float | None:
        interaction = store.get_interaction(row["interaction_id"]) if row.get("interaction_id") else None
        return scorer.mean_entropy(interaction) if interaction is not None else None

    return entropy


def _similarity(a: str, b: str, va: np.ndarray, vb: np.ndarray) -> float:
    from rouge_score import rouge_scorer

    rouge = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    return 0.5 * (float(rouge) + float(np.clip(va @ vb, 0.0, 1.0)))


def build_queue(
    store: LearningStore,
    embedder: Embedder,
    *,
    learner: str = LEARNER,
    entropy_fn: EntropyFn | None = None,
    min_rating_for_sft: int = 4,
    max_rating_for_negative: int = 2,
    uncertain_above: float = UNCERTAIN_ABOVE,
    disagree_below: float = DISAGREE_BELOW,
    limit: int = 50,
) -> list[QueueItem]:
    """Open queue items, strongest first (see the module docstring for the rules).

    ``entropy_fn`` scores the learner's answers (e.g. :func:`learner_entropy_fn`); without it
    uncertainty is not considered (no local model needed).
    """
    answers = answer_table(store)
    if answers.empty:
        return []
    resolved = set(answers.loc[answers["correction"].notna(), "key"])
    resolved |= set(answers.loc[answers["rating"] >= min_rating_for_sft, "key"])
    open_answers = answers[~answers["key"].isin(resolved)]
    if open_answers.empty:
        return []
    items: dict[str, QueueItem] = {}

    def item(key: str, group: pd.DataFrame) -> QueueItem:
        if key not in items:
            shown = group[["interaction_id", "model", "response", "rating"]].to_dict("records")
            items[key] = QueueItem(prompt=str(group["prompt"].iloc[-1]), key=key, score=0.0, answers=shown)
        return items[key]

    groups = dict(tuple(open_answers.groupby("key", sort=False)))
    # Low ratings: the further below the threshold, the stronger.
    for key, group in groups.items():
        low = group["rating"].min()
        if not math.isnan(low) and low <= max_rating_for_negative:
            it = item(key, group)
            it.reasons["low rating"] = (max_rating_for_negative + 1 - low) / max_rating_for_negative
            it.details["min_rating"] = float(low)
    # Disagreement: the least similar pair of answers from two different models.
    multi = {k: g for k, g in groups.items() if g["model"].dropna().nunique() >= 2}
    if multi:
        texts = sorted({t for g in multi.values() for t in g["response"]})
        vectors = dict(zip(texts, embedder.embed(texts)))
        for key, group in multi.items():
            rows = group.dropna(subset=["model"]).to_dict("records")
            pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1 :] if a["model"] != b["model"]]
            worst = min(_similarity(a["response"], b["response"], vectors[a["response"]], vectors[b["response"]])
                        for a, b in pairs)
            if worst < disagree_below:
                it = item(key, group)
                it.reasons["disagree"] = (disagree_below - worst) / disagree_below
                it.details["similarity"] = round(worst, 3)
    # Uncertainty: the newest learner answers, one forward pass each (computed in the background).
    if entropy_fn is not None:
        mine = open_answers[open_answers["model"] == learner].sort_values("ts").tail(MAX_ENTROPY_ITEMS)
        for row in mine.to_dict("records"):
            value = entropy_fn(row)
            if value is not None and not math.isnan(value) and value > uncertain_above:
                it = item(row["key"], groups[row["key"]])
                strength = min(1.0, (value - uncertain_above) / uncertain_above)
                if strength >= it.reasons.get("uncertain", -1):
                    it.reasons["uncertain"] = strength
                    it.details["entropy"] = round(value, 3)
    for it in items.values():
        # Several reasons at once are worth more than one strong reason.
        it.score = round(sum(it.reasons.values()) + 0.1 * len(it.reasons), 4)
    return sorted(items.values(), key=lambda i: -i.score)[:limit]


def premium_model(config: Config) -> str | None:
    """The teacher: the first enabled Gemini model, else the first enabled non-local model."""
    models = [(n, m) for n, m in config.models.items() if m.enabled and not isinstance(m, LocalModelConfig)]
    for name, model in models:
        if isinstance(model, GeminiModelConfig):
            return name
    return models[0][0] if models else None


class WorkError(ValueError):
    """An action on a queue item was refused; nothing was written."""


def work_item(
    store: LearningStore,
    item: QueueItem,
    action: str,
    *,
    user: str = "anonymous",
    answer: str | None = None,
    rating: int | None = None,
    note: str = "",
    interaction_id: str | None = None,
    manager: Any = None,
    teacher: str | None = None,
    teacher_rating: int = 5,
) -> Feedback:
    """Do one action on a queue item; returns the feedback record written.

    - ``answer``: needs ``answer``; writes prompt + the analyst's answer, rating 5, as a correction.
    - ``rate``: needs ``rating`` and the answer's ``interaction_id`` (default: the item's
      first answer); writes that rating with ``note``.
    - ``teacher``: needs ``manager`` (a ModelManager) and ``teacher`` (model name); asks it
      through the router — caps, cooldowns and logging apply, a refusal raises RoutingError —
      and records its answer as the reference, rated ``teacher_rating`` under the user
      ``teacher:<model>`` (the analyst who asked is named in the note).
    """
    if action == "answer":
        if not answer or not answer.strip():
            raise WorkError("Write an answer first: an empty answer teaches nothing.")
        return store.append_feedback(
            prompt=item.prompt, response=answer.strip(), rating=5, correction=answer.strip(),
            feedback=note or "analyst answer (active learning)", user=user,
        )
    if action == "rate":
        if rating is None:
            raise WorkError("Choose a rating from 1 to 5 first.")
        target = next((a for a in item.answers if interaction_id is None or a["interaction_id"] == interaction_id), None)
        if target is None:
            raise WorkError(f"No answer {interaction_id!r} in this queue item.")
        if target["interaction_id"]:
            return store.append_feedback(interaction_id=target["interaction_id"], rating=rating, feedback=note, user=user)
        return store.append_feedback(prompt=item.prompt, response=target["response"], rating=rating, feedback=note,
                                     user=user)
    if action == "teacher":
        if manager is None or not teacher:
            raise WorkError("No premium model is configured to act as teacher.")
        result = manager.respond(item.prompt, model=teacher, user=user, session_id="active-learning")
        if not result.text.strip():
            raise WorkError(f"{teacher} gave an empty answer; nothing to learn from.")
        # the rating is the teacher's, not the analyst's: it is recorded under the teacher's name,
        # so per-analyst counts and agreement never mistake it for an analyst's 5
        return store.append_feedback(
            interaction_id=result.interaction_id, rating=teacher_rating, user=f"teacher:{teacher}",
            feedback=note or f"teacher reference from {teacher}, asked for by {user} (active learning)",
        )
    raise WorkError(f"Unknown action {action!r}; expected answer, rate or teacher.")
