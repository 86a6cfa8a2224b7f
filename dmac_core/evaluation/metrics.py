"""Text-similarity metrics and paired bootstrap significance, as pure functions.

Definitions (the README's metrics section points here):

* **ROUGE-1/2/L** — F1 of unigram / bigram / longest-common-subsequence overlap between an
  answer and its reference, from Google's ``rouge-score`` (what the ``evaluate`` library's "rouge" metric
  wraps; that loader needs a hub and fails offline). ``use_stemmer=False`` by default so a
  score is exactly reproducible from the two strings; note that rouge-score's tokenizer
  lowercases and keeps only ``[a-z0-9]`` runs, so text in non-Latin scripts scores 0.
  Reported values are means over items, in 0..1.
* **BLEU** — ``sacrebleu`` with its defaults (13a tokenisation, 4-grams, exp smoothing),
  0..100. The *corpus* score pools n-gram counts over all items (the standard, comparable
  number); the *per-item* score is ``sentence_bleu`` with ``effective_order=True`` (as
  sacrebleu recommends for single sentences) and is only for inspecting items.
* **Key-term recall** — the fraction of the reference's content words (lowercased, stopwords
  removed, length ≥ 3 or digits) that appear in the answer. ROUGE-L flatters a model that
  learned to answer in one short sentence echoing the question (measured ≈ +0.28 with no
  fact right); key-term recall shows whether the facts themselves came out.
* **Paired bootstrap** — resample items with replacement (the same indices for both models),
  recompute the statistic for each model, take the 2.5/97.5 percentiles of the difference
  ``B − A``; the difference is *significant* when that interval excludes 0. For BLEU the
  corpus score itself is recomputed per resample from cached per-item n-gram statistics
  (sacrebleu's own significance module does the same), not averaged sentence BLEU. Below
  :data:`MIN_PAIRED_ITEMS` paired items no difference is called significant: a percentile
  interval from a handful of items is far too narrow (three items that all moved the same way
  give an interval that excludes 0 with p = 0), so the verdict is "too few items to tell".
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are aren as at be because been before being below
    between both but by can cannot could did didn do does doesn doing don down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is isn it its itself just let me more
    most my myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
    such than that the their theirs them themselves then there these they this those through to too under until up
    very was wasn we were weren what when where which while who whom why will with won would you your yours yourself
    yourselves yes okay ok one get got may might must shall via per upon""".split()
)
_WORD_RE = re.compile(r"[a-z0-9]+")

# Fewest paired items on which a comparison calls a difference significant or not. On 50 noise
# items the percentile bootstrap calls 5-6 % of differences significant (the nominal 5 %); on 3
# items it calls most of them so.
MIN_PAIRED_ITEMS = 10


def rouge_scores(
    predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = False
) -> dict[str, Any]:
    """ROUGE-1/2/L F1 per item and their means.

    Returns ``{"rouge1": mean, "rouge2": mean, "rougeL": mean, "per_item": [{"rouge1", "rouge2",
    "rougeL"}, ...]}`` with ``per_item`` aligned with the inputs. Means are ``None`` for no items.
    """
    from rouge_score import rouge_scorer

    check_aligned(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    per_item = []
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(str(reference), str(prediction or ""))  # score(target, prediction)
        per_item.append({key: float(scores[key].fmeasure) for key in ROUGE_TYPES})
    result: dict[str, Any] = {key: _mean([item[key] for item in per_item]) for key in ROUGE_TYPES}
    result["per_item"] = per_item
    return result


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU and per-item sentence BLEU (0..100) with sacrebleu's defaults.

    ``references[i]`` is the reference of item ``i``, or a list of alternative references for
    it (every item must then have the same number, as sacrebleu expects). Returns
    ``{"corpus": float | None, "per_item": [float, ...]}``.
    """
    import sacrebleu

    check_aligned(predictions, references)
    hyps = [str(p or "") for p in predictions]
    per_item_refs = _reference_lists(references)
    if not hyps:
        return {"corpus": None, "per_item": []}
    streams = [list(stream) for stream in zip(*per_item_refs)]  # sacrebleu wants one stream per reference set
    corpus = float(sacrebleu.corpus_bleu(hyps, streams).score)
    per_item = [float(sacrebleu.sentence_bleu(h, refs).score) for h, refs in zip(hyps, per_item_refs)]
    return {"corpus": corpus, "per_item": per_item}


def key_terms(text: str) -> set[str]:
    """Content words of ``text``: lowercased, stopwords removed, length ≥ 3 or all digits."""
    words = _WORD_RE.findall(str(text).lower())
    return {w for w in words if w not in _STOPWORDS and (len(w) >= 3 or w.isdigit())}


def key_term_recall(prediction: str, reference: str) -> float | None:
    """Fraction of the reference's key terms found in the prediction (``None`` when the
    reference has no key terms, so such items do not count as 0 or 1 in a mean)."""
    wanted = key_terms(reference)
    if not wanted:
        return None
    found = set(_WORD_RE.findall(str(prediction or "").lower()))
    return len(wanted & found) / len(wanted)


def bootstrap_diff(
    scores_a: Sequence[float], scores_b: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, Any]:
    """Paired bootstrap of ``mean(B) − mean(A)`` over per-item scores of the same items.

    Returns ``{"diff", "ci_low", "ci_high", "significant", "p_value", "n_items", "verdict"}``;
    the interval is the ``alpha/2 .. 1−alpha/2`` percentile interval and ``significant`` means
    it excludes 0 on at least :data:`MIN_PAIRED_ITEMS` items. ``p_value`` is the two-sided
    bootstrap estimate (share of resampled differences on the other side of 0, doubled);
    ``verdict`` says it in words with n ("too few items to tell (n = 3)").
    """
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs scores for the same items: got {a.size} and {b.size}")
    idx = _resample_indices(a.size, n, seed)
    if idx is None:
        return _empty_diff()
    diffs = (b[idx] - a[idx]).mean(axis=1)
    return _summarise(float(b.mean() - a.mean()), diffs, alpha, a.size)


def bleu_bootstrap_diff(
    predictions_a: Sequence[str],
    predictions_b: Sequence[str],
    references: Sequence[str | Sequence[str]],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Paired bootstrap of corpus BLEU(B) − corpus BLEU(A), recomputing corpus BLEU per resample.

    Per-item n-gram statistics are extracted once; each resample sums the chosen rows and
    scores them (about 20 µs a resample), so 1,000 resamples cost well under a second.
    """
    from sacrebleu.metrics import BLEU

    check_aligned(predictions_a, references)
    check_aligned(predictions_b, references)
    idx = _resample_indices(len(references), n, seed)
    if idx is None:
        return _empty_diff()
    metric = BLEU()
    streams = [list(s) for s in zip(*_reference_lists(references))]
    stats_a = np.asarray(metric._extract_corpus_statistics([str(p or "") for p in predictions_a], streams), dtype=float)
    stats_b = np.asarray(metric._extract_corpus_statistics([str(p or "") for p in predictions_b], streams), dtype=float)

    def score(stats: np.ndarray) -> float:
        return float(metric._compute_score_from_stats(stats).score)

    actual = score(stats_b.sum(axis=0)) - score(stats_a.sum(axis=0))
    diffs = np.array([score(stats_b[i].sum(axis=0)) - score(stats_a[i].sum(axis=0)) for i in idx])
    return _summarise(actual, diffs, alpha, len(references))


def mean_of(values: Sequence[float | None]) -> float | None:
    """Mean of the non-``None`` values (``None`` when there are none)."""
    return _mean([v for v in values if v is not None])


# -- helpers -----------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def check_aligned(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless there is exactly one reference per prediction."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: they must be aligned")


def _reference_lists(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    lists = [[r] if isinstance(r, str) else [str(x) for x in r] for r in references]
    if lists and len({len(r) for r in lists}) != 1:
        raise ValueError("every item needs the same number of references for sacrebleu")
    return lists


def _resample_indices(size: int, n: int, seed: int) -> np.ndarray | None:
    if size == 0:
        return None
    return np.random.default_rng(seed).integers(0, size, size=(int(n), size))


def _empty_diff() -> dict[str, Any]:
    return {"diff": None, "ci_low": None, "ci_high": None, "significant": False, "p_value": None, "n_items": 0,
            "verdict": significance_verdict(False, 0)}


def significance_verdict(significant: bool, n_items: int) -> str:
    """The outcome of a paired comparison in words, always with its number of items."""
    if n_items < MIN_PAIRED_ITEMS:
        return f"too few items to tell (n = {n_items}; at least {MIN_PAIRED_ITEMS} needed)"
    return f"{'significant' if significant else 'not significant'} (n = {n_items})"


def _summarise(actual: float, diffs: np.ndarray, alpha: float, n_items: int) -> dict[str, Any]:
    low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # Tolerance: identical inputs give float diffs of exactly 0, but summing in different
    # orders may leave 1e-16 noise that must not count as "significant".
    eps = 1e-12
    significant = bool(low > eps or high < -eps) and n_items >= MIN_PAIRED_ITEMS
    if actual >= 0:
        p = 2 * float(np.mean(diffs <= 0))
    else:
        p = 2 * float(np.mean(diffs >= 0))
    return {
        "diff": float(actual),
        "ci_low": float(low),
        "ci_high": float(high),
        "significant": significant,
        "p_value": min(1.0, p),
        "n_items": int(n_items),
        "verdict": significance_verdict(significant, int(n_items)),
    }

