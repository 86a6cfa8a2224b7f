"""Transfer learning: a run starts from a registered version or another base model,
and the registry records that lineage; each version is served on the base it was trained on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from dmac_core.backends.local import LocalBackend
from dmac_core.cli import training as training_cli
from dmac_core.config import Config
from dmac_core.learner.registry import version_base
from dmac_core.training.transfer import StartError, start_choices
from dmac_core.views.review import versions_table

from .conftest import build_tiny_model
from .gate_doubles import scripted_gate
from .test_training import FACTS, adapter_tensors, seed_ratings, services


def test_a_run_continues_a_registered_version_and_records_its_parent(make_config: Callable[..., Config]) -> None:
    config = make_config(learning_rate=0.05, epochs=3, validation_fraction=0.3)
    store, registry, jobs = services(config)
    jobs.gate = scripted_gate(config, registry)  # transfer mechanics: the tiny model learns no visible answer
    seed_ratings(store)
    jobs.start()
    assert jobs.wait(120).state == "completed" and registry.served_id() == "v0001"
    parent = adapter_tensors(registry.get("v0001").path)
    assert any(k.endswith("lora_B.weight") and parent[k].abs().max() > 0.01 for k in parent)

    # The second run asks for LoRA r=2 in its config, but continues v0001's r=4 adapter; with
    # a tiny learning rate it must end next to v0001 (a fresh adapter would start at B = 0).
    config.learner.lora.r = 2
    config.learner.learning_rate = 1e-6
    second = jobs.start(start_from="served")
    snap = jobs.wait(120)
    assert snap.state == "completed", (snap.message, snap.error)
    assert snap.version == "v0002"
    child = adapter_tensors(registry.get(snap.version).path)
    assert child.keys() == parent.keys() and all(child[k].shape == parent[k].shape for k in parent)
    assert all(torch.allclose(child[k], parent[k], atol=1e-3) for k in parent)
    assert any(not torch.equal(child[k], parent[k]) for k in parent), "the continued adapter trained further"

    meta = registry.get("v0002").metadata
    assert meta["parent_version"] == "v0001" and meta["start_from"] == "v0001"  # "served" pinned to its id
    assert meta["lora_from_parent"]["r"] == 4
    assert meta["base_model"] == str(config.base_model_path())
    run = jobs.run_summary(second.run_id)
    assert run["start"]["parent_version"] == "v0001" and run["hyper_parameters"]["start_from"] == "v0001"
    assert registry.get("v0001").metadata["parent_version"] is None
    table = versions_table(registry)
    assert dict(zip(table["version"], table["started from"])) == {"v0002": "v0001", "v0001": "base", "base": "-"}


def test_a_run_starts_from_another_base_model_and_is_served_on_it(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    # A differently shaped model: an adapter trained on it cannot be loaded on the configured base.
    other = build_tiny_model(tmp_path / "other-base", hidden_size=24, intermediate_size=48)
    config = make_config(learning_rate=0.05, epochs=2, validation_fraction=0.3)
    store, registry, jobs = services(config)
    real_gate, jobs.gate = jobs.gate, scripted_gate(config, registry)
    seed_ratings(store)
    info = jobs.start(start_from=str(other))
    snap = jobs.wait(120)
    assert snap.state == "completed", (snap.message, snap.error)
    version = registry.get(snap.version)
    assert version.metadata["base_model"] == str(other) and version.metadata["parent_version"] is None
    assert json.loads((version.path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(other)
    assert version_base(version, config.base_model_path()) == other
    assert jobs.run_summary(info.run_id)["start"]["base_model"] == str(other)
    # The version passed the gate and is served on its own base, though the config names the first one.
    assert registry.served_id() == version.id
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    assert backend.current().model.config.hidden_size == 24
    answer = backend.generate([{"role": "user", "content": "Hi"}], max_new_tokens=2)
    assert (answer.model_version, answer.provider_model) == (version.id, "other-base")  # records name its real base
    assert versions_table(registry).iloc[0]["started from"] == "model other-base"

    # The next run's real gate answers with that champion on its own base too (no shape error).
    jobs.gate = real_gate
    jobs.start()
    snap = jobs.wait(120)
    assert snap.state == "completed", (snap.message, snap.error)
    gate = registry.get(snap.version).metadata["gate"]
    champion_evidence = next(e for e in store.records("evals") if e["id"] == gate["evals"]["rated"]["before"])
    assert gate["champion"] == version.id and champion_evidence["model_version"] == version.id
    assert champion_evidence["provider_model"] == "other-base" and champion_evidence["metrics"]["loss"] > 0


def test_an_unknown_start_is_refused_before_anything_starts(make_config: Callable[..., Config], tmp_path: Path, capsys) -> None:
    config = make_config()
    store, registry, jobs = services(config)
    seed_ratings(store)
    with pytest.raises(StartError, match=r"'v0042'.*not a registered version \(base, served\)"):
        jobs.start(start_from="v0042")
    assert not jobs.is_running() and jobs.runs() == []
    assert [value for value, _ in start_choices(config, registry)] == ["base", "served"]

    from dmac_core.cli.common import run_subcommands

    code = run_subcommands("dmac", [training_cli.register], ["--config", str(config.source), "train", "--from", "nowhere"])
    assert code == 2
    assert "Cannot start training from 'nowhere'" in capsys.readouterr().err


def test_a_resumed_transfer_run_continues_the_parent_it_started_from(make_config: Callable[..., Config]) -> None:
    config = make_config(learning_rate=0.05, epochs=3, validation_fraction=0.0, evaluation_interval=3)
    store, registry, jobs = services(config)
    jobs.gate = scripted_gate(config, registry)
    seed_ratings(store)
    jobs.start()
    assert jobs.wait(120).state == "completed"
    parent_shape = {k: v.shape for k, v in adapter_tensors(registry.get("v0001").path).items()}

    info = jobs.start(start_from="served")  # v0001 is served: the run is pinned to it
    jobs.cancel()
    assert jobs.wait(60).state == "cancelled"
    registry.rollback()  # meanwhile the base is served again: "served" would now mean the base
    assert registry.served_id() == "base"
    config.learner.lora.r = 2  # and the config changed: neither may change what the resume trains

    resumed = jobs.start(resume=True)
    assert resumed.run_id == info.run_id
    snap = jobs.wait(120)
    assert snap.state == "completed", (snap.message, snap.error)
    version = registry.get(snap.version)
    assert version.metadata["parent_version"] == "v0001" and version.metadata["start_from"] == "v0001"
    assert {k: v.shape for k, v in adapter_tensors(version.path).items()} == parent_shape


def test_versions_promote_and_rollback_on_the_command_line(make_config: Callable[..., Config], capsys) -> None:
    from dmac_core.__main__ import main

    config = make_config()
    store, registry, jobs = services(config)
    jobs.gate = scripted_gate(config, registry)
    seed_ratings(store)
    jobs.start()
    assert jobs.wait(120).state == "completed" and registry.served_id() == "v0001"
    cli = ["--config", str(config.source)]
    capsys.readouterr()  # the run's own output

    # the gate's evidence, check by check
    assert main(cli + ["versions", "v0001"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("v0001 against base: passed: served") and "Rated answers learned" in out
    assert "Rated answers, asked again:" in out and "When is Plinth Day?" in out

    assert main(cli + ["rollback"]) == 0
    assert registry.served_id() == "base" and "base is now served" in capsys.readouterr().out
    assert main(cli + ["versions"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["version", "served"] and "started from" in header and "gate" in header
    assert [row.split()[0] for row in rows] == ["v0001", "base"]
    assert "passed vs base · ✅ rated 0.00→1.00" in rows[0]
    assert "*" not in rows[0] and rows[1].split()[:2] == ["base", "*"]  # the served mark
    assert main(cli + ["promote", "v0001", "--reason", "checked by hand"]) == 0
    assert registry.served_id() == "v0001"
    assert main(cli + ["promote", "v0042"]) == 2
    assert "No model version 'v0042'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_a_preference_run_from_a_lora_version_is_anchored_to_that_version(
    make_config: Callable[..., Config], tmp_path: Path, method: str
) -> None:
    from dmac_core.training.dataset import build_dataset
    from dmac_core.training.trainer import build_trainer
    from dmac_core.training.transfer import apply_start, resolve_start

    config = make_config(learning_rate=0.05, epochs=3, validation_fraction=0.0, batch_size=2)
    store, registry, jobs = services(config)
    jobs.gate = scripted_gate(config, registry)
    seed_ratings(store)
    jobs.start()
    assert jobs.wait(120).state == "completed" and registry.served_id() == "v0001"
    for prompt, _ in FACTS:  # a bad answer to each prompt: preference pairs
        bad = store.append_interaction(model="deepseek", prompt=prompt, response="I do not know.")
        store.append_feedback(interaction_id=bad.id, rating=1, feedback="wrong")
    data = build_dataset(store, config.learner)
    ids = torch.tensor([[1, 17, 42, 99, 7, 3]])

    # From the base: TRL's reference is the policy with its fresh adapter switched off, i.e. the base.
    from_base = build_trainer(config, tmp_path / "from-base", data, method, [])
    assert from_base.ref_model is None

    # From v0001: the reference is v0001 itself (the policy at its start), not the base under it.
    apply_start(config, resolve_start("v0001", config, registry))
    trainer = build_trainer(config, tmp_path / "from-v0001", data, method, [])
    assert trainer.ref_model is not None
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    policy = trainer.model.eval()
    with torch.no_grad():
        reference = trainer.ref_model(input_ids=ids).logits
        start = policy(input_ids=ids).logits
        with policy.disable_adapter():
            base = policy(input_ids=ids).logits
    assert torch.allclose(reference, start, atol=1e-4)
    assert (reference - base).abs().max() > 1e-3, "v0001 differs from the base, so the anchor must too"
