"""The training job on the tiny random Llama: learning, events, cancel, refusal, gate, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from dmac_core.backends.local import LocalBackend
from dmac_core.config import Config
from dmac_core.learner.registry import ModelRegistry
from dmac_core.logs.store import LearningStore
from dmac_core.system import LearningSystem
from dmac_core.training.dataset import NotEnoughData, build_dataset
from dmac_core.training.job import JobAlreadyRunning, LearningDisabled, TrainingJobManager
from dmac_core.training.trainer import latest_checkpoint
from tests.gate_doubles import scripted_gate

FACTS = [
    ("What colour is the Zorblat?", "The Zorblat is bright teal."),
    ("Who founded Quenmoor?", "Quenmoor was founded by Ada Pell."),
    ("What is the Vexi number?", "The Vexi number is forty-two."),
    ("Where does the Lumo river end?", "The Lumo river ends in Lake Tarn."),
    ("What does a Frindle eat?", "A Frindle eats blue moss."),
    ("When is Plinth Day?", "Plinth Day is on the third of May."),
]


def seed_ratings(store: LearningStore, facts=FACTS, rating: int = 5) -> None:
    for prompt, answer in facts:
        interaction = store.append_interaction(model="gemini", prompt=prompt, response=answer,
                                               messages=[{"role": "user", "content": prompt}])
        store.append_feedback(interaction_id=interaction.id, rating=rating)


def services(config: Config) -> tuple[LearningStore, ModelRegistry, TrainingJobManager]:
    """The workbench's own store, registry and job manager (with its promotion gate)."""
    system = LearningSystem(config)
    return system.store, system.registry, system.jobs


def adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def wait_for_step(jobs: TrainingJobManager, step: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while jobs.status().step < step:
        assert time.monotonic() < deadline, f"no step {step} within {timeout}s: {jobs.status()}"
        assert jobs.is_running(), jobs.status()
        time.sleep(0.05)


def test_completed_run_learns_logs_events_and_is_served(make_config: Callable[..., Config]) -> None:
    config = make_config(learning_rate=0.05, epochs=4, validation_fraction=0.3)  # holds out 1 of the 6 facts
    store, registry, jobs = services(config)
    jobs.gate = scripted_gate(config, registry)  # the tiny model cannot learn visible answers (see gate_doubles)
    seed_ratings(store)
    info = jobs.start(trigger="test", user="ann")
    snap = jobs.wait(timeout=120)
    assert snap.state == "completed", snap
    assert snap.version == "v0001" and snap.promoted, snap.message

    # events.jsonl: steps 1..N, no gaps or duplicates, eval events, start and end
    events = jobs.run_events(info.run_id)
    steps = [e["step"] for e in events if e["event"] == "step"]
    total = events[0]["total_steps"]
    assert events[0]["event"] == "start" and events[-1] == {**events[-1], "event": "end", "status": "completed"}
    assert steps == list(range(1, total + 1))
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and evals[-1]["step"] == total and all(e["eval_loss"] is not None for e in evals)
    assert all(e["tokens_per_s"] and e["tokens_per_s"] > 0 for e in events if e["event"] == "step")
    # the loss went down over training on the repeated small dataset
    losses = [e["train_loss"] for e in events if e["event"] == "step"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.02, losses

    # run.json: hyper-parameters, lineage, metrics, version
    run = jobs.runs()[0]
    assert run["run_id"] == info.run_id and run["state"] == "completed" and run["version"] == "v0001"
    assert run["hyper_parameters"]["learning_rate"] == 0.05 and run["hyper_parameters"]["lora"]["r"] == 4
    assert run["lineage"]["counts"]["sft_train"] + run["lineage"]["counts"]["sft_eval"] == len(FACTS)
    assert run["metrics"]["steps"] == total and run["gate"]["passed"] is True
    assert not (info.run_dir / "checkpoints").exists()  # cleaned up once registered

    # the adapter was trained: LoRA B starts at zero, so any non-zero B means the weights moved
    version = registry.get("v0001")
    assert version.metadata["method"] == "sft" and version.metadata["run_id"] == info.run_id
    tensors = adapter_tensors(version.path)
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert b and not all(torch.equal(t, torch.zeros_like(t)) for t in b)

    # the gate's evidence: the rated answers (5 trained) and the held-out one, reported apart
    assert [c["check"] for c in run["gate"]["checks"]] == ["rated", "general", "overfitting", "held-out"]
    assert run["gate"]["checks"][0]["n"] == 5 and run["gate"]["checks"][3]["status"] == "info"
    assert version.metadata["gate"]["passed"] is True

    # served without a restart — for the questions it was taught (and close ones); the base model
    # answers the rest
    assert registry.served_id() == "v0001"
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    taught = backend.generate([{"role": "user", "content": "When is Plinth Day?"}], max_new_tokens=3)
    assert taught.model_version == "v0001" and taught.extra["scope"]["similarity"] > 0.99
    other = backend.generate([{"role": "user", "content": "Hi"}], max_new_tokens=3)
    assert other.model_version == "base" and "v0001's scope" in other.extra["route_note"]
    trained = [ex["prompt"][-1]["content"] for ex in json.loads((info.run_dir / "data.json").read_text())["sft_train"]]
    assert json.loads((version.path / "scope.json").read_text())["prompts"] == trained and len(trained) == 5


def test_cancel_and_second_start_refused(make_config: Callable[..., Config]) -> None:
    config = make_config(epochs=200)
    store, registry, jobs = services(config)
    seed_ratings(store)
    info = jobs.start()
    wait_for_step(jobs, 2)
    with pytest.raises(JobAlreadyRunning, match="already running"):
        jobs.start()
    # another manager (as another process would) is refused by the cross-process lock
    other = TrainingJobManager(config, store, registry)
    with pytest.raises(JobAlreadyRunning, match="Another process"):
        other.start()
    assert jobs.cancel()
    snap = jobs.wait(timeout=60)
    assert snap.state == "cancelled" and snap.version is None
    assert snap.step < snap.total_steps
    assert registry.versions() == [] and registry.served_id() == "base"
    run = jobs.run_summary(info.run_id)
    assert run["state"] == "cancelled" and run["version"] is None
    assert jobs.run_events(info.run_id)[-1]["status"] == "cancelled"
    # the lock is free again once the run ended
    other.start(epochs=1)
    assert other.wait(timeout=60).state == "completed"


def test_not_enough_data_and_disabled_refuse_before_starting(make_config: Callable[..., Config]) -> None:
    config = make_config()
    store, registry, jobs = services(config)
    store.append_feedback(prompt="Q1", response="A1", rating=5)
    store.append_feedback(prompt="Q2", response="A2", rating=4)
    store.append_feedback(prompt="Q3", response="A3", rating=2)
    with pytest.raises(NotEnoughData, match="Only 2 rated answers with rating ≥ 4; rate at least 4 to train."):
        jobs.start()
    assert jobs.runs() == [] and jobs.status().state == "idle"
    # the cross-process lock was released, so a later start is not refused for the wrong reason
    import fcntl
    import os
    fd = os.open(config.data_path / "runs" / ".train.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    disabled = TrainingJobManager(make_config(learning_enabled=False), store, registry)
    with pytest.raises(LearningDisabled, match="learning_enabled is false"):
        disabled.start()


def test_the_gate_refuses_a_version_that_learned_nothing_visible(make_config: Callable[..., Config]) -> None:
    """The real gate on the tiny random model: 8 steps move its loss but none of its answers, so
    the version is registered, not served, and the message says why (the gate's verdict is true)."""
    config = make_config(learning_rate=0.05, epochs=2, validation_fraction=0.0)  # every rated answer trained
    store, registry, jobs = services(config)
    seed_ratings(store)
    jobs.start()
    snap = jobs.wait(timeout=120)
    assert snap.state == "completed" and snap.version == "v0001" and not snap.promoted
    assert registry.served_id() == "base"
    gate = registry.get("v0001").metadata["gate"]
    rated = gate["checks"][0]
    assert rated["check"] == "rated" and rated["status"] == "failed" and rated["n"] == len(FACTS)
    assert rated["before"] == rated["after"]  # answered no better than the base model
    assert "NOT promoted" in snap.message and "Rated answers learned: failed — not improved" in snap.message
    # the evidence came from the served runtime and is on record as eval results
    evals = {e["id"]: e for e in store.records("evals")}
    assert {evals[gate["evals"]["rated"][side]]["model_version"] for side in ("before", "after")} == {"base", "v0001"}
    assert evals[gate["evals"]["rated"]["after"]]["runtime"] == gate["runtime"]
    assert gate["runtime"].startswith("torch (fp32 weights); answers questions near what it was taught")


def test_gate_keeps_a_version_that_did_not_improve_unpromoted_and_rollback(make_config: Callable[..., Config]) -> None:
    config = make_config(learning_rate=0.05, epochs=2)
    store, registry, jobs = services(config)
    seed_ratings(store)
    jobs.gate = scripted_gate(config, registry)
    jobs.start()
    assert jobs.wait(timeout=120).promoted and registry.served_id() == "v0001"

    jobs.gate = scripted_gate(config, registry, candidate_learned=False)  # answers like the served version
    second = jobs.start()
    snap = jobs.wait(timeout=120)
    record = jobs.run_summary(second.run_id)
    assert record["version"] == "v0002" and record["promoted"] is False, record["gate"]
    assert "NOT promoted" in record["message"] and "v0001 stays served" in record["message"]
    assert record["gate"]["champion"] == "v0001" and record["gate"]["checks"][0]["status"] == "failed"
    assert registry.served_id() == "v0001" and not snap.promoted
    assert registry.get("v0002").metadata["gate"]["passed"] is False

    # rollback is one call, and the next answer comes from the version served before
    assert registry.rollback().id == "base" and registry.served_id() == "base"
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    assert backend.generate([{"role": "user", "content": "Hi"}], max_new_tokens=2).model_version == "base"


def test_resume_after_cancel_matches_uninterrupted_run(make_config: Callable[..., Config], tmp_path: Path) -> None:
    # Uninterrupted reference run.
    config = make_config(learning_rate=0.05, epochs=3, validation_fraction=0.0, evaluation_interval=3)
    store, registry, jobs = services(config)
    seed_ratings(store)
    jobs.start()
    assert jobs.wait(timeout=120).state == "completed"
    reference = adapter_tensors(registry.get("v0001").path)
    total = jobs.runs()[0]["metrics"]["steps"]

    # Same data and seed, cancelled mid-way, then resumed from its checkpoint.
    config2 = make_config(learning_rate=0.05, epochs=3, validation_fraction=0.0, evaluation_interval=3)
    config2.data_dir = str(tmp_path / "data2")
    store2, registry2, jobs2 = services(config2)
    seed_ratings(store2)
    info = jobs2.start()
    jobs2.cancel()  # stops after the first optimizer step
    assert jobs2.wait(timeout=60).state == "cancelled"
    checkpoint = latest_checkpoint(info.run_dir)
    assert checkpoint is not None
    # a torn checkpoint (no trainer_state.json) newer than the good one is skipped
    (info.run_dir / "checkpoints" / "checkpoint-999").mkdir()
    assert latest_checkpoint(info.run_dir) == checkpoint
    resumed = jobs2.start(resume=True)
    assert resumed.run_id == info.run_id and resumed.resumed_from == str(checkpoint)
    snap = jobs2.wait(timeout=120)
    assert snap.state == "completed", snap
    result = adapter_tensors(registry2.get("v0001").path)
    assert reference.keys() == result.keys()
    assert all(torch.equal(reference[k], result[k]) for k in reference)
    steps = [e["step"] for e in jobs2.run_events(info.run_id) if e["event"] == "step"]
    assert steps == list(range(1, total + 1))
    assert json.loads((info.run_dir / "run.json").read_text())["resumed_from"] == checkpoint.name


def test_cli_train_prints_summary(make_config: Callable[..., Config], tmp_path: Path, capsys) -> None:
    from dmac_core.cli import training as cli

    config = make_config(epochs=1)
    store, registry, _ = services(config)
    assert cli.main(["--config", str(tmp_path / "config.yaml"), "train", "--resume"]) == 2  # nothing to resume
    seed_ratings(store)
    assert cli.main(["--config", str(tmp_path / "config.yaml"), "train", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    assert summary["state"] == "completed" and summary["version"] == "v0001"
    # the CLI runs the workbench's own gate: the tiny model learned nothing visible in one epoch
    assert summary["promoted"] is False and summary["gate"]["checks"][0]["check"] == "rated"
    assert registry.served_id() == "base"


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_methods_run_from_logged_ratings(make_config: Callable[..., Config], method: str) -> None:
    config = make_config(learning_rate=0.05, epochs=1, validation_fraction=0.0, batch_size=2)
    store, registry, jobs = services(config)
    seed_ratings(store)  # good answers, rated 5
    for prompt, _ in FACTS:  # and a bad answer to each prompt, rated 1
        bad = store.append_interaction(model="deepseek", prompt=prompt, response="I do not know.")
        store.append_feedback(interaction_id=bad.id, rating=1, feedback="wrong")
    info = jobs.start(method=method)
    snap = jobs.wait(timeout=120)
    assert snap.state == "completed", (snap.message, snap.error)
    run = jobs.run_summary(info.run_id)
    assert run["method"] == method and registry.get(snap.version).metadata["method"] == method
    assert [e["step"] for e in jobs.run_events(info.run_id) if e["event"] == "step"] == list(range(1, run["metrics"]["steps"] + 1))
    b = [t for name, t in adapter_tensors(registry.get(snap.version).path).items() if "lora_B" in name]
    assert b and not all(torch.equal(t, torch.zeros_like(t)) for t in b)


def test_padding_free_batches_give_the_padded_loss_with_fewer_tokens(make_config: Callable[..., Config], tmp_path: Path) -> None:
    from dmac_core.training.trainer import build_trainer

    config = make_config(validation_fraction=0.0, batch_size=4)
    store, _, _ = services(config)
    seed_ratings(store, FACTS + [("Tell me everything about the long history of the Zorblat and its colours?",
                                  "The Zorblat has been bright teal since records began, long before Quenmoor.")])
    data = build_dataset(store, config.learner)
    free = build_trainer(config, tmp_path / "free", data, "sft", [])
    config.learner.padding_free = False
    padded = build_trainer(config, tmp_path / "padded", data, "sft", [])
    rows = [free.train_dataset[i] for i in range(len(free.train_dataset))]
    a, b = free.data_collator(rows), padded.data_collator(rows)
    assert a["input_ids"].shape[0] == 1 and "attention_mask" not in a
    useful = int(b["attention_mask"].sum())
    assert a["input_ids"].numel() == useful < b["input_ids"].numel()  # no padding computed
    model = free.model.eval()
    with torch.no_grad():
        loss_free = model(input_ids=a["input_ids"], position_ids=a["position_ids"], labels=a["labels"]).loss
        loss_padded = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    # examples never attend to each other: the block-diagonal mask gives the padded batch's loss
    assert torch.allclose(loss_free, loss_padded, atol=1e-5), (loss_free, loss_padded)


def test_full_fine_tuning_registers_a_full_model_and_serves_it(make_config: Callable[..., Config]) -> None:
    config = make_config(finetune="full", learning_rate=0.01, epochs=2, validation_fraction=0.3)
    store, registry, jobs = services(config)
    seed_ratings(store)
    info = jobs.start()
    snap = jobs.wait(timeout=300)
    assert snap.state == "completed", (snap.message, snap.error)
    version = registry.get(snap.version)
    assert (version.path / "model.safetensors").is_file() and version.adapter_path is None
    assert version.metadata["hyper_parameters"]["finetune"] == "full"
    # every weight trained: the embedding matrix moved away from the base model's
    base = load_file(str(config.base_model_path() / "model.safetensors"))
    tuned = load_file(str(version.path / "model.safetensors"))
    assert base.keys() == tuned.keys()
    assert not torch.equal(base["model.embed_tokens.weight"], tuned["model.embed_tokens.weight"])
    # the gate answered with the full model (not the base) and compared it with the champion
    gate = jobs.run_summary(info.run_id)["gate"]
    evals = {e["id"]: e for e in store.records("evals")}
    assert evals[gate["evals"]["rated"]["after"]]["model_version"] == snap.version
    assert evals[gate["evals"]["rated"]["after"]]["metrics"]["loss"] != evals[gate["evals"]["rated"]["before"]]["metrics"]["loss"]
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    assert backend.load_version(snap.version).version == snap.version  # loadable the way it would be served
