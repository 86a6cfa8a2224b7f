"""The statistics behind the signals: Bradley–Terry strengths and their bootstrap intervals,
weighted κ, Spearman, pairwise accuracy and Krippendorff's α, against known values and
independent references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import spearmanr

from dmac_core.signals.agreement import alpha, analyst_agreement, pairwise_accuracy, rater_agreement, weighted_kappa
from dmac_core.signals.bradley_terry import DEFAULT_PRIOR, Outcome, fit, fit_matrix, win_matrix

NAMES = [f"m{i}" for i in range(6)]
TRUE = np.array([-1.2, -0.6, -0.1, 0.2, 0.6, 1.1])
TRUE = TRUE - TRUE.mean()


def simulate(n: int, rng: np.random.Generator) -> list[Outcome]:
    """Votes between random pairs, decided by the Bradley–Terry model with strengths TRUE."""
    out = []
    for _ in range(n):
        i, j = rng.choice(len(NAMES), 2, replace=False)
        p = 1.0 / (1.0 + np.exp(-(TRUE[i] - TRUE[j])))
        out.append(Outcome(NAMES[i], NAMES[j], 1.0 if rng.random() < p else 0.0))
    return out


def test_bradley_terry_recovers_known_strengths_from_500_votes() -> None:
    fitted = fit(simulate(500, np.random.default_rng(7)), NAMES, samples=100)
    rho = spearmanr(fitted.strength, TRUE).statistic
    assert rho >= 0.9
    assert np.max(np.abs(fitted.strength - TRUE)) < 0.5
    assert abs(fitted.strength.mean()) < 1e-9  # reported centred


def test_bootstrap_intervals_cover_the_true_strengths_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    covered = []
    for replication in range(40):
        fitted = fit(simulate(500, rng), NAMES, samples=200, seed=replication)
        covered.extend((fitted.low <= TRUE) & (TRUE <= fitted.high))
    coverage = float(np.mean(covered))
    assert 0.85 <= coverage <= 1.0, coverage


def test_newton_fit_equals_a_general_optimiser_on_the_same_posterior() -> None:
    outcomes = simulate(120, np.random.default_rng(3)) + [Outcome("m0", "m5", 0.5)]
    pairs = np.array([[NAMES.index(o.a), NAMES.index(o.b)] for o in outcomes])
    scores = np.array([o.score for o in outcomes])
    wins = win_matrix(pairs, scores, len(NAMES))

    def negative_log_posterior(theta: np.ndarray) -> float:
        diff = theta[:, None] - theta[None, :]
        return float(-(wins * -np.logaddexp(0, -diff)).sum() + DEFAULT_PRIOR / 2 * (theta ** 2).sum())

    reference = minimize(negative_log_posterior, np.zeros(len(NAMES)), method="BFGS", options={"gtol": 1e-9}).x
    np.testing.assert_allclose(fit_matrix(wins), reference - reference.mean(), atol=1e-5)


def test_an_unbeaten_entry_gets_a_finite_strength_and_bad_outcomes_are_refused() -> None:
    fitted = fit([Outcome("a", "b", 1.0)] * 10, samples=50)
    assert np.isfinite(fitted.strength).all() and fitted.strength[0] > fitted.strength[1]
    p, low, high = fitted.win_probability("a", "b")
    assert 0.5 < p < 1 and low - 1e-9 <= p <= high + 1e-9  # ten identical votes: every resample is the same
    with pytest.raises(ValueError, match="itself"):
        fit([Outcome("a", "a", 1.0)])
    with pytest.raises(ValueError, match="score"):
        fit([Outcome("a", "b", 0.7)])


def quadratic_kappa_by_hand(a: list[int], b: list[int]) -> float:
    """Cohen's quadratic-weighted κ from its definition, on the 1..5 scale."""
    k = 5
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[x - 1, y - 1] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def test_weighted_kappa_equals_its_definition() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(1, 6, 60).tolist()
    b = [min(5, max(1, x + int(rng.integers(-1, 2)))) for x in a]
    assert weighted_kappa(a, b) == pytest.approx(quadratic_kappa_by_hand(a, b), abs=1e-12)
    assert weighted_kappa(a, a) == pytest.approx(1.0)
    assert np.isnan(weighted_kappa([3], [3]))
    with pytest.raises(ValueError):
        weighted_kappa([1, 2], [1])


def test_krippendorff_alpha_reproduces_the_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
    # missing values; ordinal α = 0.815.
    nan = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                     [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])
    assert alpha(data) == pytest.approx(0.815, abs=5e-4)
    assert alpha(np.array([[1, 2], [1, 2]])) == pytest.approx(1.0)
    assert np.isnan(alpha(np.array([[3, 3], [3, 3]])))  # no variation: undefined


def test_pairwise_accuracy_and_rater_agreement_count_exactly() -> None:
    # pairs the reference orders: (1,4) (1,2) (4,2)... reference [1, 4, 2, 2] → 5 differing pairs
    accuracy, pairs = pairwise_accuracy([1, 4, 2, 2], [2, 5, 1, 3])
    # (0,1) same; (0,2) 1<2 vs 2>1 wrong; (0,3) same; (1,2) same; (1,3) same → 4/5
    assert (accuracy, pairs) == (pytest.approx(0.8), 5)
    assert pairwise_accuracy([1, 2], [3, 3]) == (0.5, 1)  # a tie by the other rater is half
    stats = rater_agreement([1.0, 4.5, 2.0, 2.0], [1, 5, 2, 2])
    assert stats["n_items"] == 4 and stats["n_pairs"] == 5 and stats["pairwise_accuracy"] == 1.0
    assert stats["kappa"] == pytest.approx(1.0)  # 4.5 rounds half up to 5
    assert stats["spearman"] == pytest.approx(spearmanr([1.0, 4.5, 2.0, 2.0], [1, 5, 2, 2]).statistic)


def test_analyst_agreement_overall_and_each_against_the_others() -> None:
    import krippendorff
    import pandas as pd

    rows = [("i1", "ana", 5), ("i1", "bo", 4), ("i1", "cy", 5), ("i2", "ana", 2), ("i2", "bo", 2),
            ("i3", "ana", 1), ("i3", "cy", 4), ("i4", "bo", 3), ("i5", "ana", 4)]
    ratings = pd.DataFrame(rows, columns=["item", "user", "rating"])
    result = analyst_agreement(ratings)
    assert (result.items, result.analysts) == (3, 3)  # i4 and i5 have one rating each
    matrix = [[5, 2, 1], [4, 2, np.nan], [5, np.nan, 4]]  # ana, bo, cy × i1, i2, i3
    assert result.alpha == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal",
                                                            value_domain=[1, 2, 3, 4, 5]))
    per = result.per_analyst.set_index("user")
    assert per.loc["ana", "pairs"] == 4 and per.loc["ana", "items"] == 3  # i1×2, i2×1, i3×1
    ana_pairs = np.array([[5, 5, 2, 1], [4, 5, 2, 4]], dtype=float)
    assert per.loc["ana", "alpha_vs_others"] == pytest.approx(
        krippendorff.alpha(reliability_data=ana_pairs, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5]))
