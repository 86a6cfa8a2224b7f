"""A trained version answers the questions it was taught; every other question goes to its base.

Teaching a 135M model a dozen invented facts changes more than those facts: with LoRA on its
own, the weights that learned "The capital of Veloria is Marlenport." also answer "What is the
capital of Russia?" with an invented city. Measured on the shipped general-knowledge suite,
the adapter alone loses 6 to 17 of the 44 questions the base model answers right, whatever the
LoRA shape, learning rate or replay (bench/RESULTS.md, "Learning, measured"). So a version is
served with its **scope**: the prompts of the rated answers it was trained on, embedded with the
offline all-MiniLM-L6-v2. A question whose nearest taught prompt has cosine similarity ≥
``models.deepseek.scope.threshold`` is answered by the version (the rated question, the same
question in other words); any other question by the weights the adapter sits on (the base
model), exactly as before training. Every answer says which did and why (the route reason).

The threshold is the one number that decides; measured on the invented facts, rewordings of a
rated question score 0.82–0.99 against it, general questions at most 0.79 and everyday prompts
at most 0.57. The promotion gate measures versions with their scope, so a threshold that lets
general questions through to a version that forgot them is refused there, naming the answers.

``scope.json`` (the prompts) and ``scope.npy`` (their vectors) live in the version's directory;
a version without them (registered before scopes, or fully fine-tuned) answers every question.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fsio import atomic_write_bytes, atomic_write_json

SCOPE_FILE = "scope.json"
VECTORS_FILE = "scope.npy"
EMBEDDER_NAME = "all-MiniLM-L6-v2"


@dataclass
class Scope:
    """The prompts a version was taught, with their unit-length embeddings (n × dim)."""

    prompts: list[str]
    vectors: np.ndarray

    def nearest(self, vector: np.ndarray) -> tuple[float, str]:
        """Cosine similarity to the nearest taught prompt, and that prompt."""
        if not self.prompts:
            return 0.0, ""
        similarities = self.vectors @ np.asarray(vector, np.float32)
        best = int(np.argmax(similarities))
        return float(similarities[best]), self.prompts[best]


@dataclass(frozen=True)
class Routing:
    """Which weights answered one question, and why (kept on the answer's records)."""

    version: str  # the scoped version asked
    answered_by: str  # that version, or the base it sits on
    similarity: float
    threshold: float
    nearest: str

    @property
    def in_scope(self) -> bool:
        return self.answered_by == self.version

    def note(self) -> str:
        """One line for the route reason, e.g. ``v0002's scope: 0.41 < 0.80 → base answered``."""
        sign = "≥" if self.in_scope else "<"
        return (f"{self.version}'s scope: nearest taught question {self.similarity:.2f} {sign} {self.threshold:.2f} "
                f"→ {self.answered_by} answered")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "answered_by": self.answered_by, "similarity": round(self.similarity, 4),
                "threshold": self.threshold, "nearest": self.nearest}


def taught_prompts(examples: Sequence[dict[str, Any]]) -> list[str]:
    """The questions of a run's analysts' examples (the last user turn; replayed answers of the
    base model are not taught), each once, in order."""
    prompts = [ex["prompt"][-1]["content"] for ex in examples if not ex.get("replay") and ex.get("prompt")]
    return list(dict.fromkeys(p.strip() for p in prompts if p.strip()))


def write_scope(directory: Path, prompts: list[str], embedder: Any) -> None:
    """Write ``scope.json`` and ``scope.npy`` into a version's (staging) directory."""
    directory = Path(directory)
    vectors = np.asarray(embedder.embed(prompts), np.float32)
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    atomic_write_bytes(directory / VECTORS_FILE, buffer.getvalue())
    atomic_write_json(directory / SCOPE_FILE, {"embedder": EMBEDDER_NAME, "prompts": prompts}, indent=1)


def read_scope(directory: Path | None) -> Scope | None:
    """The scope stored with a version, or None when it has none (or it is unreadable)."""
    if directory is None:
        return None
    try:
        data = json.loads((Path(directory) / SCOPE_FILE).read_text(encoding="utf-8"))
        vectors = np.load(Path(directory) / VECTORS_FILE)
    except (OSError, ValueError):
        return None
    prompts = [str(p) for p in data.get("prompts") or []]
    if data.get("embedder") != EMBEDDER_NAME or len(prompts) != len(vectors):
        return None
    return Scope(prompts, vectors.astype(np.float32))
