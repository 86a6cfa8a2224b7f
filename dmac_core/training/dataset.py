"""Training data for the local learner, built from the learning logs, with lineage.

Rules:

- Every rated answer is material, whichever model wrote it (Gemini's good answers teach the
  learner), and a rating given only as prompt + response counts exactly like a logged one.
- Feedback is append-only: the latest record per (answer, user) supersedes older ones; the
  ratings of several users for one answer are averaged.
- SFT targets: answers whose mean rating is ``>= min_rating_for_sft``, plus every analyst
  ``correction`` (treated as rated 5). Identical (prompt, completion) pairs are merged.
- Weight of an SFT example = (rating - 1) / 4, so 5 → 1.0, 4 → 0.75, 3 → 0.5. TRL's
  ``SFTTrainer`` has no per-example loss weight, so the trainer applies weights by
  repetition (see :func:`weighted_sft_train`): when the training set mixes weights, examples of
  weight 1.0 are seen twice per epoch and the others once; when all weigh the same,
  repetition would only lengthen the epoch, so each is seen once.
- DPO pairs: two answers to the same prompt with different (mean) ratings; a correction is
  preferred to the answer it corrects. KTO: desirable ``>= min_rating_for_sft``, undesirable
  ``<= max_rating_for_negative``.
- Textual feedback stays with its example (``feedback`` field) for review. When a teacher
  model rewrote an answer following its feedback (``rewrites``: feedback id → rewritten
  answer, see :mod:`dmac_core.training.teacher`), the rewrite is a preferred target like a
  correction: an SFT example, the chosen side of a DPO pair against the original, marked
  ``teacher_revised``. An analyst's own correction of the same answer wins over the teacher.
- Blind-comparison votes (Chat's Compare mode; ``votes`` log) are preferences between two
  logged answers to one prompt, read from the interaction log by id. The latest vote of each
  analyst on a pair counts. "a" / "b": a DPO pair, the chosen side against the other (marked
  ``source: "vote"``, the vote's id in ``record_ids``); several votes that agree make one pair.
  "tie": no example at all — a tie says the two are alike, not that either is good (stars say
  that). "both_bad": no DPO pair (neither side is preferable), both answers as KTO
  undesirable. Votes never give SFT targets: the better of two answers may still be wrong.
  A vote whose answers are gone from the interaction log, failed, or are the same text gives
  nothing. The lineage counts votes apart from ratings (``counts.votes``,
  ``counts.dpo_from_votes``, ``counts.kto_from_votes``, ``counts.vote_ties``; ``vote_ids``).
- Judge labels (:func:`add_judge_labels`) are a separate source: scores an LLM judge gave
  answers no analyst rated, passed in only for judges whose agreement with analysts cleared
  ``judge.agreement_bar`` (:mod:`dmac_core.signals.judge_agreement`). They become SFT and KTO
  examples like ratings, each marked ``judge_label`` with its judgment id, and the lineage lists
  the judgments and the judges' agreement. They never make DPO pairs.
- The held-out split is stable across runs: an item is held out iff
  ``sha256(normalised prompt) mod 1000 < validation_fraction * 1000``, so successive versions
  are compared on the same items; at least one example always stays in training.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..config import LocalModelConfig
from ..evaluation.splits import is_heldout, normalize_prompt
from ..logs.store import LearningStore

Message = dict[str, str]


class NotEnoughData(ValueError):
    """Too few usable examples to train; the message says how many and what to do."""


@dataclass
class TrainingData:
    """Datasets for the three methods plus the lineage that produced them."""

    sft_train: list[dict[str, Any]] = field(default_factory=list)
    sft_eval: list[dict[str, Any]] = field(default_factory=list)
    dpo: list[dict[str, Any]] = field(default_factory=list)
    dpo_eval: list[dict[str, Any]] = field(default_factory=list)
    kto: list[dict[str, Any]] = field(default_factory=list)
    kto_eval: list[dict[str, Any]] = field(default_factory=list)
    # Validation examples that are not analysts' items: the gate's general-knowledge suite
    # (prompt + reference answer), never trained; SFT validation loss is measured on them too.
    general_eval: list[dict[str, Any]] = field(default_factory=list)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in
                ("sft_train", "sft_eval", "dpo", "dpo_eval", "kto", "kto_eval", "general_eval", "lineage")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingData":
        return cls(**{k: data.get(k, [] if k != "lineage" else {}) for k in cls.__dataclass_fields__})


# One held-out rule for training and evaluation (see dmac_core.evaluation.splits).
normalise_prompt = normalize_prompt
is_held_out = is_heldout


def rating_weight(rating: float) -> float:
    """SFT weight from a (mean) rating: 5 → 1.0, 4 → 0.75, 3 → 0.5."""
    return max(0.0, min(1.0, (float(rating) - 1.0) / 4.0))


def weighted_sft_train(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply example weights by repetition (see the module docstring for why)."""
    weights = {round(ex["weight"], 6) for ex in examples}
    if len(weights) <= 1:
        return list(examples)
    out: list[dict[str, Any]] = []
    for ex in examples:
        out.extend([ex] * (2 if ex["weight"] >= 1.0 else 1))
    return out


def _prompt_messages(prompt: str, interaction: dict[str, Any] | None) -> list[Message]:
    """The conversation before the answer: the logged multi-turn context when there is one
    that ends in this prompt, else the single user turn."""
    if interaction:
        msgs = [
            {"role": str(m.get("role")), "content": str(m.get("content", ""))}
            for m in interaction.get("messages") or []
            if isinstance(m, dict) and m.get("role") in ("user", "assistant")
        ]
        if msgs and msgs[-1]["role"] == "user" and msgs[-1]["content"].strip() == prompt.strip():
            return msgs
    return [{"role": "user", "content": prompt}]


@dataclass
class _Answer:
    """One distinct answer to one prompt, with every rating it received."""

    prompt_messages: list[Message]
    prompt: str
    response: str
    ratings: list[int] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)
    source: str = "rated"  # rated | correction (an analyst's) | teacher (rewrite following feedback)

    @property
    def is_correction(self) -> bool:
        return self.source == "correction"

    @property
    def rating(self) -> float:
        # Corrections and teacher rewrites are preferred targets: they count as rated 5.
        return 5.0 if self.source != "rated" else sum(self.ratings) / len(self.ratings)


def _collect_answers(store: LearningStore, interactions: dict[str, dict[str, Any]],
                     rewrites: dict[str, str] | None = None) -> tuple[list[_Answer], dict[str, Any]]:
    feedback = store.feedback(latest_only=True)
    answers: dict[tuple[str, str], _Answer] = {}
    months: set[str] = set()
    interaction_ids: set[str] = set()

    rewrites = rewrites or {}
    revised_ids: list[str] = []

    def answer_for(prompt: str, response: str, interaction: dict[str, Any] | None, source: str = "rated") -> _Answer:
        key = (normalise_prompt(prompt), response.strip() + ("" if source == "rated" else f"\x00{source}"))
        if key not in answers:
            answers[key] = _Answer(_prompt_messages(prompt, interaction), prompt, response.strip(), source=source)
        return answers[key]

    for row in feedback.to_dict("records"):
        prompt, response = str(row.get("prompt") or ""), str(row.get("response") or "")
        if not prompt.strip() or not response.strip():
            continue
        iid = row.get("interaction_id")
        interaction = interactions.get(iid) if isinstance(iid, str) else None
        if interaction is not None:
            interaction_ids.add(iid)
        ts = row.get("ts")
        if ts is not None and hasattr(ts, "strftime"):
            months.add(ts.strftime("%Y-%m"))
        answer = answer_for(prompt, response, interaction)
        answer.ratings.append(int(row["rating"]))
        answer.record_ids.append(str(row["id"]))
        if interaction is not None:
            answer.models.add(str(interaction.get("model")))
        text = str(row.get("feedback") or "").strip()
        if text:
            answer.feedback.append(text)
        correction = row.get("correction")
        rewrite = rewrites.get(str(row["id"]))
        if isinstance(correction, str) and correction.strip():
            fixed = answer_for(prompt, correction, interaction, "correction")
        elif text and isinstance(rewrite, str) and rewrite.strip() and rewrite.strip() != response.strip():
            fixed = answer_for(prompt, rewrite, interaction, "teacher")
            revised_ids.append(str(row["id"]))
        else:
            continue
        fixed.ratings.append(5)
        fixed.record_ids.append(str(row["id"]))
        if text:
            fixed.feedback.append(text)
    meta = {
        "feedback_records": int(len(feedback)),
        "interaction_ids": sorted(interaction_ids),
        "months": sorted(months),
        "teacher_revised_feedback_ids": sorted(revised_ids),
    }
    return list(answers.values()), meta


def _completion(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def latest_votes(store: LearningStore) -> tuple[list[dict[str, Any]], int]:
    """The votes that count — the latest of each analyst on each pair of answers (whichever side
    each was shown on) — and how many vote records were read."""
    rows = store.records("votes")
    latest: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:  # oldest first: a later vote replaces an earlier one
        pair = sorted((str(row.get("interaction_a")), str(row.get("interaction_b"))))
        latest[(*pair, str(row.get("user")))] = row
    return list(latest.values()), len(rows)


def _add_votes(data: "TrainingData", store: LearningStore, interactions: dict[str, dict[str, Any]],
               cfg: LocalModelConfig) -> dict[str, Any]:
    """Add the DPO pairs and KTO examples that votes give (rules in the module docstring);
    returns the counts and ids for the lineage."""
    votes, read = latest_votes(store)
    stats: dict[str, Any] = {"votes": read, "votes_counted": len(votes), "dpo_from_votes": 0,
                             "kto_from_votes": 0, "vote_ties": 0, "votes_unusable": 0}
    used_votes: set[str] = set()
    used_interactions: set[str] = set()
    pairs: dict[tuple[str, str, str], dict[str, Any]] = {}
    undesirable: dict[tuple[str, str], dict[str, Any]] = {}
    for vote in votes:
        sides = [interactions.get(str(vote.get(key))) for key in ("interaction_a", "interaction_b")]
        texts = [str((side or {}).get("response") or "").strip() for side in sides]
        if any(side is None or side.get("error") for side in sides) or not all(texts):
            stats["votes_unusable"] += 1
            continue
        a, b = sides[0], sides[1]
        assert a is not None and b is not None
        prompt = str(a.get("prompt") or "")
        messages = _prompt_messages(prompt, a)
        held_out = is_held_out(prompt, cfg.validation_fraction)
        choice, vote_id, note = vote.get("choice"), str(vote["id"]), str(vote.get("note") or "").strip()
        if choice == "tie":
            stats["vote_ties"] += 1
            continue
        if choice in ("a", "b"):
            good, bad = (texts[0], texts[1]) if choice == "a" else (texts[1], texts[0])
            if good == bad:  # the same text on both sides: nothing to prefer
                stats["votes_unusable"] += 1
                continue
            key = (normalise_prompt(prompt), good, bad)
            if key not in pairs:
                pairs[key] = {"prompt": messages, "chosen": _completion(good), "rejected": _completion(bad),
                              "margin": None, "teacher_revised": False, "source": "vote", "record_ids": [],
                              "feedback": "", "held_out": held_out}
            examples = [pairs[key]]
        elif choice == "both_bad":
            examples = []
            for text in dict.fromkeys(texts):
                ukey = (normalise_prompt(prompt), text)
                if ukey not in undesirable:
                    undesirable[ukey] = {"prompt": messages, "completion": _completion(text), "label": False,
                                         "record_ids": [], "feedback": "", "teacher_revised": False,
                                         "source": "vote", "held_out": held_out}
                examples.append(undesirable[ukey])
        else:
            stats["votes_unusable"] += 1
            continue
        for example in examples:
            example["record_ids"] = sorted(set(example["record_ids"]) | {vote_id})
            if note:
                example["feedback"] = "\n".join(t for t in dict.fromkeys([*example["feedback"].split("\n"), note]) if t)
        used_votes.add(vote_id)
        used_interactions.update(str(side["id"]) for side in sides)
    for example in pairs.values():
        (data.dpo_eval if example.pop("held_out") else data.dpo).append(example)
    for example in undesirable.values():
        (data.kto_eval if example.pop("held_out") else data.kto).append(example)
    stats["dpo_from_votes"] = len(pairs)
    stats["kto_from_votes"] = len(undesirable)
    stats["vote_ids"] = sorted(used_votes)
    stats["interaction_ids"] = sorted(used_interactions)
    return stats


def build_dataset(
    store: LearningStore, cfg: LocalModelConfig, method: str | None = None, rewrites: dict[str, str] | None = None,
    judge_labels: list[dict[str, Any]] | None = None,
) -> TrainingData:
    """Build SFT / DPO / KTO data from the store's latest feedback, with lineage.

    ``rewrites`` maps feedback ids to a teacher's rewrite of the answer following that
    feedback (see the module docstring). ``judge_labels``: qualified judge scores to add as a
    separate, marked source (see :func:`add_judge_labels`).

    Raises :class:`NotEnoughData` when ``method`` (default ``cfg.method``) has fewer than
    ``cfg.min_examples`` usable examples; ``auto`` needs enough for at least one method.
    """
    method = method or cfg.method
    interactions = {row["id"]: row for row in store.records("interactions")}
    answers, meta = _collect_answers(store, interactions, rewrites)
    data = TrainingData()

    # SFT: good answers and corrections; a (prompt, completion) pair appears once.
    for ans in answers:
        if ans.rating < cfg.min_rating_for_sft:
            continue
        example = {
            "prompt": ans.prompt_messages,
            "completion": _completion(ans.response),
            "weight": rating_weight(ans.rating),
            "rating": round(ans.rating, 3),
            "record_ids": sorted(set(ans.record_ids)),
            "feedback": "\n".join(dict.fromkeys(ans.feedback)),
            "correction": ans.is_correction,
            "teacher_revised": ans.source == "teacher",
        }
        held_out = is_held_out(ans.prompt, cfg.validation_fraction)
        (data.sft_eval if held_out else data.sft_train).append(example)
    _dedupe(data.sft_train)
    _dedupe(data.sft_eval)
    if not data.sft_train and data.sft_eval:
        # Always keep at least one training example: move the first held-out prompt group over.
        first = normalise_prompt(data.sft_eval[0]["prompt"][-1]["content"])
        data.sft_train = [e for e in data.sft_eval if normalise_prompt(e["prompt"][-1]["content"]) == first]
        data.sft_eval = [e for e in data.sft_eval if normalise_prompt(e["prompt"][-1]["content"]) != first]

    # DPO: per prompt, every pair of answers with different ratings (better one chosen).
    by_prompt: dict[str, list[_Answer]] = defaultdict(list)
    for ans in answers:
        by_prompt[normalise_prompt(ans.prompt)].append(ans)
    for key, group in by_prompt.items():
        held_out = is_held_out(key, cfg.validation_fraction)
        for a, b in itertools.combinations(group, 2):
            if a.response == b.response or a.rating == b.rating:
                continue
            good, bad = (a, b) if a.rating > b.rating else (b, a)
            (data.dpo_eval if held_out else data.dpo).append(
                {
                    "prompt": good.prompt_messages,
                    "chosen": _completion(good.response),
                    "rejected": _completion(bad.response),
                    "margin": round(good.rating - bad.rating, 3),
                    "teacher_revised": good.source == "teacher",
                    "source": "rating",
                    "record_ids": sorted(set(good.record_ids + bad.record_ids)),
                }
            )

    # KTO: unpaired thumbs up / down.
    for ans in answers:
        if ans.rating >= cfg.min_rating_for_sft:
            label = True
        elif ans.rating <= cfg.max_rating_for_negative:
            label = False
        else:
            continue
        item = {
            "prompt": ans.prompt_messages,
            "completion": _completion(ans.response),
            "label": label,
            "record_ids": sorted(set(ans.record_ids)),
            "feedback": "\n".join(dict.fromkeys(ans.feedback)),
            "teacher_revised": ans.source == "teacher",
        }
        (data.kto_eval if is_held_out(ans.prompt, cfg.validation_fraction) else data.kto).append(item)

    voted = _add_votes(data, store, interactions, cfg)
    vote_ids = set(voted.pop("vote_ids"))
    used_ids = sorted({rid for part in (data.sft_train, data.sft_eval, data.dpo, data.dpo_eval, data.kto, data.kto_eval)
                       for ex in part for rid in ex["record_ids"]} - vote_ids)
    data.lineage = {
        "feedback_ids": used_ids,
        "vote_ids": sorted(vote_ids),
        "interaction_ids": sorted(set(meta["interaction_ids"]) | set(voted.pop("interaction_ids"))),
        "months": meta["months"],
        "teacher_revised_feedback_ids": meta["teacher_revised_feedback_ids"],
        "counts": {
            "feedback_records": meta["feedback_records"],
            "answers": len(answers),
            "sft_train": len(data.sft_train),
            "sft_eval": len(data.sft_eval),
            "dpo": len(data.dpo),
            "dpo_eval": len(data.dpo_eval),
            "kto": len(data.kto),
            "kto_desirable": sum(1 for x in data.kto if x["label"]),
            "kto_undesirable": sum(1 for x in data.kto if not x["label"]),
            "kto_eval": len(data.kto_eval),
            "corrections": sum(1 for a in answers if a.is_correction),
            "teacher_revised": sum(1 for a in answers if a.source == "teacher"),
            "with_text_feedback": sum(1 for e in data.sft_train + data.sft_eval if e["feedback"]),
            **voted,
        },
        "filters": {
            "min_rating_for_sft": cfg.min_rating_for_sft,
            "max_rating_for_negative": cfg.max_rating_for_negative,
            "validation_fraction": cfg.validation_fraction,
            "split": "sha256(normalised prompt) mod 1000 < validation_fraction*1000",
            "latest_feedback_per_answer_and_user": True,
            "ratings_of_several_users": "mean",
        },
    }
    add_judge_labels(data, judge_labels or [], cfg)
    check_enough(data, cfg, method)
    return data


def add_judge_labels(data: TrainingData, labels: list[dict[str, Any]], cfg: LocalModelConfig) -> None:
    """Add qualified judge scores as SFT / KTO examples marked ``judge_label`` (in place).

    Each label (from :func:`dmac_core.signals.judge_agreement.qualified_labels`) carries
    ``judgment_id``, ``interaction_id``, ``score``, ``judge``, ``rubric_id``, ``kappa``,
    ``n_items`` and the ``interaction`` it scored. The caller passes only labels of judges that
    qualified; an answer that is already an analyst's example is not added again.
    """
    analysts = data.sft_train + data.sft_eval + data.kto + data.kto_eval
    seen = {(repr(ex["prompt"]), ex["completion"][0]["content"]) for ex in analysts}
    used: list[dict[str, Any]] = []
    for label in labels:
        interaction = label["interaction"]
        prompt, response = str(interaction.get("prompt") or ""), str(interaction.get("response") or "").strip()
        messages = _prompt_messages(prompt, interaction)
        if not response or (repr(messages), response) in seen:
            continue
        score = int(label["score"])
        mark = {"record_ids": [str(label["judgment_id"])], "interaction_id": label["interaction_id"],
                "judge_label": True, "judge": label["judge"], "rubric_id": label["rubric_id"], "feedback": "",
                "teacher_revised": False}
        held_out = is_held_out(prompt, cfg.validation_fraction)
        added = False
        if score >= cfg.min_rating_for_sft:
            example = {"prompt": messages, "completion": _completion(response), "weight": rating_weight(score),
                       "rating": float(score), "correction": False, **mark}
            (data.sft_eval if held_out else data.sft_train).append(example)
            added = True
        if score >= cfg.min_rating_for_sft or score <= cfg.max_rating_for_negative:
            item = {"prompt": messages, "completion": _completion(response),
                    "label": score >= cfg.min_rating_for_sft, **mark}
            (data.kto_eval if held_out else data.kto).append(item)
            added = True
        if added:
            seen.add((repr(messages), response))
            used.append(label)
    judges = {(l["judge"], l["rubric_id"]): {"judge": l["judge"], "rubric_id": l["rubric_id"], "kappa": l["kappa"],
                                            "n_items": l["n_items"]} for l in used}
    data.lineage["judge_labels"] = {
        "judgment_ids": sorted(str(l["judgment_id"]) for l in used),
        "judges": list(judges.values()),
        "offered": len(labels),
        "used": len(used),
    }
    counts = data.lineage.setdefault("counts", {})
    counts.update(sft_train=len(data.sft_train), sft_eval=len(data.sft_eval), kto=len(data.kto),
                  kto_eval=len(data.kto_eval), kto_desirable=sum(1 for x in data.kto if x["label"]),
                  kto_undesirable=sum(1 for x in data.kto if not x["label"]), judge_labels=len(used))


def usable_count(data: TrainingData, method: str) -> int:
    """Number of usable examples for ``method`` (train + held out)."""
    if method == "dpo":
        return len(data.dpo) + len(data.dpo_eval)
    if method == "kto":
        return len(data.kto) + len(data.kto_eval)
    return len(data.sft_train) + len(data.sft_eval)


def choose_method(data: TrainingData, cfg: LocalModelConfig) -> str:
    """``auto``: DPO when there are enough preference pairs, else KTO when there are
    enough rated answers of both kinds, else SFT (the method that teaches content)."""
    if len(data.dpo) >= cfg.min_examples:
        return "dpo"
    counts = data.lineage.get("counts", {})
    if counts.get("kto_undesirable", 0) >= 1 and len(data.kto) >= cfg.min_examples and usable_count(data, "sft") < cfg.min_examples:
        return "kto"
    return "sft"


def check_enough(data: TrainingData, cfg: LocalModelConfig, method: str) -> None:
    """Raise :class:`NotEnoughData` with a message an analyst can act on."""
    need = cfg.min_examples
    if method == "auto":
        method = choose_method(data, cfg)
    have = usable_count(data, method)
    if have >= need:
        return
    if method == "dpo":
        msg = (
            f"Only {have} preference pair{'s' if have != 1 else ''} (two answers to the same prompt with "
            f"different ratings, or a vote for one of two answers in Compare mode); rate or vote at least "
            f"{need} such pairs to train with DPO."
        )
    elif method == "kto":
        msg = (
            f"Only {have} answer{'s' if have != 1 else ''} rated ≥ {cfg.min_rating_for_sft} or ≤ "
            f"{cfg.max_rating_for_negative}; rate at least {need} to train with KTO."
        )
    else:
        msg = (
            f"Only {have} rated answer{'s' if have != 1 else ''} with rating ≥ {cfg.min_rating_for_sft}; "
            f"rate at least {need} to train."
        )
    raise NotEnoughData(msg)


def _dedupe(examples: list[dict[str, Any]]) -> None:
    """Merge identical (prompt, completion) examples in place, keeping the higher weight."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for ex in examples:
        key = (repr(ex["prompt"]), ex["completion"][0]["content"])
        if key in seen:
            kept = seen[key]
            kept["weight"] = max(kept["weight"], ex["weight"])
            for flag in ("correction", "teacher_revised"):
                kept[flag] = bool(kept.get(flag) or ex.get(flag))
            kept["record_ids"] = sorted(set(kept["record_ids"]) | set(ex["record_ids"]))
            kept["feedback"] = "\n".join(t for t in dict.fromkeys((kept["feedback"] + "\n" + ex["feedback"]).split("\n")) if t)
            continue
        seen[key] = ex
        out.append(ex)
    examples[:] = out
