"""Tables for reviewing what was logged and rated (used by the Feedback page and the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..logs.records import RecordError
from ..logs.store import LearningStore

REVIEW_COLUMNS = [
    "ts", "month", "model", "model_version", "purpose", "prompt", "response", "rating", "feedback", "correction",
    "rated_by", "interaction_id", "images",
]
# Why a logged call was made (the interaction's ``purpose``): analysts asked, an evaluation, the
# training teacher, or the LLM judge. Records from before the field existed were chat.
PURPOSES = ("chat", "evaluation", "teacher", "judge")


def review_table(store: LearningStore) -> pd.DataFrame:
    """One row per logged answer (and per stand-alone rated answer), newest first, with the
    latest rating and textual feedback of each analyst. Failed attempts are left out."""
    interactions = store.interactions()
    feedback = store.feedback(latest_only=True)
    if not interactions.empty:
        answers = interactions[interactions["error"].isna() & (interactions["response"].fillna("") != "")]
        if "images" not in answers.columns:
            answers = answers.assign(images=None)
        answers = answers.assign(purpose=answers["purpose"].fillna("chat") if "purpose" in answers else "chat")
        answers = answers.rename(columns={"id": "interaction_id"})[
            ["interaction_id", "ts", "model", "model_version", "purpose", "prompt", "response", "images"]
        ]
    else:
        answers = pd.DataFrame(
            columns=["interaction_id", "ts", "model", "model_version", "purpose", "prompt", "response", "images"]
        )
    if not feedback.empty:
        rated = feedback.rename(columns={"user": "rated_by", "ts": "rated_at"})
        linked = rated[rated["interaction_id"].notna()][
            ["interaction_id", "rating", "feedback", "correction", "rated_by", "rated_at"]
        ]
        table = answers.merge(linked, on="interaction_id", how="left")
        alone = rated[rated["interaction_id"].isna()].copy()
        if not alone.empty:
            alone["ts"] = alone["rated_at"]
            alone["model"] = "(given as prompt + response)"
            alone["model_version"] = None
            alone["purpose"] = "chat"
            table = pd.concat([table, alone[table.columns.intersection(alone.columns)]], ignore_index=True)
    else:
        table = answers.assign(rating=pd.NA, feedback=None, correction=None, rated_by=None, rated_at=pd.NaT)
    table = table.copy()
    table["ts"] = pd.to_datetime(table["ts"], utc=True)
    table["month"] = table["ts"].dt.strftime("%Y-%m") if len(table) else pd.Series(dtype="object")
    table["rating"] = pd.to_numeric(table["rating"], errors="coerce").astype("Int64")
    for column in REVIEW_COLUMNS:
        if column not in table.columns:
            table[column] = None
    return table.sort_values("ts", ascending=False, kind="stable")[REVIEW_COLUMNS].reset_index(drop=True)


def attached_images(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(prompt, image reference) for every image attached to the rows of ``table``."""
    out = []
    for prompt, refs in zip(table["prompt"], table["images"]):
        # Cells are lists, Arrow-backed arrays, or missing (None / NaN) for answers without images.
        if refs is None or refs is pd.NA or isinstance(refs, (str, float)):
            continue
        out.extend((str(prompt), str(ref)) for ref in refs)
    return out


def filter_review(
    table: pd.DataFrame,
    models: list[str] | None = None,
    months: list[str] | None = None,
    ratings: list[Any] | None = None,
    purposes: list[str] | None = None,
) -> pd.DataFrame:
    """Filter the review table; ``ratings`` may contain 1..5 and "unrated"; ``purposes`` are
    interaction purposes (see :data:`PURPOSES`)."""
    mask = pd.Series(True, index=table.index)
    if purposes:
        mask &= table["purpose"].fillna("chat").isin(purposes)
    if models:
        mask &= table["model"].isin(models)
    if months:
        mask &= table["month"].isin(months)
    if ratings:
        wanted = {int(r) for r in ratings if r != "unrated"}
        by_rating = table["rating"].isin(wanted).fillna(False).astype(bool)
        if "unrated" in ratings:
            by_rating |= table["rating"].isna()
        mask &= by_rating
    return table[mask].reset_index(drop=True)


def rating_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Count and mean rating per model over the rated rows."""
    rated = table.dropna(subset=["rating"])
    if rated.empty:
        return pd.DataFrame(columns=["model", "rated", "mean_rating"])
    summary = rated.groupby("model")["rating"].agg(rated="count", mean_rating="mean").reset_index()
    summary["mean_rating"] = summary["mean_rating"].astype(float).round(2)
    return summary


RUN_COLUMNS = [
    "run_id", "state", "trigger", "user", "method", "started from", "examples", "replayed", "votes", "dpo from votes",
    "created", "finished",
    "steps", "train_loss", "eval_loss", "eval_token_accuracy", "version", "promoted", "message",
]


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Past training runs (``run.json`` records), one readable row each, newest first."""
    rows = []
    for run in runs:
        metrics = run.get("metrics") or {}
        counts = (run.get("lineage") or {}).get("counts") or {}
        start = run.get("start") or {}
        rows.append(
            {
                **{key: run.get(key) for key in ("run_id", "state", "trigger", "user", "method", "created", "finished")},
                "started from": _start_label(start.get("parent_version"), start.get("spec"), start.get("base_model")),
                # the method's examples from the analysts (train + held out); replayed base answers apart
                "examples": _method_examples(run.get("method"), counts),
                "replayed": counts.get("replay", 0) if counts else None,
                # blind-comparison votes that gave examples, apart from star ratings (older runs: none)
                "votes": len((run.get("lineage") or {}).get("vote_ids") or []) if counts else None,
                "dpo from votes": counts.get("dpo_from_votes", 0) if counts else None,
                "steps": metrics.get("steps"),
                "train_loss": metrics.get("train_loss"),
                "eval_loss": metrics.get("eval_loss"),
                "eval_token_accuracy": metrics.get("eval_token_accuracy"),
                "version": run.get("version"),
                "promoted": run.get("promoted"),
                "message": run.get("message"),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _method_examples(method: str | None, counts: dict[str, Any]) -> int | None:
    """How many examples of the run's method the dataset had (training + held out)."""
    if not counts:
        return None
    prefix = method if method in ("dpo", "kto") else "sft_train"
    held_out = f"{method}_eval" if method in ("dpo", "kto") else "sft_eval"
    return int(counts.get(prefix) or 0) + int(counts.get(held_out) or 0)


EDITABLE_COLUMNS = ("rating", "feedback", "correction")


def _clean(value: Any) -> Any:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def apply_review_edits(store: LearningStore, before: pd.DataFrame, after: pd.DataFrame, user: str) -> int:
    """Write a new feedback record (by ``user``) for every row whose rating, note or correction
    changed between ``before`` and ``after`` (same index). Feedback is append-only: the new
    record supersedes the analyst's older one. Returns the number of records written.

    Rows without a rating cannot be saved with a note only: a rating is required, and the
    first invalid row stops with a :class:`~dmac_core.logs.records.RecordError` naming it; rows
    before it are already saved."""

    written = 0
    for index in after.index:
        old, new = before.loc[index], after.loc[index]
        if all(_clean(old[c]) == _clean(new[c]) for c in EDITABLE_COLUMNS):
            continue
        rating = _clean(new["rating"])
        if rating is None:
            raise RecordError(f"Row {index + 1} ({str(new['prompt'])[:40]!r}): give a rating from 1 to 5 to save it")
        store.append_feedback(
            interaction_id=_clean(new["interaction_id"]),
            prompt=str(new["prompt"]),
            response=str(new["response"]),
            rating=int(rating),
            feedback=str(_clean(new["feedback"]) or ""),
            correction=_clean(new["correction"]) or None,
            user=user,
        )
        written += 1
    return written


def bulk_rate(store: LearningStore, rows: pd.DataFrame, rating: int, user: str) -> int:
    """Rate every answer in ``rows`` (e.g. a filtered selection) with ``rating`` as ``user``,
    keeping each row's note and correction. Returns the number of records written."""
    seen: set[Any] = set()
    written = 0
    for row in rows.to_dict("records"):
        about = _clean(row["interaction_id"]) or (row["prompt"], row["response"])
        if about in seen:
            continue  # several analysts' rows of the same answer: rate it once
        seen.add(about)
        store.append_feedback(
            interaction_id=_clean(row["interaction_id"]), prompt=row["prompt"], response=row["response"],
            rating=rating, feedback=str(_clean(row["feedback"]) or ""), correction=_clean(row["correction"]),
            user=user,
        )
        written += 1
    return written


def analyst_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per analyst: answers rated, mean rating, corrections written."""
    rated = table.dropna(subset=["rating"])
    if rated.empty:
        return pd.DataFrame(columns=["analyst", "rated", "mean_rating", "corrections"])
    grouped = rated.groupby("rated_by")
    out = pd.DataFrame(
        {
            "rated": grouped["rating"].count(),
            "mean_rating": grouped["rating"].mean().astype(float).round(2),
            "corrections": grouped["correction"].apply(lambda s: int(s.fillna("").astype(str).str.strip().ne("").sum())),
        }
    )
    return out.reset_index().rename(columns={"rated_by": "analyst"})


def ratings_by_version(store: LearningStore) -> pd.DataFrame:
    """Mean of the latest ratings per model and model version (local versions separately)."""
    table = review_table(store)
    rated = table.dropna(subset=["rating"]).copy()
    if rated.empty:
        return pd.DataFrame(columns=["model", "model_version", "rated", "mean_rating"])
    rated["model_version"] = rated["model_version"].fillna("-")
    out = rated.groupby(["model", "model_version"])["rating"].agg(rated="count", mean_rating="mean").reset_index()
    out["mean_rating"] = out["mean_rating"].astype(float).round(2)
    return out


def usage_table(statuses: list[Any]) -> pd.DataFrame:
    """Each model's availability, health and usage today against its caps."""
    rows = []
    for s in statuses:
        caps = s.caps or {}
        rows.append(
            {
                "model": s.display_name, "name": s.name, "available": s.available,
                "why not": "" if s.available else s.reason, "cooling down (s)": round(s.cooldown_s),
                "requests today": s.requests_today,
                "of which evaluation": s.requests_by_purpose.get("evaluation", 0),
                "of which teacher": s.requests_by_purpose.get("teacher", 0),
                # admitted calls still waiting for an answer: they hold their place under the caps
                "in flight": s.requests_in_flight,
                "requests/day cap": caps.get("requests_per_day"),
                "tokens today": s.tokens_today, "tokens/day cap": caps.get("tokens_per_day"),
            }
        )
    return pd.DataFrame(rows)


def versions_table(registry: Any, problem: Callable[[str], str | None] | None = None) -> pd.DataFrame:
    """Registered versions of the local learner, newest first, with gate results, which is served
    and whether each can be loaded (``problem``: why a version cannot be, by default judged from
    its files by the registry; the serving backend's ``version_problem`` adds failed loads)."""
    served = registry.served_id()
    problem = problem or registry.problem
    rows = [{"version": "base", "served": served == "base", "loads": "yes", "created": None, "method": None,
             "run_id": None, "started from": "-", "gate": "bundled base model"}]
    for version in registry.versions():
        meta = version.metadata
        rows.append(
            {
                "version": version.id, "served": version.id == served,
                "loads": f"no: {issue}" if (issue := problem(version.id)) else "yes", "created": meta.get("created"),
                "method": meta.get("method"), "run_id": meta.get("run_id"),
                "started from": _start_label(meta.get("parent_version"), meta.get("start_from"), meta.get("base_model")),
                "gate": gate_summary(meta.get("gate")),
            }
        )
    return pd.DataFrame(rows[::-1])


_STATUS_MARK = {"passed": "✅", "failed": "❌", "no evidence": "⚠️", "off": "➖", "info": "ℹ️"}


def gate_summary(gate: dict[str, Any] | None) -> str:
    """One line per version: the verdict and each check's numbers, e.g.
    ``passed vs base · ✅ rated 0.31→0.95 · ✅ general 45/46 kept · ✅ loss 1.21→1.05``."""
    if not gate:
        return "-"
    verdict = f"{'passed' if gate.get('passed') else 'not passed'} vs {gate.get('champion', '?')}"
    parts = [verdict]
    for check in gate.get("checks") or []:
        mark = _STATUS_MARK.get(check.get("status"), "")
        name = check.get("check")
        if check.get("status") in ("off", "no evidence"):
            parts.append(f"{mark} {name} {check.get('status')}")
        elif name == "general":
            parts.append(f"{mark} general {check.get('kept')}/{check.get('known_before')} kept")
        elif name == "overfitting":
            parts.append(f"{mark} loss {check.get('before'):.2f}→{check.get('after'):.2f}")
        elif check.get("before") is not None and check.get("after") is not None:
            parts.append(f"{mark} {name} {check['before']:.2f}→{check['after']:.2f}")
    if not gate.get("checks") and gate.get("reason"):
        parts.append(str(gate["reason"]))
    return " · ".join(parts)


def gate_checks_table(gate: dict[str, Any] | None) -> pd.DataFrame:
    """The gate's checks of one version: status, before (served version) and after (this one)."""
    rows = []
    for check in (gate or {}).get("checks") or []:
        before, after = check.get("before"), check.get("after")
        if check.get("check") == "general" and check.get("known_before") is not None:
            before, after = f"{check['known_before']} right", f"{check['kept']} of them still right"
        rows.append({"check": check.get("title"), "status": f"{_STATUS_MARK.get(check.get('status'), '')} "
                     f"{check.get('status')}", "before": before, "after": after, "what was measured": check.get("summary")})
    return pd.DataFrame(rows, columns=["check", "status", "before", "after", "what was measured"])


def gate_answer_changes(gate: dict[str, Any] | None) -> pd.DataFrame:
    """General questions whose answer was lost (or newly got right), before → after."""
    rows = []
    for check in (gate or {}).get("checks") or []:
        for change, key in (("lost", "lost"), ("newly right", "gained")):
            for item in check.get(key) or []:
                rows.append({"change": change, "question": item["prompt"], "before": item["before"],
                             "after": item["after"]})
    return pd.DataFrame(rows, columns=["change", "question", "before", "after"])


def gate_rated_answers(gate: dict[str, Any] | None) -> pd.DataFrame:
    """The rated answers the gate asked again: reference, before → after, and the match scores."""
    for check in (gate or {}).get("checks") or []:
        if check.get("check") == "rated" and check.get("items"):
            return pd.DataFrame(check["items"]).rename(columns={"score_before": "match before",
                                                                "score_after": "match after"})
    return pd.DataFrame(columns=["prompt", "reference", "before", "after", "match before", "match after"])


def _start_label(parent_version: str | None, spec: str | None, base_model: str | None) -> str:
    """Where a run (or the version it made) started: its parent version, another base model
    (by directory name), or the base."""
    if parent_version:
        return str(parent_version)
    spec = spec or "base"
    return "base" if spec == "base" else f"model {Path(str(base_model or spec)).name}"
