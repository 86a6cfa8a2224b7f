"""Per-token confidence of logged learner answers: by the version that wrote each answer, in its
own model copy, scored in the background between chat answers, cached on disk."""

from __future__ import annotations

import math
import time
from typing import Callable

import pytest
import torch

from dmac_core.config import Config
from dmac_core.insights.confidence import ConfidenceScorer
from dmac_core.insights.explain import answer_token_scores
from dmac_core.learner.loading import load_model
from dmac_core.system import LearningSystem

from .gate_doubles import scripted_gate
from .test_training import seed_ratings

QUESTION = "What colour is the Zorblat?"
ANSWER = "The Zorblat is bright teal, like the sea at Quenmoor."


def two_versions(config: Config) -> tuple[LearningSystem, dict, dict]:
    """A workbench serving v0001 (trained hard on the tiny model), with one logged answer written by
    the base and one by v0001."""
    system = LearningSystem(config)
    system.jobs.gate = scripted_gate(config, system.registry)  # mechanics: promote what was trained
    seed_ratings(system.store)
    system.jobs.start()
    assert system.jobs.wait(120).state == "completed" and system.registry.served_id() == "v0001"
    messages = [{"role": "user", "content": QUESTION}]
    by_base = system.store.append_interaction(model="deepseek", prompt=QUESTION, response=ANSWER,
                                              messages=messages, model_version="base").to_json_dict()
    by_v1 = system.store.append_interaction(model="deepseek", prompt=QUESTION, response=ANSWER,
                                            messages=messages, model_version="v0001").to_json_dict()
    return system, by_base, by_v1


def test_each_answer_is_scored_by_the_version_that_wrote_it_and_cached(make_config: Callable[..., Config]) -> None:
    system, by_base, by_v1 = two_versions(make_config(learning_rate=0.05, epochs=3))
    scorer = system.confidence
    assert scorer.scores(by_base) is None and scorer.scores(by_v1) is None  # queued, not computed on the caller
    assert scorer.wait(60)
    base_scores, v1_scores = scorer.scores(by_base), scorer.scores(by_v1)
    for version, scores in (("base", base_scores), ("v0001", v1_scores)):
        expected = answer_token_scores(load_model(system.local_backend.base_path, system.registry.get(version),
                                                  torch.float32), [{"role": "user", "content": QUESTION}], ANSWER,
                                       system.config.routing.system_prompt)
        assert [s.token for s in scores] == [s.token for s in expected]
        assert [s.prob for s in scores] == pytest.approx([s.prob for s in expected], rel=1e-4)
    # the same answer, two versions: two different measurements (the served one is not used for both)
    assert max(abs(math.log(a.prob) - math.log(b.prob)) for a, b in zip(base_scores, v1_scores)) > 1e-2

    # cached on disk: a restarted workbench reads them without loading any model
    loads: list[str] = []
    again = ConfidenceScorer(system.local_backend, system.store, scorer.cache_path,
                             load_version=lambda v: loads.append(v), system_prompt=scorer.system_prompt)
    assert [s.prob for s in again.scores(by_v1)] == [s.prob for s in v1_scores] and loads == []


def test_scoring_waits_while_the_learner_is_answering(make_config: Callable[..., Config]) -> None:
    system, by_base, _ = two_versions(make_config(epochs=1))
    served = system.local_backend.current()
    served.lock.acquire()  # a chat answer in progress
    try:
        system.confidence.request([by_base])
        time.sleep(1.0)
        assert system.confidence.pending() == 1  # it waited for chat
    finally:
        served.lock.release()
    assert system.confidence.wait(60) and system.confidence.scores(by_base)


def test_an_answer_of_an_unloadable_version_says_so(make_config: Callable[..., Config]) -> None:
    system, _, by_v1 = two_versions(make_config(epochs=1))
    (system.registry.get("v0001").path / "adapter_model.safetensors").unlink()
    scorer = ConfidenceScorer(system.local_backend, system.store, system.config.data_path / "c.jsonl",
                              load_version=system.local_backend.scoring_model)
    assert scorer.scores(by_v1) is None and scorer.wait(60)
    assert scorer.scores(by_v1) is None
    assert scorer.failure(by_v1) == ("BackendError: Version v0001 of deepseek cannot be loaded: "
                                     "adapter weights (adapter_model.safetensors) missing")
