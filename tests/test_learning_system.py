"""The four things the seed's test script names, with real assertions:
learning from all models, the feedback system, the training process, model evaluation.
Plus the seed's three code examples, run exactly as written."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dmac_core.config import PROJECT_ROOT, Config, load_config
from dmac_core.logs.records import RecordError
from dmac_core.system import LearningSystem
from tests.conftest import tiny_config_dict, write_config
from tests.fake_servers import FakeServer, fake_gemini  # noqa: F401


def system_with_gemini(tmp_path: Path, tiny_model_dir: Path, gemini: FakeServer,
                       monkeypatch: pytest.MonkeyPatch) -> LearningSystem:
    data = tiny_config_dict(tmp_path / "data", tiny_model_dir)
    data["models"]["gemini"] = {"kind": "gemini", "base_url": gemini.url, "api_key_env": "TEST_GEMINI_KEY",
                                "timeout_s": 5, "max_retries": 0}
    data["routing"]["order"] = ["gemini", "deepseek"]
    monkeypatch.setenv("TEST_GEMINI_KEY", "test-key")
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "absent.toml"))
    return LearningSystem(load_config(write_config(tmp_path / "config.yaml", data)))


def test_learning_from_all_models(tmp_path: Path, tiny_model_dir: Path, fake_gemini: FakeServer,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    system = system_with_gemini(tmp_path, tiny_model_dir, fake_gemini, monkeypatch)
    manager = system.model_manager
    gemini_ids = []
    for i in range(4):
        fake_gemini.set_instant(f"Gemini's careful answer number {i}.")
        result = manager.respond(f"Gemini question {i}?")
        assert result.model == "gemini"
        manager.store.append_feedback(interaction_id=result.interaction_id, rating=5)
        gemini_ids.append(result.interaction_id)
    local = manager.respond("A local question?", model="deepseek")
    manager.store.append_feedback(interaction_id=local.interaction_id, rating=4)

    summary = asyncio.run(system.seed.train_deepseek())
    assert summary["state"] == "completed", summary.get("message")
    # Gemini's rated answers were training material, next to the local model's.
    assert set(gemini_ids) | {local.interaction_id} <= set(summary["lineage"]["interaction_ids"])
    assert summary["lineage"]["counts"]["answers"] == 5


def test_feedback_system(tiny_config: Config) -> None:
    system = LearningSystem(tiny_config)
    manager = system.seed  # the seed's model_manager

    async def scenario() -> None:
        await manager.provide_feedback(
            prompt="What is the future of AI?",
            response="The future of AI is...",
            feedback="The response was informative but could include more specific examples.",
            rating=4,
        )
        for bad in (0, 6, 4.5, "4", True):
            with pytest.raises(RecordError, match="rating"):
                await manager.provide_feedback(prompt="p", response="r", rating=bad)
        with pytest.raises(RecordError, match="response must not be empty"):
            await manager.provide_feedback(prompt="p", response="  ", rating=3)

    asyncio.run(scenario())
    [row] = system.store.records("feedback")
    assert row["rating"] == 4 and row["interaction_id"] is None
    assert row["feedback"] == "The response was informative but could include more specific examples."
    assert row["prompt"] == "What is the future of AI?" and row["schema"] == 1


def test_training_process(tiny_config: Config) -> None:
    system = LearningSystem(tiny_config)
    for i in range(6):
        system.store.append_feedback(prompt=f"Tell me fact {i}.", response=f"Fact {i}: the sky code is {i}.", rating=5)
    assert system.registry.served_id() == "base"
    summary = asyncio.run(system.seed.train_deepseek())
    assert summary["state"] == "completed", summary.get("message")
    events = system.jobs.run_events(summary["run_id"])
    losses = [e["train_loss"] for e in events if e.get("event") == "step" and e.get("train_loss") is not None]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert any(e.get("event") == "eval" for e in events)
    # The version exists; whether it is served is the gate's call, on answers: the tiny random
    # model's answers did not move in 6 steps, so the base stays served and the summary says why.
    assert summary["version"] == "v0001" and summary["promoted"] is False
    assert "Rated answers learned: failed" in summary["message"] and system.registry.served_id() == "base"
    answer = system.model_manager.respond("Tell me fact 1.", model="deepseek")
    assert answer.model_version == "base"


def test_train_deepseek_without_enough_ratings_says_so_instead_of_raising(tiny_config: Config) -> None:
    system = LearningSystem(tiny_config)
    system.store.append_feedback(prompt="What is the future of AI?", response="The future of AI is...", rating=4)
    summary = asyncio.run(system.seed.train_deepseek())
    assert summary["state"] == "not started" and summary["version"] is None
    assert summary["message"] == "Only 1 rated answer with rating ≥ 4; rate at least 4 to train."
    assert system.jobs.runs() == []


def test_model_evaluation(tiny_config: Config) -> None:
    system = LearningSystem(tiny_config)
    system.store.append_feedback(prompt="Explain the concept of few-shot learning.",
                                 response="Few-shot learning learns from a handful of examples.", rating=5)
    test_prompts = [
        "What is the role of attention in transformer models?",
        "How can reinforcement learning be applied to robotics?",
        "Explain the concept of few-shot learning.",
    ]
    results = asyncio.run(system.evaluate_model(test_prompts))
    assert [item["prompt"] for item in results["per_item"]] == test_prompts
    assert [item["has_reference"] for item in results["per_item"]] == [False, False, True]
    assert results["per_item"][2]["reference"] == "Few-shot learning learns from a handful of examples."
    for key in ("rouge1", "rouge2", "rougeL", "bleu"):
        assert 0.0 <= float(results["metrics"][key]) <= 100.0
    assert results["metrics"]["loss"] > 0 and 0 <= results["metrics"]["token_accuracy"] <= 1
    [stored] = system.store.records("evals")
    assert stored["id"] == results["eval_id"] and stored["n"] == 3


SEED_EXAMPLES = '''
import asyncio
from dmac_core import model_manager, learning_system

async def main():
    await model_manager.provide_feedback(
        prompt="What is the future of AI?",
        response="The future of AI is...",
        feedback="The response was informative but could include more specific examples.",
        rating=4
    )
    for i in range(4):
        await model_manager.provide_feedback(prompt=f"Q{i}?", response=f"Answer {i}.", rating=5)
    summary = await model_manager.train_deepseek()
    print("TRAINED", summary["state"], summary["version"], summary["promoted"])
    test_prompts = [
        "What is the role of attention in transformer models?",
        "How can reinforcement learning be applied to robotics?",
        "Explain the concept of few-shot learning."
    ]
    evaluation_results = await learning_system.evaluate_model(test_prompts)
    print("RESULT", len(evaluation_results["per_item"]), learning_system.registry.served_id())

asyncio.run(main())
'''


def test_the_seeds_code_examples_run_as_written(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path / "config.yaml", tiny_config_dict(tmp_path / "data", tiny_model_dir))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DMAC_CONFIG": str(config), "HF_HUB_OFFLINE": "1",
           "DMAC_SECRETS": str(tmp_path / "absent.toml")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SEED_EXAMPLES)], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # trained and registered; the gate keeps the base served (the tiny model learned no visible answer)
    assert "TRAINED completed v0001 False" in result.stdout and "RESULT 3 base" in result.stdout


SEED_AS_WRITTEN = '''
import asyncio
from dmac_core import model_manager, learning_system

async def main():
    await model_manager.provide_feedback(
        prompt="What is the future of AI?",
        response="The future of AI is...",
        feedback="The response was informative but could include more specific examples.",
        rating=4
    )
    summary = await model_manager.train_deepseek()
    test_prompts = [
        "What is the role of attention in transformer models?",
        "How can reinforcement learning be applied to robotics?",
        "Explain the concept of few-shot learning."
    ]
    evaluation_results = await learning_system.evaluate_model(test_prompts)
    print("TRAIN", summary["state"], "|", summary["message"])
    print("EVAL", len(evaluation_results["per_item"]), evaluation_results["runtime"],
          all(item["output"] for item in evaluation_results["per_item"]))

asyncio.run(main())
'''


@pytest.mark.integration
def test_the_seeds_examples_run_as_written_in_a_new_empty_data_directory(tmp_path: Path) -> None:
    """The shipped config, a data directory that does not exist yet: the learner prepares its
    base model on first use, training says why it does not start (one rating), evaluation answers."""
    fresh = tmp_path / "brand-new-data"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DMAC_DATA_DIR": str(fresh), "HF_HUB_OFFLINE": "1",
           "DMAC_SECRETS": str(tmp_path / "absent.toml"), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SEED_AS_WRITTEN)], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TRAIN not started | Only 1 rated answer with rating ≥ 4; rate at least 4 to train." in result.stdout
    assert "EVAL 3 llama.cpp" in result.stdout and result.stdout.strip().endswith("True")
    assert (fresh / "base" / "SmolLM2-135M-Instruct" / "model.safetensors").is_file()
    [feedback] = [json.loads(line) for line in next((fresh / "feedback").glob("*.jsonl")).read_text().splitlines()]
    assert feedback["rating"] == 4 and feedback["prompt"] == "What is the future of AI?"
    [evaluation] = [json.loads(line) for line in next((fresh / "evals").glob("*.jsonl")).read_text().splitlines()]
    assert evaluation["runtime"].startswith("llama.cpp") and evaluation["n"] == 3
