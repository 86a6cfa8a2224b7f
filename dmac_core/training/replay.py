"""Replay: keep what the base model already knew while it learns the analysts' answers.

Teaching a small model a few dozen invented facts overwrites some of its general knowledge
("Who wrote Romeo and Juliet?" → an invented name, in bench/RESULTS.md, "Learning, measured").
Training on the base model's *own* answers to a handful of general prompts along with the
analysts' data anchors it: with six such answers the 30-fact benchmark kept all three general
checks instead of two, and still learned the facts.

Each SFT run (``models.deepseek.replay``, on by default) asks the run's base model, without
any adapter, for greedy answers to ``replay.prompts`` (with chat's repetition penalty and loop
guard) — cached per base model, decoding and prompt, so only the first run pays for it — and
adds them to the training split as 5-rated examples marked ``replay`` in the lineage. They
never enter the held-out split, are not analysts' rated answers for the promotion gate, and
never count toward ``min_examples``; a prompt the analysts rated themselves is left to them.
The replay prompts and the gate's general-knowledge suite are disjoint, so the gate measures
retention outside what is replayed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

from ..config import Config
from ..evaluation.splits import normalize_prompt
from ..fsio import append_jsonl, read_jsonl
from ..learner.base_model import weights_fingerprint
from ..learner.decoding import Decoding
from ..learner.registry import BASE_VERSION, ModelVersion
from .dataset import TrainingData


def _model_fingerprint(base_model: Path) -> str:
    """Path plus size and mtime of the weights: a re-converted or replaced model is a new key."""
    parts = [str(base_model.resolve())]
    for path, size, mtime in weights_fingerprint(sorted(base_model.glob("*.safetensors"))):
        parts.append(f"{Path(path).name}:{size}:{mtime}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class ReplayCache:
    """Base-model answers to replay prompts, one JSON line each, under ``data/replay/``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key(fingerprint: str, prompt: str, max_new_tokens: int, decoding: str) -> str:
        return hashlib.sha256(f"{fingerprint}\0{max_new_tokens}\0{decoding}\0{prompt}".encode()).hexdigest()

    def load(self) -> dict[str, str]:
        # a torn last line is skipped: that answer is generated again
        return {str(row["key"]): str(row["answer"]) for row in read_jsonl(self.path) if "key" in row and "answer" in row}

    def add(self, rows: list[dict[str, str]]) -> None:
        append_jsonl(self.path, rows)


def replay_answers(config: Config, progress: Callable[[str], None] | None = None) -> list[tuple[str, str]]:
    """(prompt, base model's greedy answer) for every replay prompt; generates the missing ones."""
    settings = config.learner.replay
    prompts = list(dict.fromkeys(p.strip() for p in settings.prompts if p.strip()))
    if not settings.enabled or not prompts:
        return []
    base = config.base_model_path()
    fingerprint = _model_fingerprint(base)
    cache = ReplayCache(config.data_path / "replay" / "answers.jsonl")
    known = cache.load()
    # chat's decoding (greedy, with its repetition penalty and loop guard): a replayed answer
    # must not teach the model to loop
    decoding = Decoding.from_config(config.learner, temperature=0.0)
    keys = {p: ReplayCache.key(fingerprint, p, settings.max_new_tokens, decoding.describe()) for p in prompts}
    missing = [p for p in prompts if keys[p] not in known]
    if missing:
        # here, for start-up time: the model runtimes (and torch) load only when answers are missing
        import torch

        from ..evaluation.local import generate_batch
        from ..learner.loading import load_model

        if progress:
            progress(f"Asking the base model for its own answers to {len(missing)} replay prompt(s)…")
        loaded = load_model(base, ModelVersion(id=BASE_VERSION, path=None), torch.float32)
        answers = generate_batch(loaded, missing, settings.max_new_tokens, decoding=decoding)
        rows = [{"key": keys[p], "prompt": p, "answer": a, "base_model": str(base)} for p, a in zip(missing, answers)]
        cache.add([row for row in rows if row["answer"].strip()])
        known.update({row["key"]: row["answer"] for row in rows})
    return [(p, known[keys[p]]) for p in prompts if known.get(keys[p], "").strip()]


def first_sentences(text: str, min_chars: int = 24) -> str:
    """The answer's opening sentence (more, until ``min_chars``): where a general answer states
    its fact. A replayed example is cheap to train and never ends mid-sentence."""
    text = " ".join(text.split())
    for match in re.finditer(r"[.!?](?=\s|$)", text):
        if match.end() >= min_chars:
            return text[: match.end()]
    return text


def add_replay(data: TrainingData, answers: list[tuple[str, str]], base_model: str) -> int:
    """Add replay answers to ``data.sft_train`` (weight of a 5 rating); return how many."""
    rated = {normalize_prompt(ex["prompt"][-1]["content"]) for ex in data.sft_train + data.sft_eval}
    added: list[str] = []
    for prompt, answer in answers:
        if normalize_prompt(prompt) in rated:
            continue  # the analysts rated this prompt: their answer is the target
        data.sft_train.append({
            "prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": first_sentences(answer)}],
            "weight": 1.0, "rating": 5.0, "record_ids": [], "feedback": "",
            "correction": False, "teacher_revised": False, "replay": True,
        })
        added.append(prompt)
    data.lineage.setdefault("counts", {})["replay"] = len(added)
    data.lineage["replay"] = {"prompts": added, "base_model": base_model,
                              "note": "the base model's own answers, trained to keep its general knowledge"}
    return len(added)


def apply_replay(config: Config, data: TrainingData, method: str, progress: Callable[[str], None] | None = None) -> int:
    """Add replay to an SFT run's data (the other methods learn from pairs and labels, where a
    replayed answer has nothing to be preferred over); return how many examples were added."""
    if method != "sft" or not config.learner.replay.enabled:
        return 0
    return add_replay(data, replay_answers(config, progress), str(config.base_model_path()))
