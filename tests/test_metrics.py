"""Metric values against the libraries' published results and hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from dmac_core.evaluation.metrics import (
    MIN_PAIRED_ITEMS,
    bleu,
    bleu_bootstrap_diff,
    bootstrap_diff,
    key_term_recall,
    key_terms,
    mean_of,
    rouge_scores,
)

# sacrebleu's README example (two reference sets) and its documented result.
SACREBLEU_REFS = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]
SACREBLEU_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]


def test_bleu_matches_sacrebleu_documented_example_with_two_reference_sets() -> None:
    per_item_refs = [list(refs) for refs in zip(*SACREBLEU_REFS)]  # our layout: references per item
    result = bleu(SACREBLEU_SYS, per_item_refs)
    assert result["corpus"] == pytest.approx(48.530827009929865, abs=1e-9)
    assert len(result["per_item"]) == 3
    assert result["per_item"][0] == pytest.approx(100.0)  # item 1 equals its first reference


def test_bleu_with_one_reference_set_matches_sacrebleu_directly() -> None:
    result = bleu(SACREBLEU_SYS, SACREBLEU_REFS[0])
    expected = sacrebleu.corpus_bleu(SACREBLEU_SYS, [SACREBLEU_REFS[0]]).score
    assert result["corpus"] == pytest.approx(expected, abs=1e-9)
    assert result["corpus"] < 48.53  # fewer references, fewer matches
    for hyp, ref, got in zip(SACREBLEU_SYS, SACREBLEU_REFS[0], result["per_item"]):
        assert got == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score)


def test_identical_texts_score_the_maximum() -> None:
    texts = ["The meeting moved to Thursday at 10 am.", "Oslo is the capital of Norway.", "Forty two"]
    result = bleu(texts, texts)
    assert result["corpus"] == pytest.approx(100.0)
    assert result["per_item"] == pytest.approx([100.0] * 3)
    rouge = rouge_scores(texts, texts)
    assert (rouge["rouge1"], rouge["rouge2"], rouge["rougeL"]) == pytest.approx((1.0, 1.0, 1.0))
    assert rouge["per_item"] == [{"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}] * 3


def test_rouge_on_a_hand_computed_example() -> None:
    # prediction "the cat sat" vs reference "the cat sat on the mat":
    # unigrams: 3 matches, P = 3/3, R = 3/6 → F = 2/3; bigrams: 2 matches of 2 and 5 → F = 2·1·0.4/1.4 = 4/7;
    # LCS = 3 → same as unigrams.
    result = rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    assert result["rouge1"] == pytest.approx(2 / 3)
    assert result["rouge2"] == pytest.approx(4 / 7)
    assert result["rougeL"] == pytest.approx(2 / 3)
    # ROUGE-L rewards order: same words reversed keep ROUGE-1 but lose LCS and bigrams.
    reversed_ = rouge_scores(["sat cat the"], ["the cat sat"])
    assert reversed_["rouge1"] == pytest.approx(1.0)
    assert reversed_["rougeL"] == pytest.approx(1 / 3)
    assert reversed_["rouge2"] == 0.0


def test_rouge_per_item_is_aligned_and_empty_prediction_scores_zero() -> None:
    result = rouge_scores(["", "paris", "london"], ["paris", "paris", "paris"])
    assert [item["rouge1"] for item in result["per_item"]] == [0.0, 1.0, 0.0]
    assert result["rouge1"] == pytest.approx(1 / 3)
    assert rouge_scores([], [])["rougeL"] is None


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="aligned"):
        bleu(["a"], ["a", "b"])


def test_bootstrap_model_against_itself_is_not_significant() -> None:
    scores = np.random.default_rng(1).uniform(0, 1, size=40)
    result = bootstrap_diff(scores, scores, n=500)
    assert result["diff"] == 0.0 and result["ci_low"] == 0.0 and result["ci_high"] == 0.0
    assert result["significant"] is False


def test_bootstrap_noise_alone_is_not_significant_but_a_planted_difference_is() -> None:
    rng = np.random.default_rng(7)
    a = rng.uniform(0.2, 0.6, size=40)
    same_distribution = rng.uniform(0.2, 0.6, size=40)
    noise = bootstrap_diff(a, same_distribution, n=1000, seed=3)
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["significant"] is False

    better = np.clip(a + 0.3 + rng.normal(0, 0.05, size=40), 0, 1)
    planted = bootstrap_diff(a, better, n=1000, seed=3)
    assert planted["significant"] is True
    assert planted["ci_low"] <= planted["diff"] <= planted["ci_high"]
    assert planted["diff"] == pytest.approx(float(np.mean(better - a)))
    assert 0.2 < planted["ci_low"] and planted["p_value"] < 0.01
    # and in the other direction the sign flips
    assert bootstrap_diff(better, a, n=1000, seed=3)["ci_high"] < 0


def test_a_handful_of_items_is_never_called_significant() -> None:
    # three items that all moved the same way: the percentile interval excludes 0 with p = 0,
    # which says nothing about a fourth item
    for n_items in range(1, MIN_PAIRED_ITEMS):
        rng = np.random.default_rng(n_items)
        a = rng.uniform(0, 0.5, size=n_items)
        result = bootstrap_diff(a, a + 0.4, n=500, seed=n_items)
        assert result["significant"] is False and result["n_items"] == n_items
        assert result["verdict"] == f"too few items to tell (n = {n_items}; at least {MIN_PAIRED_ITEMS} needed)"
        refs = [f"item {k} arrives on day {k} at the north gate" for k in range(n_items)]
        assert bleu_bootstrap_diff(["nothing"] * n_items, refs, refs, n=100)["significant"] is False
    assert bootstrap_diff([], [])["verdict"].startswith("too few items to tell (n = 0")


@pytest.mark.parametrize("draw", ["uniform", "rouge-like"])
def test_false_positive_rate_on_noise_stays_near_the_nominal_five_percent(draw: str) -> None:
    seeds, called = 300, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        if draw == "uniform":
            a, b = rng.uniform(0, 1, size=50), rng.uniform(0, 1, size=50)
        else:  # many zeros and ones, as per-item ROUGE-L / key-term recall are
            a, b = (np.clip(rng.normal(0.5, 0.4, size=(2, 50)), 0, 1))
        called += bootstrap_diff(a, b, n=1000, seed=seed)["significant"]
    assert 0.02 <= called / seeds <= 0.09


def test_a_real_difference_on_fifty_items_is_found() -> None:
    found = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        a = rng.uniform(0, 1, size=50)
        b = np.clip(a + rng.normal(0.15, 0.2, size=50), 0, 1)
        result = bootstrap_diff(a, b, n=1000, seed=seed)
        found += result["significant"]
        assert result["verdict"] in ("significant (n = 50)", "not significant (n = 50)")
    assert found >= 19


def test_bootstrap_is_reproducible_and_refuses_unpaired_scores() -> None:
    a, b = [0.1, 0.5, 0.9, 0.3], [0.2, 0.4, 1.0, 0.6]
    assert bootstrap_diff(a, b, seed=5) == bootstrap_diff(a, b, seed=5)
    with pytest.raises(ValueError, match="same items"):
        bootstrap_diff([0.1, 0.2], [0.1])
    assert bootstrap_diff([], [])["significant"] is False


def test_corpus_bleu_bootstrap_self_vs_planted() -> None:
    refs = [f"Item {i}: the parcel for Ms Larsen arrives on day {i} at the north gate." for i in range(30)]
    garbled = [f"Something unrelated number {i} happened somewhere." for i in range(30)]
    same = bleu_bootstrap_diff(refs, refs, refs, n=300)
    assert same["diff"] == pytest.approx(0.0) and same["significant"] is False
    planted = bleu_bootstrap_diff(garbled, refs, refs, n=300)
    assert planted["significant"] is True
    # the diff is the difference of the corpus scores, not of sentence-BLEU means
    expected = sacrebleu.corpus_bleu(refs, [refs]).score - sacrebleu.corpus_bleu(garbled, [refs]).score
    assert planted["diff"] == pytest.approx(expected)


def test_key_term_recall() -> None:
    reference = "The project deadline is 12 March in Oslo."
    assert key_terms(reference) == {"project", "deadline", "12", "march", "oslo"}
    assert key_term_recall("The deadline is in Oslo.", reference) == pytest.approx(2 / 5)
    assert key_term_recall("Project deadline: 12 March, Oslo office.", reference) == pytest.approx(1.0)
    # an answer that only echoes the question's style gets nothing for it
    assert key_term_recall("The thing is in the place.", reference) == 0.0
    assert key_term_recall("", reference) == 0.0
    # a reference made of stopwords only has nothing to recall: None, not 0 or 1
    assert key_term_recall("anything", "It is what it is.") is None
    assert mean_of([1.0, None, 0.0]) == pytest.approx(0.5)
    assert mean_of([None]) is None
