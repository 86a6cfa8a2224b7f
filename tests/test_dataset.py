"""Dataset building from the learning logs: the rules in dmac_core/training/dataset.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmac_core.config import LocalModelConfig
from dmac_core.logs.store import LearningStore
from dmac_core.training.dataset import (
    NotEnoughData,
    build_dataset,
    choose_method,
    is_held_out,
    weighted_sft_train,
)


def cfg(**kw) -> LocalModelConfig:
    base = {"validation_fraction": 0.0, "min_examples": 1}
    base.update(kw)
    return LocalModelConfig(**base)


@pytest.fixture
def store(tmp_path: Path) -> LearningStore:
    return LearningStore(tmp_path / "data", fsync=False)


def completions(examples) -> list[str]:
    return sorted(e["completion"][0]["content"] for e in examples)


def test_sft_from_every_model_and_standalone_feedback(store: LearningStore) -> None:
    gem = store.append_interaction(model="gemini", prompt="Q1", response="Gemini answer", messages=[{"role": "user", "content": "Q1"}])
    loc = store.append_interaction(model="deepseek", prompt="Q2", response="Local answer")
    store.append_feedback(interaction_id=gem.id, rating=5)
    store.append_feedback(interaction_id=loc.id, rating=4, feedback="fine but short")
    store.append_feedback(prompt="Q3", response="Standalone answer", rating=4)  # no interaction logged
    store.append_feedback(prompt="Q4", response="Bad answer", rating=2)
    data = build_dataset(store, cfg())
    assert completions(data.sft_train) == ["Gemini answer", "Local answer", "Standalone answer"]
    by_text = {e["completion"][0]["content"]: e for e in data.sft_train}
    assert by_text["Gemini answer"]["weight"] == 1.0 and by_text["Local answer"]["weight"] == 0.75
    assert by_text["Local answer"]["feedback"] == "fine but short"  # textual feedback kept
    assert by_text["Gemini answer"]["prompt"] == [{"role": "user", "content": "Q1"}]
    assert by_text["Gemini answer"]["completion"] == [{"role": "assistant", "content": "Gemini answer"}]
    assert data.lineage["counts"]["sft_train"] == 3
    assert set(data.lineage["interaction_ids"]) == {gem.id, loc.id}
    assert len(data.lineage["months"]) == 1
    # KTO: two desirable kinds and one undesirable
    assert sorted(x["label"] for x in data.kto) == [False, True, True, True]


def test_latest_feedback_supersedes_and_users_are_averaged(store: LearningStore) -> None:
    i = store.append_interaction(model="deepseek", prompt="Q", response="A")
    store.append_feedback(interaction_id=i.id, rating=5, user="ann")
    store.append_feedback(interaction_id=i.id, rating=2, user="ann")  # ann changed her mind
    data = build_dataset(store, cfg(min_examples=1, min_rating_for_sft=4), method="kto")
    assert data.sft_train == [] and [x["label"] for x in data.kto] == [False]
    store.append_feedback(interaction_id=i.id, rating=5, user="bob")
    store.append_feedback(interaction_id=i.id, rating=5, user="cy")
    data = build_dataset(store, cfg())  # mean of 2, 5, 5 = 4.0
    assert len(data.sft_train) == 1 and data.sft_train[0]["rating"] == 4.0


def test_correction_is_preferred_target_and_dpo_pair(store: LearningStore) -> None:
    store.append_feedback(prompt="Capital of Wakanda?", response="Paris", rating=2, correction="Birnin Zana")
    store.append_feedback(prompt="Other", response="Answer x", rating=5)
    store.append_feedback(prompt="Other", response="Answer y", rating=3)
    data = build_dataset(store, cfg())
    assert "Birnin Zana" in completions(data.sft_train) and "Paris" not in completions(data.sft_train)
    pairs = {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in data.dpo}
    assert pairs == {("Birnin Zana", "Paris"), ("Answer x", "Answer y")}


def test_dedupe_identical_prompt_completion(store: LearningStore) -> None:
    for user in ("a", "b"):
        store.append_feedback(prompt="Q", response="same", rating=5, user=user)
    store.append_interaction(model="gemini", prompt="Q", response="same")
    data = build_dataset(store, cfg())
    assert len(data.sft_train) == 1 and len(data.sft_train[0]["record_ids"]) == 2


def test_split_is_stable_and_keeps_one_train_example(store: LearningStore) -> None:
    prompts = [f"Question number {i}?" for i in range(40)]
    for p in prompts:
        store.append_feedback(prompt=p, response="ans " + p, rating=5)
    data = build_dataset(store, cfg(validation_fraction=0.3))
    held = {e["prompt"][0]["content"] for e in data.sft_eval}
    assert held == {p for p in prompts if is_held_out(p, 0.3)}
    assert 4 <= len(held) <= 24  # roughly 30 %
    assert is_held_out("Question number 3?", 0.3) == is_held_out("  question   NUMBER 3? ", 0.3)
    again = build_dataset(store, cfg(validation_fraction=0.3))
    assert {e["prompt"][0]["content"] for e in again.sft_eval} == held
    # even when every prompt hashes into validation, one example stays for training
    everything = build_dataset(store, cfg(validation_fraction=0.89))
    assert len(everything.sft_train) >= 1


def test_not_enough_data_message(store: LearningStore) -> None:
    store.append_feedback(prompt="Q1", response="A1", rating=5)
    store.append_feedback(prompt="Q2", response="A2", rating=4)
    store.append_feedback(prompt="Q3", response="A3", rating=3)
    with pytest.raises(NotEnoughData, match=r"Only 2 rated answers with rating ≥ 4; rate at least 4 to train\."):
        build_dataset(store, cfg(min_examples=4))


def test_weights_by_repetition_and_auto_method(store: LearningStore) -> None:
    examples = [{"weight": 1.0, "n": 1}, {"weight": 0.75, "n": 2}]
    assert [e["n"] for e in weighted_sft_train(examples)] == [1, 1, 2]
    same = [{"weight": 1.0, "n": 1}, {"weight": 1.0, "n": 2}]
    assert weighted_sft_train(same) == same
    for i in range(4):
        store.append_feedback(prompt=f"P{i}", response="good", rating=5)
        store.append_feedback(prompt=f"P{i}", response="bad", rating=1)
    data = build_dataset(store, cfg(min_examples=4))
    assert len(data.dpo) == 4 and choose_method(data, cfg(min_examples=4)) == "dpo"


def test_training_holds_out_exactly_the_items_evaluation_compares_on(tmp_path) -> None:
    from dmac_core.config import LocalModelConfig
    from dmac_core.evaluation.evaluator import is_heldout
    from dmac_core.logs.store import LearningStore
    from dmac_core.training.dataset import build_dataset

    store = LearningStore(tmp_path, fsync=False)
    prompts = [f"Question number {i} about the quarterly report?" for i in range(60)]
    for prompt in prompts:
        store.append_feedback(prompt=prompt, response=f"Answer to: {prompt}", rating=5)
    cfg = LocalModelConfig(validation_fraction=0.2)
    data = build_dataset(store, cfg)
    held = {e["prompt"][-1]["content"] for e in data.sft_eval}
    assert held == {p for p in prompts if is_heldout(p, 0.2)}
    assert held and not held & {e["prompt"][-1]["content"] for e in data.sft_train}


# -- blind-comparison votes ------------------------------------------------------------------
def _arena_pair(store: LearningStore, prompt: str, a: str, b: str) -> tuple[str, str]:
    first = store.append_interaction(model="deepseek", model_version="v0002", prompt=prompt, response=a,
                                     messages=[{"role": "user", "content": prompt}])
    second = store.append_interaction(model="gemini", prompt=prompt, response=b,
                                      messages=[{"role": "user", "content": prompt}])
    return first.id, second.id


def _vote(store: LearningStore, ids: tuple[str, str], choice: str, user: str = "ana", note: str = "") -> str:
    return store.append_vote(user=user, prompt="-", interaction_a=ids[0], interaction_b=ids[1], model_a="deepseek",
                             model_b="gemini", choice=choice, note=note).id


def test_votes_become_dpo_pairs_ties_nothing_and_both_bad_kto_undesirable(store: LearningStore) -> None:
    p1 = _arena_pair(store, "What is DPO?", "Direct preference optimisation.", "A kind of dessert.")
    p2 = _arena_pair(store, "What is KTO?", "A chess opening.", "Kahneman-Tversky optimisation.")
    p3 = _arena_pair(store, "What is SFT?", "Supervised fine-tuning.", "Supervised fine tuning!")
    p4 = _arena_pair(store, "What is LoRA?", "A radio protocol only.", "A typo.")
    v1 = _vote(store, p1, "a", note="B is wrong")
    v2 = _vote(store, p2, "b")
    _vote(store, p3, "tie")
    v4 = _vote(store, p4, "both_bad", note="Low-rank adaptation")
    data = build_dataset(store, cfg(), method="dpo")
    pairs = {(p["prompt"][-1]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]): p for p in data.dpo}
    assert sorted(pairs) == [("What is DPO?", "Direct preference optimisation.", "A kind of dessert."),
                             ("What is KTO?", "Kahneman-Tversky optimisation.", "A chess opening.")]
    first = pairs[("What is DPO?", "Direct preference optimisation.", "A kind of dessert.")]
    assert (first["record_ids"], first["source"], first["feedback"]) == ([v1], "vote", "B is wrong")
    assert first["prompt"] == [{"role": "user", "content": "What is DPO?"}]
    assert pairs[("What is KTO?", "Kahneman-Tversky optimisation.", "A chess opening.")]["record_ids"] == [v2]
    # both bad: each answer is a KTO undesirable example; the tie gave nothing anywhere
    assert sorted((k["completion"][0]["content"], k["label"], tuple(k["record_ids"])) for k in data.kto) == [
        ("A radio protocol only.", False, (v4,)), ("A typo.", False, (v4,))]
    assert data.sft_train == [] and all("SFT" not in p["prompt"][-1]["content"] for p in data.dpo)
    counts = data.lineage["counts"]
    assert (counts["votes"], counts["votes_counted"], counts["dpo_from_votes"], counts["kto_from_votes"],
            counts["vote_ties"], counts["votes_unusable"]) == (4, 4, 2, 2, 1, 0)
    assert data.lineage["vote_ids"] == sorted([v1, v2, v4]) and data.lineage["feedback_ids"] == []
    assert set(data.lineage["interaction_ids"]) == {*p1, *p2, *p4}


def test_the_latest_vote_of_an_analyst_counts_and_agreeing_votes_make_one_pair(store: LearningStore) -> None:
    ids = _arena_pair(store, "Capital of France?", "Paris.", "Lyon.")
    _vote(store, ids, "b", user="ana")  # ana changes her mind below
    later = _vote(store, ids, "a", user="ana")
    bob = _vote(store, (ids[1], ids[0]), "b", user="bob")  # shown the other way round, same verdict
    rated = store.append_feedback(prompt="Capital of France?", response="Marseille.", rating=1)
    store.append_feedback(prompt="Capital of France?", response="Paris, on the Seine.", rating=5)
    data = build_dataset(store, cfg(), method="dpo")
    votes = [p for p in data.dpo if p["source"] == "vote"]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"], p["record_ids"]) for p in votes] == [
        ("Paris.", "Lyon.", sorted([later, bob]))]
    counts = data.lineage["counts"]
    assert (counts["votes"], counts["votes_counted"], counts["dpo_from_votes"]) == (3, 2, 1)
    assert counts["dpo"] == 2  # the rating pair (5 vs 1) and the vote pair
    assert rated.id in data.lineage["feedback_ids"] and later not in data.lineage["feedback_ids"]


def test_a_vote_on_a_failed_answer_or_the_same_text_twice_gives_nothing(store: LearningStore) -> None:
    same = _arena_pair(store, "Say hi.", "Hi!", "Hi!")
    _vote(store, same, "a")
    good = store.append_interaction(model="deepseek", prompt="Say bye.", response="Bye!")
    failed = store.append_interaction(model="gemini", prompt="Say bye.", response="", error="timeout")
    _vote(store, (good.id, failed.id), "a")
    store.append_feedback(prompt="Other", response="Fine.", rating=5)
    data = build_dataset(store, cfg(min_examples=1), method="sft")
    assert data.dpo == [] and [k["completion"][0]["content"] for k in data.kto] == ["Fine."]
    assert data.lineage["counts"]["votes_unusable"] == 2 and data.lineage["vote_ids"] == []
    with pytest.raises(NotEnoughData, match="or a vote for one of two answers in Compare mode"):
        build_dataset(store, cfg(min_examples=1), method="dpo")
