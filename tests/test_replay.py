"""Replay: every SFT run also trains the base model's own answers to general prompts."""

from __future__ import annotations

import json
from typing import Callable

import pytest
import torch

from dmac_core.config import Config
from dmac_core.evaluation.local import generate_batch
from dmac_core.learner.decoding import Decoding
from dmac_core.learner.loading import load_model
from dmac_core.learner.registry import BASE_VERSION, ModelVersion
from dmac_core.training.dataset import NotEnoughData
from dmac_core.views.review import runs_table

from .test_training import FACTS, seed_ratings, services

PROMPTS = ["What is the capital of Italy?", "Who wrote Hamlet?", "What is the capital of Spain?"]


def replay_config(make_config: Callable[..., Config], **learner) -> Config:
    return make_config(replay={"enabled": True, "prompts": PROMPTS, "max_new_tokens": 6}, **learner)


def test_an_sft_run_trains_the_base_models_own_answers_and_caches_them(make_config: Callable[..., Config]) -> None:
    config = replay_config(make_config, validation_fraction=0.3)
    store, registry, jobs = services(config)
    seed_ratings(store)
    # An analyst rated an answer to one of the replay prompts: that answer is the target.
    store.append_feedback(prompt="Who wrote Hamlet?", response="William Shakespeare wrote Hamlet.", rating=5)
    info = jobs.start()
    assert jobs.wait(120).state == "completed"

    # the base model's greedy answers, decoded as chat decodes them (penalty, loop guard)
    expected = generate_batch(load_model(config.base_model_path(), ModelVersion(BASE_VERSION, None), torch.float32),
                              [PROMPTS[0], PROMPTS[2]], 6, decoding=Decoding.from_config(config.learner))
    data = json.loads((info.run_dir / "data.json").read_text())
    replayed = [(ex["prompt"][-1]["content"], ex["completion"][0]["content"]) for ex in data["sft_train"] if ex.get("replay")]
    assert replayed == [(PROMPTS[0], expected[0]), (PROMPTS[2], expected[1])]
    assert all(ex["weight"] == 1.0 and ex["record_ids"] == [] for ex in data["sft_train"] if ex.get("replay"))
    assert not any(ex.get("replay") for ex in data["sft_eval"]), "replay never enters the held-out split"
    hamlet = [ex for ex in data["sft_train"] + data["sft_eval"] if ex["prompt"][-1]["content"] == "Who wrote Hamlet?"]
    assert [ex["completion"][0]["content"] for ex in hamlet] == ["William Shakespeare wrote Hamlet."]
    lineage = jobs.run_summary(info.run_id)["lineage"]
    assert lineage["counts"]["replay"] == 2 and lineage["replay"]["prompts"] == [PROMPTS[0], PROMPTS[2]]
    assert lineage["counts"]["sft_train"] + lineage["counts"]["sft_eval"] == len(FACTS) + 1  # analysts' items only
    row = runs_table(jobs.runs()).iloc[0]  # the Training page's run list
    assert (row["examples"], row["replayed"], row["started from"]) == (len(FACTS) + 1, 2, "base")

    # The answers are cached per base model: a second run asks the model for nothing new.
    cache = config.data_path / "replay" / "answers.jsonl"
    assert len(cache.read_text().splitlines()) == 3
    second = jobs.start()
    assert jobs.wait(120).state == "completed"
    assert len(cache.read_text().splitlines()) == 3
    again = json.loads((second.run_dir / "data.json").read_text())
    assert [ex for ex in again["sft_train"] if ex.get("replay")] == [ex for ex in data["sft_train"] if ex.get("replay")]


def test_replay_neither_counts_toward_enough_data_nor_joins_preference_runs(make_config: Callable[..., Config]) -> None:
    config = replay_config(make_config)
    store, _, jobs = services(config)
    seed_ratings(store, FACTS[:3])
    with pytest.raises(NotEnoughData, match="Only 3 rated answers"):
        jobs.start()
    assert not (config.data_path / "replay").exists(), "nothing was generated for a run that did not start"

    seed_ratings(store, FACTS[3:])
    seed_ratings(store, [(prompt, "I do not know.") for prompt, _ in FACTS], rating=1)  # → DPO pairs
    info = jobs.start(method="dpo")
    assert jobs.wait(120).state == "completed"
    assert "replay" not in jobs.run_summary(info.run_id)["lineage"].get("counts", {})
    row = runs_table(jobs.runs()).iloc[0]
    assert row["method"] == "dpo" and row["examples"] == len(FACTS) and row["replayed"] == 0
    assert not (config.data_path / "replay").exists()
