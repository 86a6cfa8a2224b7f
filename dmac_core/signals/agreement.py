"""Agreement statistics: between analysts, and between a judge and the analysts.

- Krippendorff's α (ordinal), from the ``krippendorff`` package: 1 = perfect agreement, 0 = no
  more than chance, below 0 = systematic disagreement. Computed on the answers rated by two
  or more analysts (latest rating per analyst and answer); per analyst against the others it
  is α over every (their rating, another analyst's rating) pair on the answers both rated.
- Quadratic-weighted Cohen's κ (scikit-learn): agreement of two raters on the 1–5 scale where
  a disagreement of 2 stars costs four times one of 1 star; chance agreement scores 0.
- Spearman's ρ (SciPy): do the two raters order the answers alike (−1..1)?
- Pairwise accuracy: over the pairs of answers the reference rated differently, the share
  the other rater orders the same way (a tie by the other rater counts as half).

Each comes with its n (answers, or pairs); a statistic on a handful of answers is noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np
import pandas as pd

from ..logs.store import LearningStore, feedback_key

SCALE = [1, 2, 3, 4, 5]


def weighted_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Quadratic-weighted Cohen's κ of two raters on the 1–5 scale (NaN with fewer than 2 items
    or when it is undefined, e.g. both gave one value throughout)."""
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    if len(a) < 2:
        return float("nan")
    # imported when first used, for start-up time: scikit-learn takes about 2 s to import, and
    # training and the CLI import this module
    from sklearn.metrics import cohen_kappa_score

    with np.errstate(invalid="ignore", divide="ignore"):
        value = cohen_kappa_score(list(a), list(b), labels=SCALE, weights="quadratic")
    return float(value)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN when a side is constant or there are fewer than 3)."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    from scipy.stats import spearmanr  # imported when first used, for start-up time (about 1 s)

    return float(spearmanr(a, b).statistic)


def pairwise_accuracy(reference: Sequence[float], other: Sequence[float]) -> tuple[float, int]:
    """(share of differently rated pairs the other rater orders alike, number of such pairs)."""
    ref, oth = np.asarray(reference, float), np.asarray(other, float)
    i, j = np.triu_indices(len(ref), k=1)
    differ = ref[i] != ref[j]
    if not differ.any():
        return float("nan"), 0
    same_sign = np.sign(ref[i] - ref[j])[differ] * np.sign(oth[i] - oth[j])[differ]
    score = np.where(same_sign > 0, 1.0, np.where(same_sign == 0, 0.5, 0.0))
    return float(score.mean()), int(differ.sum())


def alpha(matrix: np.ndarray) -> float:
    """Krippendorff's ordinal α of a raters × items matrix (NaN: not rated); NaN when fewer
    than two items carry two ratings or every rating is the same value."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.size == 0 or ((~np.isnan(matrix)).sum(axis=0) >= 2).sum() < 2:
        return float("nan")
    values = matrix[~np.isnan(matrix)]
    if len(np.unique(values)) < 2:
        return float("nan")
    import krippendorff  # imported when first used, for start-up time (it imports SciPy)

    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                    value_domain=SCALE))


# -- analysts ------------------------------------------------------------------------------------
def ratings_by_analyst(store: LearningStore) -> pd.DataFrame:
    """Latest rating per (answer, analyst): columns ``item, user, rating``; ``item`` is the
    interaction id, or ``prompt\\x00response`` for a rating given without one."""
    feedback = store.feedback(latest_only=True)
    if feedback.empty:
        return pd.DataFrame(columns=["item", "user", "rating"])
    rows = []
    for row in feedback.to_dict("records"):
        about, user = feedback_key(row)
        item = about if isinstance(about, str) else f"{about[0]}\x00{about[1]}"
        rows.append({"item": item, "user": str(user), "rating": int(row["rating"])})
    return pd.DataFrame(rows)


@dataclass
class AnalystAgreement:
    """α overall and per analyst, with their n."""

    alpha: float
    items: int  # answers rated by two or more analysts
    analysts: int
    per_analyst: pd.DataFrame  # user, alpha_vs_others, items, pairs


def analyst_agreement(ratings: pd.DataFrame) -> AnalystAgreement:
    """Krippendorff's α between analysts on the answers two or more of them rated."""
    shared = ratings.groupby("item")["user"].transform("nunique") >= 2 if len(ratings) else pd.Series(dtype=bool)
    both = ratings[shared] if len(ratings) else ratings
    columns = ["user", "alpha_vs_others", "items", "pairs"]
    if both.empty:
        return AnalystAgreement(float("nan"), 0, 0, pd.DataFrame(columns=columns))
    matrix = both.pivot_table(index="user", columns="item", values="rating", aggfunc="last")
    rows = []
    for user in matrix.index:
        mine = matrix.loc[user]
        pairs = [(mine[item], other) for item in mine.index[mine.notna()]
                 for peer, other in matrix[item].items() if peer != user and not np.isnan(other)]
        pair_matrix = np.array(pairs, dtype=float).T if pairs else np.zeros((2, 0))
        rows.append({"user": str(user), "alpha_vs_others": alpha(pair_matrix),
                     "items": int(mine.notna().sum()), "pairs": len(pairs)})
    return AnalystAgreement(alpha(matrix.to_numpy()), matrix.shape[1], matrix.shape[0],
                            pd.DataFrame(rows, columns=columns))


def item_means(ratings: pd.DataFrame) -> dict[Hashable, float]:
    """Mean analyst rating per item."""
    return {k: float(v) for k, v in ratings.groupby("item")["rating"].mean().items()} if len(ratings) else {}


def rater_agreement(reference: Sequence[float], other: Sequence[int]) -> dict[str, Any]:
    """κ (reference rounded half up to whole stars), ρ and pairwise accuracy of ``other``
    against ``reference`` (e.g. a judge against the analysts' mean), each with its n."""
    whole = [int(np.floor(r + 0.5)) for r in reference]
    accuracy, pairs = pairwise_accuracy(reference, other)
    return {"kappa": weighted_kappa(whole, list(other)), "spearman": spearman(list(reference), list(other)),
            "pairwise_accuracy": accuracy, "n_items": len(reference), "n_pairs": pairs}
