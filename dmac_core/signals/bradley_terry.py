"""Bradley–Terry strengths from pairwise outcomes, with bootstrap intervals.

Model: entry *i* beats entry *j* with probability ``σ(θ_i − θ_j)`` (σ the logistic function),
so a strength difference of 1 is odds of e : 1. A tie counts as half a win each way (the
usual Bradley–Terry treatment of ties: it pulls the two strengths together). Strengths are
fitted by maximum a-posteriori with a weak Gaussian prior ``θ ~ N(0, 1/prior)`` — without it an
entry that never lost would have infinite strength — and reported centred (mean 0), so a
positive strength is above the average entry.

The fit works on the aggregated win matrix with Newton's method (a k×k solve per step, k the
number of entries), so the bootstrap's hundreds of refits take milliseconds. Bootstrap: the
votes are resampled with replacement (multinomial counts over the votes) and the model refitted;
the 2.5 and 97.5 percentiles of each strength are its 95 % interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Prior precision on each strength: as weak as one tie against an average opponent — small
# beside a few dozen votes, enough to keep an unbeaten entry finite.
DEFAULT_PRIOR = 0.25
BOOTSTRAP_SAMPLES = 400


@dataclass(frozen=True)
class Outcome:
    """One compared pair: ``score`` is 1.0 when ``a`` won, 0.0 when ``b`` won, 0.5 for a tie."""

    a: str
    b: str
    score: float


@dataclass
class Strengths:
    """A fitted model: strength and 95 % interval per entry, and the bootstrap draws behind them."""

    entries: list[str]
    strength: np.ndarray
    low: np.ndarray
    high: np.ndarray
    draws: np.ndarray = field(repr=False)  # (bootstrap samples, entries), each row centred

    def index(self, entry: str) -> int:
        return self.entries.index(entry)

    def win_probability(self, a: str, b: str) -> tuple[float, float, float]:
        """P(``a`` beats ``b``) under the fit, with its bootstrap 95 % interval."""
        i, j = self.index(a), self.index(b)
        point = float(_sigmoid(self.strength[i] - self.strength[j]))
        sampled = _sigmoid(self.draws[:, i] - self.draws[:, j])
        low, high = np.percentile(sampled, [2.5, 97.5]) if len(sampled) else (np.nan, np.nan)
        return point, float(low), float(high)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def win_matrix(pairs: np.ndarray, scores: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``W[i, j]``: (weighted) wins of i over j, ties counting half to each side."""
    w = np.ones(len(scores)) if weights is None else weights
    wins = np.zeros((k, k))
    np.add.at(wins, (pairs[:, 0], pairs[:, 1]), w * scores)
    np.add.at(wins, (pairs[:, 1], pairs[:, 0]), w * (1.0 - scores))
    return wins


def fit_matrix(wins: np.ndarray, prior: float = DEFAULT_PRIOR, tol: float = 1e-10, max_steps: int = 100,
               start: np.ndarray | None = None) -> np.ndarray:
    """MAP strengths (centred) for a win matrix, by Newton's method on the log-posterior
    ``Σ W_ij log σ(θ_i − θ_j) − prior/2 Σ θ_i²`` (strictly concave for ``prior`` > 0, so any
    ``start`` converges to the same optimum; a near one only saves steps)."""
    if prior <= 0:
        raise ValueError("prior must be positive: without it an unbeaten entry has no finite strength")
    k = len(wins)
    games = wins + wins.T
    theta = np.zeros(k) if start is None else np.array(start, dtype=float)
    for _ in range(max_steps):
        p = _sigmoid(theta[:, None] - theta[None, :])
        gradient = (wins - games * p).sum(axis=1) - prior * theta
        curvature = games * p * (1.0 - p)
        hessian = curvature - np.diag(curvature.sum(axis=1)) - prior * np.eye(k)
        step = np.linalg.solve(hessian, gradient)
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    return theta - theta.mean()


def fit(
    outcomes: Sequence[Outcome],
    entries: Sequence[str] | None = None,
    prior: float = DEFAULT_PRIOR,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Strengths:
    """Strengths of every entry named in ``outcomes`` (or ``entries``, in that order) with
    percentile-bootstrap 95 % intervals over ``samples`` resamplings of the outcomes."""
    names = list(entries) if entries is not None else sorted({o.a for o in outcomes} | {o.b for o in outcomes})
    position = {name: i for i, name in enumerate(names)}
    if not outcomes:
        empty = np.zeros(len(names))
        return Strengths(names, empty, empty * np.nan, empty * np.nan, np.zeros((0, len(names))))
    for o in outcomes:
        if o.a == o.b:
            raise ValueError(f"an outcome compares {o.a!r} with itself")
        if o.score not in (0.0, 0.5, 1.0):
            raise ValueError(f"an outcome's score is 1 (a won), 0 (b won) or 0.5 (tie), got {o.score!r}")
    rows = np.array([[position[o.a], position[o.b], o.score] for o in outcomes])
    # Votes with the same sides and result are interchangeable, so resampling the n votes is a
    # multinomial draw over the distinct (a, b, result) kinds weighted by how often each occurred:
    # the same bootstrap, at a cost that does not grow with the number of votes.
    kinds, seen = np.unique(rows, axis=0, return_counts=True)
    pairs, scores = kinds[:, :2].astype(int), kinds[:, 2]
    k, n = len(names), len(outcomes)
    strength = fit_matrix(win_matrix(pairs, scores, k, seen.astype(float)), prior)
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, k))
    for b in range(samples):
        counts = rng.multinomial(n, seen / n).astype(float)
        draws[b] = fit_matrix(win_matrix(pairs, scores, k, counts), prior, start=strength)
    low, high = np.percentile(draws, [2.5, 97.5], axis=0) if samples else (strength * np.nan, strength * np.nan)
    return Strengths(names, strength, np.asarray(low), np.asarray(high), draws)
