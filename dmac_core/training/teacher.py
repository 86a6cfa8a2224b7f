"""Textual feedback applied: a teacher model rewrites rated answers following the feedback.

An analyst's comment ("too vague, give the year") teaches nothing while it sits next to the
example. Before a run, a teacher model (``models.deepseek.teacher``, Gemini by default)
rewrites each commented answer following its comment; the rewrite becomes a preferred
target (SFT) and the chosen side of a DPO pair against the original (see
:func:`dmac_core.training.dataset.build_dataset`).

- The teacher is a plain callable ``teacher(prompt, answer, feedback) -> str | None`` so the
  job does not depend on the router; :func:`make_router_teacher` builds the one the workbench
  uses, which goes through :class:`~dmac_core.serving.router.ModelManager` so the teacher's usage
  caps count and every call is logged as an interaction (user ``"teacher"``).
- Rewrites are cached in ``<data_dir>/teacher/rewrites.jsonl`` keyed by feedback id, so an
  answer is never sent twice. Feedback is append-only: an edited comment is a new record
  with a new id and gets a new rewrite.
- Only answers rated below 5, with a non-empty comment and no analyst correction are sent:
  a 5-star comment is praise, and a correction already says what the answer should be.
- ``None`` from the teacher (cap reached, unavailable) stops the requests for this run; the
  comment then stays with its example as before, and the next run asks again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..fsio import append_jsonl, read_jsonl
from ..logs.records import format_ts, utc_now
from ..logs.store import LearningStore
from ..serving.errors import RoutingError

Teacher = Callable[[str, str, str], "str | None"]

REWRITE_INSTRUCTIONS = (
    "You revise answers written by an assistant. Rewrite the answer below so that it follows the "
    "reviewer's feedback: keep what was right, fix what the feedback points out. Reply with the "
    "improved answer only, with no preamble and no mention of the feedback."
)


def rewrite_prompt(prompt: str, answer: str, feedback: str) -> str:
    """The single user turn sent to the teacher."""
    return f"{REWRITE_INSTRUCTIONS}\n\nQuestion:\n{prompt}\n\nAnswer:\n{answer}\n\nReviewer's feedback:\n{feedback}"


class RewriteCache:
    """Teacher rewrites by feedback id, in an append-only JSONL file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, str]:
        """Feedback id → rewritten answer (a torn last line after a crash is skipped)."""
        return {str(row.get("feedback_id")): row["rewrite"] for row in read_jsonl(self.path)
                if isinstance(row.get("rewrite"), str)}

    def append(self, feedback_id: str, rewrite: str, teacher: str) -> None:
        append_jsonl(self.path, [{"feedback_id": feedback_id, "ts": format_ts(utc_now()), "teacher": teacher,
                                  "rewrite": rewrite}])


def pending_rewrites(store: LearningStore, cached: dict[str, str]) -> list[dict[str, Any]]:
    """Latest feedback records whose answer the teacher should rewrite and has not yet."""
    feedback = store.feedback(latest_only=True)
    out = []
    for row in feedback.to_dict("records"):
        text = str(row.get("feedback") or "").strip()
        correction = row.get("correction")
        if not text or str(row["id"]) in cached or (isinstance(correction, str) and correction.strip()):
            continue
        if int(row["rating"]) >= 5 or not str(row.get("prompt") or "").strip() or not str(row.get("response") or "").strip():
            continue
        out.append({"id": str(row["id"]), "prompt": str(row["prompt"]), "response": str(row["response"]), "feedback": text})
    return out


def apply_teacher(
    store: LearningStore, cache: RewriteCache, teacher: Teacher, teacher_name: str, max_calls: int | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Ask ``teacher`` for every pending rewrite (cached as they arrive); return counts.

    Stops at the first ``None`` (cap reached or teacher unavailable) or error, and before the
    next call once ``cancelled()`` (the run was cancelled: no more paid calls for it); the
    remaining comments are asked for in a later run.
    """
    pending = pending_rewrites(store, cache.load())
    done, stopped = 0, None
    for item in pending[:max_calls] if max_calls is not None else pending:
        if cancelled():
            stopped = "the run was cancelled"
            break
        try:
            text = teacher(item["prompt"], item["response"], item["feedback"])
        except Exception as exc:  # a teacher failure must not fail the training run
            stopped = f"{type(exc).__name__}: {exc}"[:300]
            break
        if not text or not text.strip():
            stopped = "the teacher gave no rewrite (unavailable or over its cap)"
            break
        cache.append(item["id"], text.strip(), teacher_name)
        done += 1
    return {"teacher": teacher_name, "pending": len(pending), "rewritten": done, "stopped": stopped}


def make_router_teacher(get_manager: Callable[[], Any], model: str) -> Teacher:
    """A teacher that asks ``model`` through the router (caps counted, interaction logged).

    ``get_manager`` returns the :class:`~dmac_core.serving.router.ModelManager` (a callable because the
    manager is built after the job manager). Returns None when the model cannot answer now
    (unavailable, cooling down, over its cap) instead of raising.
    """

    def teach(prompt: str, answer: str, feedback: str) -> str | None:
        manager = get_manager()
        if manager is None or model not in manager.backends:
            return None
        try:
            result = manager.respond([{"role": "user", "content": rewrite_prompt(prompt, answer, feedback)}],
                                     model=model, user="teacher", session_id="teacher", purpose="teacher")
        except RoutingError:
            return None
        return result.text

    return teach
