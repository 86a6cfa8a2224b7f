"""Topics: prompts embedded offline and clustered; where the local learner falls behind.

A topic is a cluster of prompt embeddings (spherical k-means, k chosen by silhouette). Per
topic the table gives volume, mean rating per model, evaluation scores, and the learner's
*gap*: the best model's mean rating there minus the learner's. ``impact = gap × volume`` —
a big gap on a topic nobody asks about matters less than a small gap on a busy one — and
the table is sorted by impact (then by mean rating, lowest first).

The fitted topics are saved to ``<data_dir>/insights/topics.json`` and reused until the set
of prompts changes, so :func:`TopicModel.topic_of` (used by routing) is a cheap nearest-
centroid lookup, not a re-clustering.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import LEARNER
from ..evaluation.evaluator import normalize_prompt
from ..fsio import atomic_write_json
from ..logs.store import LearningStore
from .embeddings import Embedder

MAX_TOPICS = 12
_SILHOUETTE_SAMPLE = 800  # silhouette is O(n²): score k on a sample
_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our out over own same she should so some
    such than that the their them then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    please tell explain give show make know need want use get like one two way much many""".split()
)


# -- the answers, with their ratings ------------------------------------------------------------
def answer_table(store: LearningStore) -> pd.DataFrame:
    """One row per answer: logged chat interactions (errors excluded) and standalone feedback.

    Columns: ``prompt, key (normalised prompt), interaction_id, model, model_version,
    response, ts, rating (mean of the latest rating per user, NaN if unrated), n_ratings,
    correction (newest analyst correction or None)``. Standalone feedback (no interaction) has
    ``model`` = None.
    """
    interactions = store.interactions()
    feedback = store.feedback()
    cols = ["prompt", "key", "interaction_id", "model", "model_version", "response", "ts", "rating", "n_ratings",
            "correction"]
    rows: list[dict[str, Any]] = []
    if not interactions.empty:
        ok = interactions[interactions["error"].isna() & (interactions["response"].fillna("").str.strip() != "")]
        if "purpose" in ok.columns:  # what analysts asked: not evaluation runs or the training teacher's calls
            ok = ok[ok["purpose"].fillna("chat") == "chat"]
        for r in ok[["id", "prompt", "model", "model_version", "response", "ts"]].to_dict("records"):
            rows.append({"prompt": r["prompt"], "interaction_id": r["id"], "model": r["model"],
                         "model_version": r["model_version"], "response": r["response"], "ts": r["ts"]})
    ratings: dict[Any, list[int]] = {}
    corrections: dict[Any, str] = {}
    standalone: dict[Any, dict[str, Any]] = {}
    for f in feedback.to_dict("records"):  # latest per (answer, user), in time order
        iid = f.get("interaction_id")
        about = iid if isinstance(iid, str) else (f["prompt"], f["response"])
        ratings.setdefault(about, []).append(int(f["rating"]))
        if isinstance(f.get("correction"), str) and f["correction"].strip():
            corrections[about] = f["correction"]
        if not isinstance(iid, str):  # rated without a logged interaction: an answer of its own
            standalone.setdefault(about, {"prompt": f["prompt"], "interaction_id": None, "model": None,
                                          "model_version": None, "response": f["response"], "ts": f["ts"],
                                          "_about": about})
    rows.extend(standalone.values())
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=cols)
    if "_about" not in table:
        table["_about"] = None
    table = table.reset_index(drop=True)
    about = [a if isinstance(a, tuple) else iid for a, iid in zip(table["_about"], table["interaction_id"])]
    table["rating"] = [float(np.mean(ratings[a])) if a in ratings else np.nan for a in about]
    table["n_ratings"] = [len(ratings.get(a, [])) for a in about]
    table["correction"] = [corrections.get(a) for a in about]
    table["key"] = table["prompt"].map(normalize_prompt)
    return table[cols]


# -- clustering ---------------------------------------------------------------------------------
def kmeans(vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) with k-means++ seeding; returns (labels, unit centroids)."""
    n = len(vectors)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centroids = [vectors[rng.integers(n)]]
    for _ in range(1, k):
        distance = np.clip(1.0 - np.max(vectors @ np.stack(centroids).T, axis=1), 0.0, None)
        total = distance.sum()
        pick = rng.choice(n, p=distance / total) if total > 0 else rng.integers(n)
        centroids.append(vectors[pick])
    centres = np.stack(centroids)
    labels = np.zeros(n, dtype=int)
    for step in range(iterations):
        new_labels = np.argmax(vectors @ centres.T, axis=1)
        if step and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = vectors[labels == j]
            if len(members):
                mean = members.sum(0)
                centres[j] = mean / max(np.linalg.norm(mean), 1e-9)
    return labels, centres


def silhouette(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with cosine distance (-1..1); 0 when it is undefined."""
    ids = np.unique(labels)
    if len(ids) < 2:
        return 0.0
    distance = 1.0 - vectors @ vectors.T
    scores = []
    for i in range(len(vectors)):
        own = labels == labels[i]
        if own.sum() < 2:
            scores.append(0.0)
            continue
        a = distance[i, own].sum() / (own.sum() - 1)
        b = min(distance[i, labels == j].mean() for j in ids if j != labels[i])
        scores.append((b - a) / max(a, b, 1e-9))
    return float(np.mean(scores))


def choose_k(vectors: np.ndarray, max_topics: int = MAX_TOPICS, seed: int = 0) -> int:
    """The number of topics with the best silhouette (1 for fewer than 4 prompts)."""
    n = len(vectors)
    if n < 4:
        return 1
    sample = vectors
    if n > _SILHOUETTE_SAMPLE:
        sample = vectors[np.random.default_rng(seed).choice(n, _SILHOUETTE_SAMPLE, replace=False)]
    best_k, best = 1, -1.0
    for k in range(2, min(max_topics, n // 2) + 1):
        labels, _ = kmeans(sample, k, seed)
        score = silhouette(sample, labels)
        if score > best + 1e-6:
            best_k, best = k, score
    return best_k


def keywords(texts_by_topic: dict[int, list[str]], top: int = 3) -> dict[int, list[str]]:
    """Top words per topic by class-based TF-IDF (frequent here, rare in other topics)."""
    counts = {t: Counter(w for text in texts for w in _words(text)) for t, texts in texts_by_topic.items()}
    spread = Counter(w for c in counts.values() for w in c)
    n = max(len(counts), 1)
    out = {}
    for t, c in counts.items():
        total = sum(c.values()) or 1
        scored = sorted(c, key=lambda w: (-(c[w] / total) * math.log(1 + n / spread[w]), w))
        out[t] = scored[:top]
    return out


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOPWORDS]


@dataclass
class TopicModel:
    """Fitted topics: unit centroids and keyword labels; ``topic_of`` is nearest centroid."""

    centroids: np.ndarray
    keywords: dict[int, list[str]] = field(default_factory=dict)
    fingerprint: str = ""

    def label(self, topic: int) -> str:
        return " · ".join(self.keywords.get(topic) or []) or f"topic {topic}"

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(vectors) @ self.centroids.T, axis=1) if len(vectors) else np.zeros(0, int)

    def topic_of(self, prompt: str, embedder: Embedder) -> int:
        """The topic of one prompt (nearest centroid)."""
        return int(self.assign(embedder.embed([prompt]))[0])

    def to_json(self) -> dict[str, Any]:
        return {"centroids": self.centroids.tolist(), "keywords": {str(k): v for k, v in self.keywords.items()},
                "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TopicModel":
        return cls(np.asarray(data["centroids"], np.float32), {int(k): v for k, v in data["keywords"].items()},
                   data.get("fingerprint", ""))


def topics_path(store: LearningStore) -> Path:
    return store.data_dir / "insights" / "topics.json"


def fit_topics(
    store: LearningStore, embedder: Embedder, n_topics: int | None = None, seed: int = 0, refit: bool = False
) -> TopicModel | None:
    """Cluster the distinct prompts of the logs; None when there are none.

    The result is saved and reused while the set of distinct prompts (and ``n_topics``) is unchanged.
    """
    answers = answer_table(store)
    if answers.empty:
        return None
    first = answers.drop_duplicates("key")
    prompts, keys = first["prompt"].tolist(), first["key"].tolist()
    fingerprint = hashlib.sha256(json.dumps([sorted(keys), n_topics, seed]).encode()).hexdigest()
    path = topics_path(store)
    if not refit and path.is_file():
        try:
            cached = TopicModel.from_json(json.loads(path.read_text(encoding="utf-8")))
            if cached.fingerprint == fingerprint:
                return cached
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: fit again
    vectors = embedder.embed(prompts)
    k = n_topics or choose_k(vectors, seed=seed)
    labels, centres = kmeans(vectors, k, seed)
    texts: dict[int, list[str]] = {j: [] for j in range(len(centres))}
    for prompt, label in zip(prompts, labels):
        texts[int(label)].append(prompt)
    model = TopicModel(centres.astype(np.float32), keywords(texts), fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    # readers see the old or the new topics, never half a file; a cache, so not synced to disk
    atomic_write_json(path, model.to_json(), durable=False, indent=None)
    return model


def with_topics(answers: pd.DataFrame, model: TopicModel, embedder: Embedder) -> pd.DataFrame:
    """``answers`` with a ``topic`` column (nearest centroid of each prompt)."""
    answers = answers.copy()
    answers["topic"] = model.assign(embedder.embed(answers["prompt"].tolist())) if len(answers) else []
    return answers


# -- the table --------------------------------------------------------------------------------
def _eval_scores(store: LearningStore, model: TopicModel, embedder: Embedder, metric: str) -> pd.DataFrame:
    """Mean per-item ``metric`` per (topic, evaluated model) from the evaluation results."""
    rows = []
    for record in store.records("evals"):
        for item in record.get("per_item") or []:
            value = item.get(metric)
            if isinstance(item.get("prompt"), str) and isinstance(value, (int, float)):
                rows.append({"prompt": item["prompt"], "model": record["model"], "value": float(value)})
    if not rows:
        return pd.DataFrame(columns=["topic", "model", "value"])
    frame = pd.DataFrame(rows)
    frame["topic"] = model.assign(embedder.embed(frame["prompt"].tolist()))
    return frame.groupby(["topic", "model"], as_index=False)["value"].mean()


def topic_table(
    store: LearningStore,
    embedder: Embedder,
    learner: str = LEARNER,
    n_topics: int | None = None,
    eval_metric: str = "rougeL",
) -> pd.DataFrame:
    """Per topic: volume, ratings per model, eval scores, the learner's gap and its impact.

    Columns: ``topic, label, volume, prompts, rated, mean_rating, best_model, best_rating,
    learner_rating, gap, impact``, then ``rating: <model>``, ``n: <model>`` and
    ``<eval_metric>: <model>`` per model. Sorted by impact (highest first; topics where the
    learner is unrated have no gap and come last), then by mean rating (lowest first).
    Empty frame when nothing is logged.
    """
    model = fit_topics(store, embedder, n_topics)
    if model is None:
        return pd.DataFrame()
    answers = with_topics(answer_table(store), model, embedder)
    evals = _eval_scores(store, model, embedder, eval_metric)
    rows = []
    for topic, group in answers.groupby("topic"):
        rated = group.dropna(subset=["rating"])
        per_model = rated.dropna(subset=["model"]).groupby("model")["rating"].agg(["mean", "count"])
        row: dict[str, Any] = {
            "topic": int(topic), "label": model.label(int(topic)), "volume": len(group),
            "prompts": group["key"].nunique(), "rated": len(rated),
            "mean_rating": float(rated["rating"].mean()) if len(rated) else np.nan,
        }
        if len(per_model):
            best = per_model["mean"].idxmax()
            row.update(best_model=str(best), best_rating=float(per_model.loc[best, "mean"]))
        learner_rating = float(per_model.loc[learner, "mean"]) if learner in per_model.index else np.nan
        row["learner_rating"] = learner_rating
        row["gap"] = row.get("best_rating", np.nan) - learner_rating
        row["impact"] = row["gap"] * row["volume"]
        for name, stats in per_model.iterrows():
            row[f"rating: {name}"] = float(stats["mean"])
            row[f"n: {name}"] = int(stats["count"])
        for r in evals[evals["topic"] == topic].to_dict("records"):
            row[f"{eval_metric}: {r['model']}"] = r["value"]
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("best_model", "best_rating"):
        if column not in table:
            table[column] = np.nan
    table = table.sort_values(["impact", "mean_rating"], ascending=[False, True], na_position="last")
    return table.reset_index(drop=True)


def topic_ratings(
    store: LearningStore, embedder: Embedder, window_days: float | None = None, n_topics: int | None = None
) -> dict[int, dict[str, tuple[float, int]]]:
    """Mean rating and count per model within each topic (answers logged by a model only).

    ``window_days`` keeps ratings of answers from the last N days (as ``best_rated`` does).
    """
    model = fit_topics(store, embedder, n_topics)
    if model is None:
        return {}
    answers = answer_table(store).dropna(subset=["rating", "model"])
    if window_days is not None and len(answers):
        cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=window_days)
        answers = answers[answers["ts"] >= cutoff]
    if answers.empty:
        return {}
    answers = with_topics(answers, model, embedder)
    out: dict[int, dict[str, tuple[float, int]]] = {}
    for (topic, name), group in answers.groupby(["topic", "model"]):
        out.setdefault(int(topic), {})[str(name)] = (float(group["rating"].mean()), int(len(group)))
    return out
