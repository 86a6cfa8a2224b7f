"""How long the blind-vote leaderboard takes to build (Metrics page, every visit).

Compares, interleaved within each run on the same simulated votes, the bootstrap as shipped
(resampling the distinct (a, b, result) kinds of votes: a multinomial over a few dozen
categories) with resampling every vote one by one (a multinomial over n votes), which gives the
same distribution of resamples. Prints the median and spread per size, the ratio, and the load
average (the machine may be shared).

    .venv/bin/python bench/leaderboard_bench.py [--runs 5] [--entries 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
import sys

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmac_core.signals.bradley_terry import BOOTSTRAP_SAMPLES, Outcome, fit, fit_matrix, win_matrix  # noqa: E402


def simulate(n: int, k: int, rng: np.random.Generator) -> list[Outcome]:
    true = np.linspace(-1.0, 1.0, k)
    names = [f"m{i}" for i in range(k)]
    out = []
    for _ in range(n):
        i, j = rng.choice(k, 2, replace=False)
        p = 1.0 / (1.0 + np.exp(-(true[i] - true[j])))
        out.append(Outcome(names[i], names[j], 1.0 if rng.random() < p else 0.0))
    return out


def per_vote_bootstrap(outcomes: list[Outcome], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> np.ndarray:
    """The reference: every vote resampled individually."""
    names = sorted({o.a for o in outcomes} | {o.b for o in outcomes})
    position = {name: i for i, name in enumerate(names)}
    pairs = np.array([[position[o.a], position[o.b]] for o in outcomes])
    scores = np.array([o.score for o in outcomes])
    n, k = len(outcomes), len(names)
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, k))
    for b in range(samples):
        counts = rng.multinomial(n, np.full(n, 1.0 / n)).astype(float)
        draws[b] = fit_matrix(win_matrix(pairs, scores, k, counts))
    return np.percentile(draws, [2.5, 97.5], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--entries", type=int, default=8)
    args = parser.parse_args()
    for n in (1_000, 10_000):
        outcomes = simulate(n, args.entries, np.random.default_rng(n))
        shipped, reference = [], []
        for _run in range(args.runs):  # interleaved: both see the same machine load
            start = time.perf_counter()
            fitted = fit(outcomes)
            shipped.append(time.perf_counter() - start)
            start = time.perf_counter()
            low, high = per_vote_bootstrap(outcomes)
            reference.append(time.perf_counter() - start)
        width = float(np.mean(fitted.high - fitted.low)), float(np.mean(high - low))
        print(f"{n:>6} votes, {args.entries} entries, {BOOTSTRAP_SAMPLES} resamples: shipped "
              f"{statistics.median(shipped):.3f} s ({min(shipped):.3f}–{max(shipped):.3f}), per vote "
              f"{statistics.median(reference):.3f} s ({min(reference):.3f}–{max(reference):.3f}), "
              f"ratio {statistics.median(reference) / statistics.median(shipped):.1f}x; "
              f"mean interval width {width[0]:.3f} vs {width[1]:.3f}")
    print(f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
