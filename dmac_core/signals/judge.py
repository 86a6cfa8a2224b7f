"""An LLM judge: scores answers 1–5 by a rubric, or picks the better of two, on demand.

Every call goes through the router (``respond``: caps counted, the call logged as an
interaction with purpose "judge"), and every label is a ``judgments`` record. The reply is
parsed strictly (:func:`parse_score`, :func:`parse_choice`): a reply without a readable score
is stored with ``parsed: false`` and no score — never as a guessed number.

The judge's prompt quotes the question after ``Question:`` and the answer after ``Answer:``
(``Answer A:`` / ``Answer B:`` for pairs), so deleting a user's data can recognise the judge
calls that quote them (:mod:`dmac_core.privacy.footprint`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ..logs.records import Judgment
from ..logs.store import LearningStore

JUDGE_PURPOSE = "judge"
REPLY_CHARS = 2000  # of the judge's reply kept on the record: enough to see why it scored so
# "Score: 4", "score = 4/5", "**Rating:** 4" — the last such statement counts (judges reason first).
_SCORE = re.compile(r"(?:score|rating)\**\s*[:=]?\s*\**\s*([1-5])(?![\d.,]\d)(?:\s*/\s*5)?(?!\d)", re.IGNORECASE)
_OUT_OF_FIVE = re.compile(r"(?<![\d.])([1-5])\s*/\s*5(?!\d)")
_BARE = re.compile(r"^\W*([1-5])\W*$")
_CHOICE = re.compile(r"(?:verdict|winner|better(?: answer)?)\**\s*[:=]?\s*\**\s*(?:answer\s+)?(A|B|tie)\b",
                     re.IGNORECASE)

Respond = Callable[..., Any]  # the router's respond(prompt, model=..., user=..., purpose=...) -> ChatResult


def rubric_id(rubric: str) -> str:
    """A short, stable id of a rubric's text: agreement is measured per judge and rubric."""
    return hashlib.sha256(rubric.strip().encode("utf-8")).hexdigest()[:12]


def score_prompt(rubric: str, question: str, answer: str) -> str:
    """What the judge is asked for one answer."""
    return (f"You are grading an answer for a team of analysts.\n{rubric.strip()}\n\n"
            f"Question:\n{question}\n\nAnswer:\n{answer}\n\n"
            "Give one or two sentences of reasons, then a last line exactly of the form 'Score: N' "
            "with N from 1 to 5.")


def pair_prompt(rubric: str, question: str, answer_a: str, answer_b: str) -> str:
    """What the judge is asked for two answers to one question."""
    return (f"You are comparing two answers for a team of analysts.\n{rubric.strip()}\n\n"
            f"Question:\n{question}\n\nAnswer A:\n{answer_a}\n\nAnswer B:\n{answer_b}\n\n"
            "Give one or two sentences of reasons, then a last line exactly of the form "
            "'Verdict: A', 'Verdict: B' or 'Verdict: tie'.")


def parse_score(reply: str) -> int | None:
    """The 1–5 score a judge's reply states, or None when it states none (or only numbers
    outside the scale). The last explicit "Score:"/"Rating:" wins, then the last "N/5", then
    a reply that is a bare digit."""
    for pattern in (_SCORE, _OUT_OF_FIVE):
        found = pattern.findall(reply or "")
        if found:
            return int(found[-1])
    bare = _BARE.match(reply or "")
    return int(bare.group(1)) if bare else None


def parse_choice(reply: str) -> str | None:
    """"a", "b" or "tie" from a judge's "Verdict: …" line (the last one), or None."""
    found = _CHOICE.findall(reply or "")
    return found[-1].lower() if found else None


@dataclass
class JudgeRun:
    """What one on-demand judging did: the labels written, and why it stopped early, if it did."""

    judgments: list[Judgment] = field(default_factory=list)
    stopped: str | None = None

    @property
    def unparsed(self) -> int:
        return sum(1 for j in self.judgments if not j.parsed)


def _judged(store: LearningStore, judge: str, rid: str, kind: str) -> set[Any]:
    done = store.judgments()
    if done.empty:
        return set()
    mine = done[(done["judge"] == judge) & (done["rubric_id"] == rid) & (done["kind"] == kind)]
    if kind == "score":
        return set(mine["interaction_id"])
    return set(zip(mine["interaction_a"], mine["interaction_b"]))


def answers_to_judge(store: LearningStore, judge: str, rubric: str, rated: bool, limit: int) -> list[dict[str, Any]]:
    """Analysts' chat answers this judge + rubric has not scored yet, newest first: the rated
    ones (``rated``: to measure its agreement) or the unrated ones (to label them)."""
    interactions = store.interactions()
    if interactions.empty:
        return []
    ok = interactions[interactions["error"].isna() & (interactions["response"].fillna("").str.strip() != "")]
    if "purpose" in ok.columns:
        ok = ok[ok["purpose"].fillna("chat") == "chat"]
    feedback = store.feedback()
    rated_ids = set(feedback["interaction_id"].dropna()) if not feedback.empty else set()
    done = _judged(store, judge, rubric_id(rubric), "score")
    keep = ok["id"].isin(rated_ids) if rated else ~ok["id"].isin(rated_ids)
    chosen = ok[keep & ~ok["id"].isin(done)].iloc[::-1].head(limit)
    return chosen[["id", "prompt", "response"]].to_dict("records")


def pairs_to_judge(store: LearningStore, judge: str, rubric: str, limit: int) -> list[dict[str, Any]]:
    """Voted pairs this judge + rubric has not compared yet, newest first (its verdicts are
    checked against the analysts' votes)."""
    votes = store.votes()
    if votes.empty:
        return []
    done = _judged(store, judge, rubric_id(rubric), "pair")
    rows = votes.drop_duplicates(["interaction_a", "interaction_b"], keep="last").iloc[::-1]
    out = []
    for row in rows.to_dict("records"):
        if (row["interaction_a"], row["interaction_b"]) in done:
            continue
        a, b = store.get_interaction(row["interaction_a"]), store.get_interaction(row["interaction_b"])
        if a is None or b is None:
            continue
        out.append({"interaction_a": a["id"], "interaction_b": b["id"], "prompt": a["prompt"],
                    "response_a": a["response"], "response_b": b["response"]})
        if len(out) >= limit:
            break
    return out


def _judge_each(store: LearningStore, respond: Respond, judge: str, rubric: str, user: str,
                errors: tuple[type[BaseException], ...], items: list[dict[str, Any]],
                question: Callable[[dict[str, Any]], str],
                label: Callable[[dict[str, Any], str], dict[str, Any]]) -> JudgeRun:
    """Ask the judge ``question(item)`` for each item through the router and store the judgment
    ``label(item, reply)`` gives (its kind, what it judged, the parsed verdict). An error in
    ``errors`` stops the run; the judgments written until then stay."""
    run = JudgeRun()
    rid = rubric_id(rubric)
    for item in items:
        try:
            result = respond(question(item), model=judge, user=user, purpose=JUDGE_PURPOSE)
        except errors as exc:
            run.stopped = str(exc)
            break
        run.judgments.append(store.append_judgment(
            user=user, judge=judge, judge_version=result.model_version, rubric_id=rid, rubric=rubric,
            reply=result.text[:REPLY_CHARS], judge_interaction_id=result.interaction_id, **label(item, result.text)))
    return run


def judge_answers(store: LearningStore, respond: Respond, judge: str, rubric: str, items: list[dict[str, Any]],
                  user: str, errors: tuple[type[BaseException], ...] = ()) -> JudgeRun:
    """Score each item (``id``, ``prompt``, ``response``) through the router and store the labels.

    An error in ``errors`` (the router's: a cap reached, the judge unavailable) stops the run;
    the labels written until then stay, and ``stopped`` says why."""
    def label(item: dict[str, Any], reply: str) -> dict[str, Any]:
        score = parse_score(reply)
        return {"kind": "score", "interaction_id": item["id"], "score": score, "parsed": score is not None}

    return _judge_each(store, respond, judge, rubric, user, errors, items,
                       lambda item: score_prompt(rubric, item["prompt"], item["response"]), label)


def judge_pairs(store: LearningStore, respond: Respond, judge: str, rubric: str, items: list[dict[str, Any]],
                user: str, errors: tuple[type[BaseException], ...] = ()) -> JudgeRun:
    """Compare each pair (see :func:`pairs_to_judge`) through the router and store the verdicts."""
    def label(item: dict[str, Any], reply: str) -> dict[str, Any]:
        choice = parse_choice(reply)
        return {"kind": "pair", "interaction_a": item["interaction_a"], "interaction_b": item["interaction_b"],
                "choice": choice, "parsed": choice is not None}

    return _judge_each(store, respond, judge, rubric, user, errors, items,
                       lambda item: pair_prompt(rubric, item["prompt"], item["response_a"], item["response_b"]), label)


def latest_scores(judgments: pd.DataFrame) -> pd.DataFrame:
    """The newest parsed score per (judge, rubric, interaction)."""
    if judgments.empty:
        return judgments
    scores = judgments[(judgments["kind"] == "score") & judgments["parsed"].astype(bool)]
    return scores.drop_duplicates(["judge", "rubric_id", "interaction_id"], keep="last")
