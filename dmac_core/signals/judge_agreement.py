"""Is a judge good enough to learn from? Its agreement with analysts, per judge and rubric.

On the answers analysts rated, the judge's latest score is compared with the analysts' mean
rating (:func:`dmac_core.signals.agreement.rater_agreement`: weighted κ, Spearman ρ, pairwise
accuracy, each with n); its pair verdicts are compared with the analysts' blind votes (share
of a/b votes it called the same way). A judge + rubric *qualifies* when κ ≥
``judge.agreement_bar`` on at least ``judge.min_items`` answers; only then do its scores of
unrated answers become training material (:func:`qualified_labels`), marked as judge labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..config import JudgeConfig
from ..logs.store import LearningStore
from .agreement import item_means, rater_agreement, ratings_by_analyst
from .judge import latest_scores

AGREEMENT_COLUMNS = ["judge", "rubric_id", "kappa", "spearman", "pairwise_accuracy", "n_items", "n_pairs",
                     "unparsed", "pair_accuracy", "n_votes", "qualifies"]


def _pair_agreement(judgments: pd.DataFrame, votes: pd.DataFrame, judge: str, rid: str) -> tuple[float, int]:
    if judgments.empty or votes.empty:
        return float("nan"), 0
    mine = judgments[(judgments["judge"] == judge) & (judgments["rubric_id"] == rid)
                     & (judgments["kind"] == "pair") & judgments["parsed"].astype(bool)]
    mine = mine.drop_duplicates(["interaction_a", "interaction_b"], keep="last")
    decided = votes[votes["choice"].isin(["a", "b"])]
    merged = decided.merge(mine[["interaction_a", "interaction_b", "choice"]], on=["interaction_a", "interaction_b"],
                           suffixes=("", "_judge"))
    if merged.empty:
        return float("nan"), 0
    return float((merged["choice"] == merged["choice_judge"]).mean()), len(merged)


def judge_agreement(store: LearningStore, config: JudgeConfig) -> pd.DataFrame:
    """One row per judge + rubric that labelled anything (columns :data:`AGREEMENT_COLUMNS`)."""
    judgments = store.judgments()
    if judgments.empty:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    means = item_means(ratings_by_analyst(store))
    scores = latest_scores(judgments)
    votes = store.votes()
    rows = []
    for (judge, rid), group in judgments.groupby(["judge", "rubric_id"]):
        mine = scores[(scores["judge"] == judge) & (scores["rubric_id"] == rid)]
        mine = mine[mine["interaction_id"].isin(list(means))]
        reference = [means[i] for i in mine["interaction_id"]]
        stats = rater_agreement(reference, [int(s) for s in mine["score"]])
        pair_accuracy, n_votes = _pair_agreement(judgments, votes, str(judge), str(rid))
        kappa = stats["kappa"]
        rows.append({"judge": judge, "rubric_id": rid, **stats,
                     "unparsed": int((~group["parsed"].astype(bool)).sum()),
                     "pair_accuracy": pair_accuracy, "n_votes": n_votes,
                     "qualifies": bool(stats["n_items"] >= config.min_items and not np.isnan(kappa)
                                       and kappa >= config.agreement_bar)})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def qualified_labels(store: LearningStore, config: JudgeConfig) -> list[dict[str, Any]]:
    """Scores of answers no analyst rated, by judges + rubrics that qualify (the newest label
    per answer), ready for :func:`dmac_core.training.dataset.add_judge_labels`."""
    agreement = judge_agreement(store, config)
    passing = agreement[agreement["qualifies"]] if len(agreement) else agreement
    if passing.empty:
        return []
    kappas = {(r["judge"], r["rubric_id"]): (float(r["kappa"]), int(r["n_items"])) for r in passing.to_dict("records")}
    scores = latest_scores(store.judgments())
    scores = scores[[(j, r) in kappas for j, r in zip(scores["judge"], scores["rubric_id"])]]
    rated = set(ratings_by_analyst(store)["item"])
    scores = scores[~scores["interaction_id"].isin(rated)].drop_duplicates("interaction_id", keep="last")
    labels = []
    for row in scores.to_dict("records"):
        interaction = store.get_interaction(row["interaction_id"])
        if interaction is None:
            continue
        kappa, n = kappas[(row["judge"], row["rubric_id"])]
        labels.append({"judgment_id": row["id"], "interaction_id": row["interaction_id"], "score": int(row["score"]),
                       "judge": row["judge"], "rubric_id": row["rubric_id"], "kappa": kappa, "n_items": n,
                       "interaction": interaction})
    return labels
