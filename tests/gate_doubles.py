"""Scripted evidence for the promotion gate, for tests of the training job's mechanics.

The tiny random Llama that keeps most tests fast cannot learn a visible answer in a few steps,
so the real gate (rightly) refuses every version it makes. Tests about what happens *after*
a verdict — serving without a restart, rollback, lineage, transfer — give the gate scripted
evidence instead: the product's own checks and decision (:mod:`dmac_core.training.gate`) turn it
into the verdict, nothing promotes by hand. What the real gate decides on real answers is
tested on the real model (tests/test_gate_real_model.py, tests/test_learning_quality.py).
"""

from __future__ import annotations

from typing import Any

from dmac_core.config import Config
from dmac_core.evaluation.metrics import key_term_recall, rouge_scores
from dmac_core.learner.registry import ModelRegistry
from dmac_core.training.gate import PromotionGate


def scripted_evaluate(registry: ModelRegistry, candidate_learned: bool = True, candidate_loss: float = 1.0):
    """An ``evaluate`` for :class:`PromotionGate`: the served version answers nothing right; a
    new version answers with the references when ``candidate_learned`` (else like the served one)."""
    calls: list[tuple[str, str]] = []

    def evaluate(items: list[dict[str, Any]], model: str, suite: str, reuse: bool) -> dict[str, Any]:
        version = model.partition("@")[2]
        calls.append((version, suite))
        champion = version == registry.served_id()
        outputs = [item["reference"] if candidate_learned and not champion else "I do not know." for item in items]
        rouge = rouge_scores(outputs, [i["reference"] for i in items])
        rows = [{"prompt": i["prompt"], "reference": i["reference"], "output": out,
                 "key_term_recall": key_term_recall(out, i["reference"]), **r}
                for i, out, r in zip(items, outputs, rouge["per_item"])]
        loss = 2.0 if champion else candidate_loss
        return {"n": len(items), "per_item": rows, "eval_id": f"scripted-{suite}-{version}",
                "metrics": {"rougeL": rouge["rougeL"], "loss": loss, "n_with_reference": len(items),
                            "key_term_recall": sum(r["key_term_recall"] or 0 for r in rows) / max(len(rows), 1)},
                "runtime": "scripted", "decoding": "scripted"}

    evaluate.calls = calls  # type: ignore[attr-defined]
    return evaluate


def scripted_gate(config: Config, registry: ModelRegistry, candidate_learned: bool = True) -> PromotionGate:
    """The product's gate over :func:`scripted_evaluate`."""
    return PromotionGate(config, scripted_evaluate(registry, candidate_learned))
