"""Explanations: per-token confidence of local answers; nearest training examples of a version.

Per-token confidence is one forward pass of the local model over the chat-templated prompt
followed by the answer (teacher forcing): for each answer token, the probability the model
gave that token and the entropy of its whole predictive distribution there. This measures
the answer as logged, whatever sampling produced it. The routing reason needs no
computation: every interaction record carries ``route_reason``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backends.base import chat_messages
from ..logs.store import LearningStore
from .embeddings import Embedder

MAX_ANSWER_TOKENS = 512  # longer answers are scored on their first 512 tokens


@dataclass
class TokenScore:
    """One answer token: its text, the probability the model gave it, and the entropy (nats)."""

    token: str
    prob: float
    entropy: float


def _chat(prompt: str | list[dict[str, Any]], system: str | None) -> list[dict[str, str]]:
    """The chat as the tokenizer's template takes it: roles and contents as text."""
    return [{"role": str(m["role"]), "content": str(m.get("content", ""))} for m in chat_messages(prompt, system or "")]


def answer_token_scores(
    loaded: Any, prompt: str | list[dict[str, Any]], answer: str, system: str | None = None
) -> list[TokenScore]:
    """Probability and entropy per answer token under ``loaded`` (a backends.local.LoadedModel).

    ``prompt`` is the user turn (or the whole conversation up to it). The model is used under
    its lock: one forward pass at a time per model object, like generation.
    """
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    prefix = tokenizer.apply_chat_template(_chat(prompt, system), add_generation_prompt=True, tokenize=False)
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:MAX_ANSWER_TOKENS]
    if not answer_ids:
        return []
    ids = torch.tensor([prefix_ids + answer_ids])
    with loaded.lock, torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    # Position t predicts token t+1: the answer's tokens are predicted from len(prefix)-1 on.
    start = len(prefix_ids) - 1
    logp = torch.log_softmax(logits[start : start + len(answer_ids)], dim=-1)
    target = torch.tensor(answer_ids)
    probs = logp.gather(1, target[:, None])[:, 0].exp()
    entropy = -(logp.exp() * logp).sum(-1)
    pieces = [tokenizer.decode([t]) for t in answer_ids]
    return [TokenScore(p, float(q), float(h)) for p, q, h in zip(pieces, probs.tolist(), entropy.tolist())]


def mean_token_entropy(loaded: Any, prompt: str | list[dict[str, Any]], answer: str, system: str | None = None) -> float:
    """Mean predictive entropy (nats) over the answer's tokens; NaN for an empty answer."""
    scores = answer_token_scores(loaded, prompt, answer, system)
    return float(np.mean([s.entropy for s in scores])) if scores else float("nan")


# -- nearest training examples ----------------------------------------------------------------
def training_examples(store: LearningStore, metadata: dict[str, Any], runs_dir: Path | None = None) -> list[dict[str, Any]]:
    """The (prompt, answer) pairs a version was trained on.

    From the version's lineage (``lineage.feedback_ids``: the feedback records, their
    correction when they carry one), else from ``interaction_ids``, else from the run's
    ``data.json`` (``runs_dir/<run_id>/data.json``).
    """
    lineage = metadata.get("lineage") or {}
    feedback_ids = set(lineage.get("feedback_ids") or [])
    examples: list[dict[str, Any]] = []
    if feedback_ids:
        for row in store.records("feedback"):
            if row.get("id") in feedback_ids:
                correction = row.get("correction")
                answer = correction if isinstance(correction, str) and correction.strip() else row["response"]
                examples.append({"prompt": row["prompt"], "answer": answer, "rating": row.get("rating"),
                                 "source": f"feedback {row['id'][:8]}"})
    interaction_ids = set(lineage.get("interaction_ids") or [])
    if not examples and interaction_ids:
        for row in store.records("interactions"):
            if row.get("id") in interaction_ids:
                examples.append({"prompt": row["prompt"], "answer": row["response"], "rating": None,
                                 "source": f"interaction {row['id'][:8]}"})
    run_id = metadata.get("run_id")
    from_lineage = bool(examples)
    # The run's data.json, read once: every example when the lineage named none, and the
    # replayed base answers (trained to keep general knowledge) in any case.
    if run_id and runs_dir is not None and (not from_lineage or lineage.get("replay")):
        for ex in _run_train_examples(runs_dir / run_id / "data.json"):
            replayed = bool(lineage.get("replay") and ex.get("replay"))
            if from_lineage and not replayed:
                continue
            examples.append({"prompt": _last_text(ex["prompt"]), "answer": _last_text(ex["completion"]),
                             "rating": None if replayed else ex.get("rating"),
                             "source": "replay (base model's own answer)" if replayed else f"run {run_id}"})
    # One row per distinct pair: ratings by several analysts are the same example.
    unique = {(e["prompt"], e["answer"]): e for e in examples}
    return list(unique.values())


def _run_train_examples(path: Path) -> list[dict[str, Any]]:
    """The SFT training examples a run recorded in its data.json ([] when there is none)."""
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("sft_train") or []


def _last_text(turns: Any) -> str:
    """The text of a chat example's last message (or the plain string)."""
    return turns[-1]["content"] if isinstance(turns, list) else str(turns)


def nearest_training_examples(
    store: LearningStore,
    registry: Any,
    version_id: str,
    prompt: str,
    embedder: Embedder,
    k: int = 5,
    runs_dir: Path | None = None,
) -> pd.DataFrame:
    """The ``k`` training examples of ``version_id`` whose prompts are closest to ``prompt``.

    Columns: ``similarity, prompt, answer, rating, source`` (most similar first). Empty for
    the base model or a version without recorded lineage.
    """
    columns = ["similarity", "prompt", "answer", "rating", "source"]
    version = registry.get(version_id)
    if version.is_base:
        return pd.DataFrame(columns=columns)
    examples = training_examples(store, version.metadata, runs_dir or store.data_dir / "runs")
    # A version that continued another (transfer learning) also carries what its parents learned.
    seen = {version.id}
    parent = version.metadata.get("parent_version")
    while parent and parent not in seen and parent != "base":
        seen.add(parent)
        try:
            metadata = registry.get(parent).metadata
        except Exception:  # a removed parent: its examples are gone, the rest still explain
            break
        inherited = training_examples(store, metadata, runs_dir or store.data_dir / "runs")
        examples += [{**e, "source": f"{parent}: {e['source']}"} for e in inherited]
        parent = metadata.get("parent_version")
    if not examples:
        return pd.DataFrame(columns=columns)
    vectors = embedder.embed([e["prompt"] for e in examples])
    similarity = vectors @ embedder.embed([prompt])[0]
    frame = pd.DataFrame(examples)
    frame["similarity"] = similarity.astype(float)
    return frame.sort_values("similarity", ascending=False).head(k)[columns].reset_index(drop=True)
